"""The settings scripts/select_hparams.py chose on validation data (results/selection.json), as
grid entries for the grids that report on dev (configs/grids/core.py, data_fraction.py)."""

from __future__ import annotations

import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
SELECTION = REPO / "results" / "selection.json"
CORE_TABLE = SELECTION.parent / "grids" / "core.json"  # The core grid's table (configs/grids/core.py).


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


def full_epoch_seconds(task: str) -> float:
    """Training seconds of one epoch of full fine-tuning on `task`, from the core grid's full runs
    (3 epochs each): the fastest run's train_seconds / 3, read from its final_metrics.json (the
    run least slowed by anything else on the machine), else the table's mean / 3."""
    if not CORE_TABLE.is_file():
        raise FileNotFoundError(f"{CORE_TABLE} is missing: run `fft sweep core` (its full runs set the budgets)")
    rows = [r for r in json.loads(CORE_TABLE.read_text())["rows"]
            if r["task"] == task and r["setting"] == "full" and r.get("train_seconds")]
    if not rows:
        raise ValueError(f"{CORE_TABLE}: no finished full fine-tuning run of {task}; its budgets need one")
    measured = []
    for workdir in rows[0].get("workdirs", []):
        metrics = REPO / workdir / "final_metrics.json"
        if metrics.is_file():
            seconds = json.loads(metrics.read_text()).get("train_seconds")
            measured += [float(seconds)] if seconds else []
    return (min(measured) if measured else rows[0]["train_seconds"]) / 3.0
