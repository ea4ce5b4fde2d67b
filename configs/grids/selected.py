"""The settings scripts/select_hparams.py chose on validation data (results/selection.json), as
grid entries for the grids that report on dev (configs/grids/core.py, data_fraction.py)."""

from __future__ import annotations

import json
import pathlib

SELECTION = pathlib.Path(__file__).resolve().parents[2] / "results" / "selection.json"


def chosen(method: str) -> tuple[float, dict]:
    """(learning rate, options) chosen for `method`; an error naming the file when there is none."""
    if not SELECTION.is_file():
        raise FileNotFoundError(
            f"{SELECTION} is missing: run `fft sweep lr_selection` then `python scripts/select_hparams.py`"
        )
    methods = json.loads(SELECTION.read_text())["methods"]
    if method not in methods or methods[method]["setting"] is None:
        raise ValueError(f"{SELECTION}: no setting chosen for {method!r} (its selection runs did not finish)")
    return methods[method]["lr"], dict(methods[method]["options"] or {})


def entry(method: str, label: str | None = None, selected_as: str | None = None, **extra) -> dict:
    """A grid entry running `method` with the setting chosen for `selected_as` (default: itself;
    from another method only its learning rate is taken)."""
    lr, options = chosen(selected_as or method)
    options = {k: [v] for k, v in options.items()} if selected_as in (None, method) else {}
    options.update({k: [v] for k, v in extra.pop("options", {}).items()})
    return {"method": method, "label": label or method, "options": options, "lrs": [lr], **extra}
