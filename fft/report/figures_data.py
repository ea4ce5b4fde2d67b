"""The numbers behind scripts/figures.py, read from the grid tables (fft.sweep.tables' JSON) and
the runs they name: data-fraction series, evaluation curves against training seconds, time to
reach full fine-tuning's score, and scores against time budgets. No plotting, no JAX.

Scores are the task's main metric on the table row's split, in %. A run's curve is its
curve.json points (fft.budget); a primed run (fft.priming) gets phase 1's points
(`<workdir>/priming/curve.json`) first and phase 2's shifted by phase 1's training seconds. A
cell or run with nothing finished (or whose workdir is gone) is missing: nothing is filled in.

  from fft.report import figures_data as fd
  table = fd.load_table("results/grids/core.json")
  target = fd.full_target(table, "cola")              # (score %, full's row) or None
  fd.time_to_target(table, "cola", "learners", target[0])
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from fft import stats

REPO = pathlib.Path(__file__).resolve().parents[2]
CURVE = "curve.json"
PHASE_DIR = "priming"  # fft.priming.PHASE_DIR (not imported: it pulls in JAX).
TOLERANCE = 1e-9  # In %: a point "at" the target despite float rounding of the mean.

Curve = list[tuple[float, float]]  # (training seconds, score %), by time.


def load_table(path: str | pathlib.Path) -> dict[str, Any] | None:
    """A grid table's JSON document, or None if the file does not exist."""
    path = pathlib.Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def resolve(workdir: str, root: pathlib.Path = REPO) -> pathlib.Path:
    """A table's workdir (relative to the repository root, where runs start) as a path."""
    path = pathlib.Path(workdir)
    return path if path.is_absolute() else pathlib.Path(root) / path


def _rows(table: Mapping[str, Any], task: str) -> list[dict[str, Any]]:
    return [r for r in table["rows"] if r["task"] == task]


def tasks(table: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["task"] for r in table["rows"]))


def line_label(row: Mapping[str, Any], table: Mapping[str, Any]) -> str:
    """The row's setting, with ' lr=<lr>' when the table has several lrs for it on its task."""
    lrs = {r["lr"] for r in _rows(table, row["task"]) if r["setting"] == row["setting"]}
    return row["setting"] if len(lrs) < 2 else f"{row['setting']} lr={row['lr']:g}"


def seed_scores(row: Mapping[str, Any]) -> list[float | None]:
    """The row's final scores (%), one per finished seed (order of `seeds` and `workdirs`)."""
    values = row.get("eval", {}).get(row["split"], {}).get(row["metric"], {}).get("values", [])
    return [None if v is None else 100 * v for v in values]


def fraction_series(table: Mapping[str, Any], task: str) -> dict[str, list[dict[str, Any]]]:
    """{line: [{fraction, mean, sd, n, planned}] by fraction}; mean None = missing cell."""
    series: dict[str, list[dict[str, Any]]] = {}
    for r in _rows(table, task):
        point = {k: r[k] for k in ("fraction", "mean", "sd", "n", "planned")}
        series.setdefault(line_label(r, table), []).append(point)
    return {k: sorted(v, key=lambda p: p["fraction"]) for k, v in series.items()}


def _points(path: pathlib.Path, split: str, metric: str, offset: float = 0.0) -> Curve:
    doc = _read_json(path) or {}
    curve = []
    for p in doc.get("points", []):
        value = (p.get("eval") or {}).get(split, {}).get(metric)
        if value is not None and p.get("train_seconds") is not None:
            curve.append((offset + p["train_seconds"], 100 * value))
    return curve


def _phase_one_seconds(workdir: pathlib.Path, phase_one: Curve) -> float:
    """Phase 1's final training seconds: final_metrics' `priming`, its own final_metrics, or
    its last curve point."""
    final = _read_json(workdir / "final_metrics.json") or {}
    seconds = (final.get("priming") or {}).get("train_seconds")
    if seconds is None:
        seconds = (_read_json(workdir / PHASE_DIR / "final_metrics.json") or {}).get("train_seconds")
    if seconds is None and phase_one:
        seconds = phase_one[-1][0]
    return float(seconds or 0.0)


def run_curve(workdir: pathlib.Path, split: str, metric: str) -> Curve | None:
    """The run's (seconds, score %) points, phase 1 first for a primed run; None without curve.json."""
    workdir = pathlib.Path(workdir)
    if not (workdir / CURVE).is_file():
        return None
    final = _read_json(workdir / "final_metrics.json") or {}
    first_path = workdir / PHASE_DIR / CURVE
    if not first_path.is_file() and not final.get("priming"):
        return sorted(_points(workdir / CURVE, split, metric))
    phase_one = sorted(_points(first_path, split, metric))
    offset = _phase_one_seconds(workdir, phase_one)
    return phase_one + sorted(_points(workdir / CURVE, split, metric, offset))


def row_curves(row: Mapping[str, Any], root: pathlib.Path = REPO) -> dict[int, Curve]:
    """{seed: curve} for the row's finished seeds that have a curve.json."""
    curves = {}
    for seed, workdir in zip(row["seeds"], row["workdirs"]):
        curve = run_curve(resolve(workdir, root), row["split"], row["metric"])
        if curve:
            curves[seed] = curve
    return curves


def step_value(curve: Curve, t: float) -> float | None:
    """The step function of the curve at t: the last point at or before t (None before the first)."""
    value = None
    for seconds, score in curve:
        if seconds > t:
            break
        value = score
    return value


def mean_curve(curves: Sequence[Curve]) -> tuple[list[float], list[float]]:
    """(times, mean score) of the seeds' step functions on the union of their evaluation times,
    only where every seed has one: from the latest first point to the earliest last point."""
    curves = [c for c in curves if c]
    if not curves:
        return [], []
    start, end = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    times = sorted({t for c in curves for t, _ in c if start <= t <= end})
    return times, [stats.mean_sd([step_value(c, t) for c in curves])[0] for t in times]


def first_reach(curve: Curve, target: float) -> float | None:
    """Seconds of the first evaluation point at or above `target` (%), None if none is."""
    return next((t for t, score in curve if score >= target - TOLERANCE), None)


def full_target(table: Mapping[str, Any], task: str) -> tuple[float, dict[str, Any]] | None:
    """(full fine-tuning's final score on the task, mean over its seeds, in %, unrounded; its row),
    from the first row with method `full` that has finished runs; None if there is none."""
    for r in _rows(table, task):
        if r["method"] == "full" and r["n"] > 0:
            scores = [s for s in seed_scores(r) if s is not None]
            if scores:
                return stats.mean_sd(scores)[0], r
    return None


def _setting_row(table: Mapping[str, Any], task: str, setting: str, lr: float | None) -> dict[str, Any] | None:
    rows = [r for r in _rows(table, task) if r["setting"] == setting and lr in (None, r["lr"])]
    if len(rows) > 1:
        raise ValueError(f"{task}/{setting}: {len(rows)} table rows (several lrs or fractions); "
                         "time to target needs one (pass lr=)")
    return rows[0] if rows else None


def time_to_target(grid_table: Mapping[str, Any], task: str, setting: str, target: float,
                   root: pathlib.Path = REPO, lr: float | None = None) -> dict[str, Any]:
    """Per seed of the (task, setting) row: seconds of the first evaluation at or above `target`
    (main metric, %), None if not reached; seeds without a curve are listed apart. Seconds are
    upper bounds at the resolution of the evaluation interval. Returns {task, setting, target,
    seconds: {seed: s | None}, no_curve: [seeds], reached, n, mean_s, sd_s, final_mean, final_sd}
    (n: seeds with a curve; mean_s, sd_s over the seeds that reached it). `lr` picks the row
    when the table has several for the setting."""
    row = _setting_row(grid_table, task, setting, lr)
    out: dict[str, Any] = {"task": task, "setting": setting, "lr": lr, "target": target, "seconds": {},
                           "no_curve": [], "reached": 0, "n": 0, "mean_s": None, "sd_s": None,
                           "final_mean": None, "final_sd": None}
    if row is None:
        return out
    curves = row_curves(row, root)
    out["no_curve"] = [s for s in row["seeds"] if s not in curves]
    out["seconds"] = {seed: first_reach(c, target) for seed, c in curves.items()}
    reached = [s for s in out["seconds"].values() if s is not None]
    out.update(reached=len(reached), n=len(curves))
    out["mean_s"], out["sd_s"] = stats.mean_sd(reached)
    out["final_mean"], out["final_sd"] = stats.mean_sd(s for s in seed_scores(row) if s is not None)
    return out


def task_time_to_target(table: Mapping[str, Any], task: str, root: pathlib.Path = REPO) -> dict[str, Any]:
    """Every setting's time_to_target on the task against full's final score, with `ratio` =
    its mean seconds / full's; {task, target: None} when full has no finished run."""
    found = full_target(table, task)
    if found is None:
        return {"task": task, "target": None, "settings": []}
    target, full_row = found
    results = []
    for row in _rows(table, task):
        result = time_to_target(table, task, row["setting"], target, root, lr=row["lr"])
        results.append({**result, "label": line_label(row, table)})
    full_s = next(r["mean_s"] for r in results
                  if r["setting"] == full_row["setting"] and r["lr"] == full_row["lr"])
    for r in results:
        r["ratio"] = None if r["mean_s"] is None or not full_s else r["mean_s"] / full_s
    return {"task": task, "target": target, "metric": full_row["metric"], "split": full_row["split"],
            "full_setting": full_row["setting"], "full_seconds": full_s, "settings": results}


def _method_key(row: Mapping[str, Any]) -> tuple[str, str]:
    return row["method"], json.dumps(row.get("options", {}), sort_keys=True)


def budget_series(table: Mapping[str, Any], task: str, root: pathlib.Path = REPO
                  ) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """({line: [{budget, mean, sd, n}] by budget}, runs skipped): each finished run's final score
    at its config.json `time_budget_s`; a line per method and options (its setting's name when
only one setting has them, e.g. settings that differ only in their budget share one line).
    Runs without a readable config or a budget are skipped (counted)."""
    rows = _rows(table, task)
    by_line: dict[str, dict[float, list[float]]] = {}
    skipped = 0
    for r in rows:
        settings = {x["setting"] for x in rows if _method_key(x) == _method_key(r)}
        options = "".join(f" {k}={v}" for k, v in sorted(r.get("options", {}).items()))
        label = r["setting"] if len(settings) == 1 else r["method"] + options
        for workdir, score in zip(r["workdirs"], seed_scores(r)):
            budget = (_read_json(resolve(workdir, root) / "config.json") or {}).get("time_budget_s")
            if budget is None or score is None:
                skipped += 1
                continue
            by_line.setdefault(label, {}).setdefault(float(budget), []).append(score)
    series = {}
    for label, cells in by_line.items():
        series[label] = [{"budget": b, **dict(zip(("mean", "sd"), stats.mean_sd(v))), "n": len(v)}
                         for b, v in sorted(cells.items())]
    return series, skipped
