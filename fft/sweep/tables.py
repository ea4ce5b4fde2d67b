"""A grid's results tables: one row per cell (task, setting, lr, fraction), seeds pooled, as
CSV, JSON and Markdown."""

from __future__ import annotations

import csv
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from fft import stats
from fft.sweep.cost import run_wall_seconds
from fft.sweep.grid import FINAL, REPO, Grid, repo_path
from fft.sweep.points import Point, path_value

CSV_COLUMNS = ("task", "setting", "method", "options", "lr", "fraction", "split", "metric", "mean",
               "sd", "n", "planned", "trainable_params", "stored_bytes", "train_seconds", "workdirs")


def main_metric(task: str, evals: Mapping[str, Mapping[str, float]], split: str) -> tuple[str, float]:
    """(name, value) of the task's main metric in `evals[split]`."""
    from fft.data import glue

    name = glue.get_task(task).primary_metric
    return name, evals[split][name]


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sd of the values that are not None (see fft.stats.mean_sd)."""
    return stats.mean_sd(v for v in values if v is not None)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _finished_runs(group: Sequence[Point], grid_dir: pathlib.Path) -> list[tuple[Point, dict[str, Any]]]:
    """(point, its final_metrics.json) for each finished, readable run of the cell."""
    finished = []
    for point in group:
        path = grid_dir / point.rel / FINAL
        if path.is_file():
            try:
                finished.append((point, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue
    return finished


def _eval_summary(finals: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{split: {metric: {"mean", "sd", "values"}}} over the runs' final metrics (fractions)."""
    evals: dict[str, dict[str, Any]] = {}
    for split in dict.fromkeys(s for f in finals for s in f.get("eval", {})):
        names = dict.fromkeys(k for f in finals for k in f["eval"].get(split, {}))
        for name in names:
            values = [f["eval"].get(split, {}).get(name) for f in finals]
            m, s = _mean_sd(values)
            evals.setdefault(split, {})[name] = {"mean": m, "sd": s, "values": values}
    return evals


def _row(group: Sequence[Point], grid_dir: pathlib.Path) -> dict[str, Any]:
    from fft.data import glue

    first = group[0]
    finished = _finished_runs(group, grid_dir)
    finals = [f for _, f in finished]
    metric = glue.get_task(first.task).primary_metric
    scores = [100 * f["eval"][first.split][metric] for f in finals
              if f.get("eval", {}).get(first.split, {}).get(metric) is not None]
    mean, sd = _mean_sd(scores)
    return {
        "task": first.task, "setting": first.setting, "method": first.method, "options": first.options,
        "lr": first.lr, "fraction": first.fraction, "split": first.split, "metric": metric,
        "mean": _rounded(mean, 2), "sd": _rounded(sd, 2),
        "n": len(finished), "planned": len(group),
        "seeds": [p.seed for p, _ in finished],
        "trainable_params": finals[0].get("trainable_params") if finals else None,
        "stored_bytes": finals[0].get("stored_bytes") if finals else None,
        # Both phases of a primed run (fft.priming), compiling excluded where the run says so.
        "train_seconds": _rounded(_mean_sd([f.get("train_seconds_total", f.get("train_seconds")) for f in finals])[0], 1),
        "eval": _eval_summary(finals),
        "workdirs": [repo_path(grid_dir / p.rel) for p, _ in finished],
        # Wall time of the finished runs together (loading, compiling, evaluating, priming included).
        "wall_seconds": _rounded(sum(run_wall_seconds(grid_dir / p.rel) or 0.0 for p, _ in finished), 1),
        # Per run, as `workdirs`: CPU seconds per wall second of its training loop (None: not recorded).
        "cpu_shares": [_rounded(f.get("cpu_share"), 2) for f in finals],
    }


def table_rows(points: Sequence[Point], grid_dir: pathlib.Path) -> list[dict[str, Any]]:
    """One row per cell (task, setting, lr, fraction) in grid order, seeds pooled."""
    cells: dict[tuple, list[Point]] = {}
    for point in points:
        cells.setdefault(point.cell, []).append(point)
    order = {t: i for i, t in enumerate(dict.fromkeys(p.task for p in points))}
    return [_row(group, grid_dir) for _, group in sorted(cells.items(), key=lambda kv: order[kv[0][0]])]


# ---------------------------------------------------------------------------------------------
# Markdown.


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def score_text(row: Mapping[str, Any]) -> str:
    """'57.04 ± 1.23' (n >= 2), '57.04' (n = 1), 'missing' (no finished run)."""
    if row["mean"] is None:
        return "missing"
    return f"{row['mean']:.2f}" + ("" if row["sd"] is None else f" ± {row['sd']:.2f}")


def _runs_text(row: Mapping[str, Any], grid_dir: pathlib.Path) -> str:
    """The cell's finished workdirs, short: 'rte/full/lr1e-3/frac1/seed0, seed1'."""
    names = [pathlib.Path(w) for w in row["workdirs"]]
    if not names:
        return "—"
    base = (REPO / names[0]).parent if not names[0].is_absolute() else names[0].parent
    try:
        head = str(base.relative_to(grid_dir.absolute()))
    except ValueError:
        head = str(base)
    return f"{head}/" + ", ".join(n.name for n in names)


def markdown(grid: Grid, rows: Sequence[Mapping[str, Any]], grid_dir: pathlib.Path) -> str:
    lines = [
        f"# Sweep `{grid.name}`",
        "",
        (f"Grid `{repo_path(grid.file)}`, runs in `{repo_path(grid_dir)}`. Score: the task's main "
         "metric in %, mean ± sd over the finished seeds; n = finished / planned seeds; 'missing' = "
         "no finished run. Train s: mean training time per run (without evaluation; runs since "
         "the time-budget change also without compiling; a primed run counts both phases). Rebuild: "
         f"`python -m fft.sweep {repo_path(grid.file)} --only-table`."),
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        metric, split = mine[0]["metric"], mine[0]["split"]
        lines += [
            "", f"## {task}: {metric} on {split} (%)", "",
            "| method | lr | fraction | score | n | trainable params | stored bytes | train s | runs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in mine:
            lines.append(
                f"| {r['setting']} | {path_value(r['lr'])} | {path_value(r['fraction'])} | {score_text(r)} | "
                f"{r['n']}/{r['planned']} | {_number(r['trainable_params'])} | {_number(r['stored_bytes'])} | "
                f"{_seconds(r['train_seconds'])} | {_runs_text(r, grid_dir)} |"
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Files.


def _write_csv(path: pathlib.Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "options": json.dumps(r["options"], sort_keys=True),
                        "workdirs": ";".join(r["workdirs"])})


def write_tables(grid: Grid, points: Sequence[Point], grid_dir: pathlib.Path,
                 results_dir: pathlib.Path | None) -> list[pathlib.Path]:
    """Writes table.{csv,json,md} in the grid's folder and <results_dir>/<name>.{csv,json,md}."""
    rows = table_rows(points, grid_dir)
    doc = {"grid": grid.name, "grid_file": repo_path(grid.file), "runs": repo_path(grid_dir),
           "score": "main metric of the task in % (mean, sd over finished seeds); eval: fractions",
           "rows": rows}
    texts = {"json": json.dumps(doc, indent=1) + "\n", "md": markdown(grid, rows, grid_dir)}
    written = []
    targets = [(grid_dir, "table")] + ([(results_dir, grid.name)] if results_dir is not None else [])
    for folder, stem in targets:
        folder.mkdir(parents=True, exist_ok=True)
        for ext, text in texts.items():
            (folder / f"{stem}.{ext}").write_text(text)
        _write_csv(folder / f"{stem}.csv", rows)
        written += [folder / f"{stem}.{ext}" for ext in ("csv", "json", "md")]
    return written
