"""The grid tables the claims read (fft.sweep.tables' JSON), the cells planned in the grid files,
and the protocol's facts about the tables (compute used, the hyperparameter selection)."""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

from fft import stats

REPO = pathlib.Path(__file__).resolve().parents[2]

# The planned cells (kept in step with the grid files, so that a task that never ran still shows).
CORE_TASKS = ("cola", "stsb", "rte", "mrpc", "sst2")  # configs/grids/core.py
CORE_SETTINGS = ("full", "bitfit", "top3", "critical2", "critical2-grad", "supermask", "lora",
                 "adapters", "head", "learners")
FRACTION_TASKS = ("mrpc", "cola", "stsb")  # configs/grids/data_fraction.py
FRACTION_METHODS = ("full", "bitfit", "adapters", "lora", "learners")
FRACTIONS = (0.1, 0.3, 0.5, 1.0)
INTERMEDIATE = (0.3, 0.5)
STABLE_AT = 0.3
SEEDS = (0, 1, 2)  # every grid the claims read
BUDGET_TASKS = ("mrpc", "cola", "stsb")  # configs/grids/time_budget.py
BUDGET_METHODS = ("full", "bitfit", "adapters", "lora", "learners")
# (epochs of full fine-tuning on this machine, the label its settings end with: `<method>-<label>`).
BUDGETS = ((1 / 3, "b1_3ep"), (2 / 3, "b2_3ep"), (1.0, "b1ep"), (2.0, "b2ep"))
ABLATION_TASKS = ("cola", "stsb")  # configs/grids/learners_ablation.py
# setting: (priming fraction, how the nodes are chosen). The method as chosen (primed, the nodes
# that moved most) is the core grid's `learners` row.
ABLATION_SETTINGS = {"primed-magnitude": (0.2, "magnitude"), "primed-random": (0.2, "random"),
                     "unprimed-magnitude": (0.0, "magnitude"), "unprimed-random": (0.0, "random")}
LEARNERS_REFERENCE = ("primed-movement", 0.2, "movement")  # core's `learners`
PARAM_FACTOR = 7.0  # Vucetic et al.: 7x fewer trained parameters
SPEED_TASK, SPEED_RATIO = "cola", 0.8  # Vucetic et al.: 20% faster on CoLA
POOLING_METHODS = ("head", "bitfit", "supermask")  # configs/grids/pooling.py
NUM_LAYERS = 6  # all-MiniLM-L6-v2's encoder layers

DEFAULTS = {"margin": 2.0, "close_rel_l1": 0.05, "close_angle": 5.0, "layer_ratio": 2.0,
            "sd_factor": 2.0, "confidence": 0.95}


def budget_setting(method: str, label: str) -> str:
    """The time_budget grid's setting of `method` at a budget (configs/grids/time_budget.py)."""
    return f"{method}-{label}"


def epochs_text(epochs: float) -> str:
    return {1 / 3: "1/3", 2 / 3: "2/3"}.get(epochs, f"{epochs:g}")


def repo_relative(path: pathlib.Path) -> str:
    path = pathlib.Path(path).absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def resolve(path: str | pathlib.Path) -> pathlib.Path:
    """A path as the grids name it: relative to the repository root (where runs start)."""
    path = pathlib.Path(path)
    return path if path.is_absolute() else REPO / path


def load_table(path: pathlib.Path) -> dict[str, Any] | None:
    """A grid's results table (fft.sweep.tables), or None when it does not exist yet."""
    return json.loads(path.read_text()) if path.is_file() else None


def with_full_data_cells(fractions: Mapping[str, Any] | None, core: Mapping[str, Any] | None
                         ) -> dict[str, Any] | None:
    """The data_fraction table with its 100% cells: configs/grids/data_fraction.py does not rerun
    them, they are the core grid's runs of the same settings (its rows at fraction 1.0 for the
    data_fraction tasks and settings). None when neither table exists."""
    if fractions is None and core is None:
        return None
    rows = list((fractions or {}).get("rows", []))
    settings = {r["setting"] for r in rows} | set(FRACTION_METHODS)  # The grid's planned settings too.
    have = {(r["task"], r["setting"], r["fraction"]) for r in rows}
    for r in (core or {}).get("rows", []):
        key = (r["task"], r["setting"], r["fraction"])
        if r["task"] in FRACTION_TASKS and r["setting"] in settings and r["fraction"] == 1.0 and key not in have:
            rows.append({**r, "from_grid": "core"})
    return {**(fractions or {"grid": "data_fraction"}), "rows": rows}


def find_row(table: Mapping[str, Any] | None, task: str, setting: str,
             fraction: float | None = None) -> dict[str, Any] | None:
    """The table's row for (task, setting[, fraction]); None when absent. Several rows (several
    learning rates) are an error: the claims compare one chosen setting per method."""
    if table is None:
        return None
    rows = [r for r in table["rows"] if r["task"] == task and r["setting"] == setting
            and (fraction is None or math.isclose(float(r["fraction"]), fraction))]
    if len(rows) > 1:
        raise ValueError(f"grid {table.get('grid')!r}: {len(rows)} rows for {task}/{setting}"
                         f"{'' if fraction is None else f'/frac{fraction:g}'} (lrs "
                         f"{[r['lr'] for r in rows]}); expected one chosen setting")
    return rows[0] if rows else None


def seed_scores(row: Mapping[str, Any] | None) -> dict[int, float]:
    """{seed: main metric in %} of the row's finished runs (runs without the metric left out)."""
    if not row:
        return {}
    values = (((row.get("eval") or {}).get(row["split"]) or {}).get(row["metric"]) or {}).get("values") or []
    return {int(s): 100.0 * float(v) for s, v in zip(row.get("seeds") or [], values) if v is not None}


def seed_workdirs(row: Mapping[str, Any] | None) -> dict[int, str]:
    """{seed: workdir} of the row's finished runs."""
    if not row:
        return {}
    return {int(s): w for s, w in zip(row.get("seeds") or [], row.get("workdirs") or [])}


def summary(by_seed: Mapping[int, float]) -> dict[str, Any]:
    mean, sd = stats.mean_sd(by_seed.values())
    return {"n": len(by_seed), "mean": mean, "sd": sd, "seeds": sorted(by_seed),
            "values": [by_seed[s] for s in sorted(by_seed)]}


def compute_used(tables: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """Finished runs and their training seconds (the tables' mean per cell x its finished runs)."""
    per_grid = {}
    for name, table in tables.items():
        if table is None:
            continue
        own = [r for r in table["rows"] if "from_grid" not in r]  # Borrowed rows count in their grid.
        runs = sum(int(r["n"]) for r in own)
        planned = sum(int(r["planned"]) for r in own)
        seconds = sum(float(r["train_seconds"]) * int(r["n"]) for r in own
                      if r.get("train_seconds") is not None and r["n"])
        walls = [r.get("wall_seconds") for r in own if r["n"]]
        wall = None if any(w is None for w in walls) else sum(walls)  # Tables before wall_seconds: None.
        per_grid[name] = {"runs": runs, "planned": planned, "train_seconds": seconds, "wall_seconds": wall}
    walls = [g["wall_seconds"] for g in per_grid.values()]
    return {"grids": per_grid, "runs": sum(g["runs"] for g in per_grid.values()),
            "train_seconds": sum(g["train_seconds"] for g in per_grid.values()),
            "wall_seconds": None if any(w is None for w in walls) else sum(walls)}


def t_quantile(confidence: float, df: int) -> float:
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf((1 + confidence) / 2, df))


def selection_info(path: pathlib.Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    methods = json.loads(path.read_text()).get("methods", {})
    return {m: {k: c.get(k) for k in ("setting", "lr", "options", "score")} for m, c in methods.items()}
