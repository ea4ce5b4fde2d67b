"""The figures of the grids, and the time each method takes to reach full fine-tuning's score,
regenerated from whatever runs have finished.

  python scripts/figures.py [--grids results/grids] [--out results/figures]
                            [--curves core time_budget] [--targets core]
                            [--time-to-target results/time_to_target]

Writes, where its source table exists (otherwise it prints what it skipped):
  <out>/data_fraction.png    from <grids>/data_fraction.json: a subplot per task, dev main metric
                             (%) against the train fraction, a line per setting, mean ± sd over
                             seeds (error bars), 'n=k/planned' beside a point with seeds missing;
                             cells with no finished run are gaps, listed as 'missing' in the subplot
  <out>/curves_<grid>.png    for each --curves grid whose runs have curve.json: a subplot per task,
                             dev main metric (%) against training seconds, a line per setting: thin
                             lines = each seed's step function of its evaluation points, thick line
                             = their mean on the union of evaluation times, drawn only where every
                             seed has a point (latest first point to earliest last point)
  <out>/time_budget.png      from <grids>/time_budget.json: a subplot per task, final dev main
                             metric (%) against each run's config.json time_budget_s, a line per
                             method, mean ± sd over seeds
  <time-to-target>.{md,json} per --targets grid and task: seconds until the first evaluation at or
                             above full fine-tuning's final score (fft.report.figures_data.time_to_target)
  <out>/README.md            every figure, its source table and this command

Primed runs (fft.priming) show phase 1's evaluations first and phase 2's shifted by phase 1's
training seconds. Scores are on each table row's split (`dev` in the core and data-fraction grids).
A cell with no finished run is shown as missing, never filled in; workdirs under runs/ (not in
git) must be present for the curves, times to target and budgets.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure

from fft.report import figures_data as fd
from fft.report.figures_data import time_to_target  # noqa: F401  (re-exported for reports)
from fft.report.tables import with_full_data_cells

COMMAND = "python scripts/figures.py"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default=str(REPO / "results" / "grids"), help="the grid tables")
    parser.add_argument("--out", default=str(REPO / "results" / "figures"), help="figures folder")
    parser.add_argument("--curves", nargs="*", default=["core", "time_budget"],
                        help="grids whose curves to plot")
    parser.add_argument("--targets", nargs="*", default=["core"], help="grids for time to target")
    parser.add_argument("--time-to-target", default=str(REPO / "results" / "time_to_target"),
                        help="writes <this>.md and <this>.json")
    parser.add_argument("--root", default=str(REPO), help="where the tables' workdirs are relative to")
    return parser.parse_args(argv)


def _rel(path: pathlib.Path) -> str:
    path = pathlib.Path(path).absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _axes(tasks: Sequence[str], title: str) -> tuple[Figure, list]:
    fig = Figure(figsize=(4.6 * max(1, len(tasks)), 4.2))
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    fig.suptitle(title)
    return fig, list(axes)


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _labels(table: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(fd.line_label(r, table) for r in table["rows"]))


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _metric_name(table: Mapping[str, Any], task: str) -> str:
    row = next(r for r in table["rows"] if r["task"] == task)
    return f"{row['metric']} on {row['split']} (%)"


def plot_data_fraction(table: Mapping[str, Any], path: pathlib.Path) -> pathlib.Path:
    """Main metric against train fraction, a line per setting, mean ± sd; gaps for missing cells."""
    tasks = fd.tasks(table)
    fig, axes = _axes(tasks, "Dev score against train fraction (mean ± sd over seeds)")
    colors = _colors(_labels(table))
    for ax, task in zip(axes, tasks):
        missing = []
        for label, points in fd.fraction_series(table, task).items():
            done = [p for p in points if p["mean"] is not None]
            missing += [f"{label}@{p['fraction']:g}" for p in points if p["mean"] is None]
            if not done:
                continue
            ax.errorbar([p["fraction"] for p in done], [p["mean"] for p in done],
                        yerr=[p["sd"] or 0.0 for p in done], label=label, color=colors[label],
                        marker="o", capsize=3)
            for p in done:
                if p["n"] < p["planned"]:
                    ax.annotate(f"n={p['n']}/{p['planned']}", (p["fraction"], p["mean"]),
                                textcoords="offset points", xytext=(4, 4), fontsize=7)
        _note_missing(ax, missing)
        ax.set(title=task, xlabel="train fraction", ylabel=_metric_name(table, task))
        ax.set_xticks(sorted({r["fraction"] for r in table["rows"] if r["task"] == task}))
        _legend(ax)
    return _save(fig, path)


def _note_missing(ax, missing: Sequence[str], shown: int = 4) -> None:
    """Lists what has no finished run in the subplot's corner (the first `shown`, then a count)."""
    if missing:
        more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
        ax.text(0.01, 0.01, "missing: " + ", ".join(missing[:shown]) + more, transform=ax.transAxes,
                fontsize=6, va="bottom", color="0.35")


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _step_xy(curve: fd.Curve) -> tuple[list[float], list[float]]:
    return [t for t, _ in curve], [s for _, s in curve]


def plot_curves(table: Mapping[str, Any], path: pathlib.Path, root: pathlib.Path) -> pathlib.Path | None:
    """Score against training seconds per task and setting; None if no run has a curve."""
    tasks, any_curve = fd.tasks(table), False
    fig, axes = _axes(tasks, f"{table.get('grid', '')}: dev score against training seconds "
                      "(thin: seeds, thick: mean where all seeds have a point)")
    colors = _colors(_labels(table))
    for ax, task in zip(axes, tasks):
        missing = []
        for row in (r for r in table["rows"] if r["task"] == task):
            label, curves = fd.line_label(row, table), fd.row_curves(row, root)
            if not curves:
                missing.append(label)
                continue
            any_curve = True
            for curve in curves.values():
                ax.step(*_step_xy(curve), where="post", color=colors[label], lw=0.6, alpha=0.45)
            times, means = fd.mean_curve(list(curves.values()))
            n = f" (n={len(curves)}/{row['planned']})" if len(curves) < row["planned"] else ""
            ax.step(times, means, where="post", color=colors[label], lw=1.8, label=label + n)
        _note_missing(ax, missing)
        ax.set(title=task, xlabel="training seconds", ylabel=_metric_name(table, task))
        _legend(ax)
    return _save(fig, path) if any_curve else None


def plot_time_budget(table: Mapping[str, Any], path: pathlib.Path, root: pathlib.Path) -> pathlib.Path | None:
    """Final score against the runs' time budgets per task, a line per method; None if no run has one."""
    tasks, drawn = fd.tasks(table), False
    fig, axes = _axes(tasks, "Dev score against time budget (mean ± sd over seeds)")
    for ax, task in zip(axes, tasks):
        series, skipped = fd.budget_series(table, task, root)
        colors = _colors(list(series))
        for label, points in series.items():
            drawn = True
            ax.errorbar([p["budget"] for p in points], [p["mean"] for p in points],
                        yerr=[p["sd"] or 0.0 for p in points], label=label, color=colors[label],
                        marker="o", capsize=3)
        _note_missing(ax, [f"{skipped} finished runs without config/budget"] if skipped else [])
        ax.set(title=task, xlabel="time budget (training seconds)", ylabel=_metric_name(table, task))
        _legend(ax)
    return _save(fig, path) if drawn else None


# ---------------------------------------------------------------------------------------------
# Time to target.


def _pm(mean: float | None, sd: float | None, digits: int = 1) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def _seed_text(result: Mapping[str, Any]) -> str:
    parts = [f"{seed}: " + ("not reached" if s is None else f"{s:.0f}")
             for seed, s in result["seconds"].items()]
    parts += [f"{seed}: no curve" for seed in result["no_curve"]]
    return "; ".join(parts) or "no finished run"


def time_to_target_markdown(docs: Sequence[Mapping[str, Any]], command: str) -> str:
    lines = ["# Time to reach full fine-tuning's score", "",
             ("Per task, the target is full fine-tuning's final dev main metric (mean over its seeds). "
              "Per method and seed: the training seconds of the first evaluation point at or above it "
              "(curve.json; a primed run's phase 2 shifted by its phase 1's seconds). Times are at the "
              "resolution of the evaluation interval (so they are upper bounds: the score may have been "
              "reached earlier, between evaluations) and were measured on this machine. Seconds: mean ± "
              "sd over the seeds that reached the target; ratio: that mean / full's own. Final: the final "
              f"dev score (%), mean ± sd over the finished seeds. Regenerate: `{command}`.")]
    for doc in docs:
        lines += ["", f"## Grid `{doc['grid']}` (`{doc['table']}`)"]
        for t in doc["tasks"]:
            if t["target"] is None:
                lines += ["", f"### {t['task']}: missing (no finished full fine-tuning run)"]
                continue
            lines += ["", f"### {t['task']}: target {t['target']:.2f} ({t['metric']} on {t['split']}, %)", "",
                      "| method | reached | seconds to target | ratio to full | final | per seed (s) |",
                      "|---|---|---|---|---|---|"]
            for r in t["settings"]:
                ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
                lines.append(f"| {r['label']} | {r['reached']}/{r['n']} | {_pm(r['mean_s'], r['sd_s'])} | "
                             f"{ratio} | {_pm(r['final_mean'], r['final_sd'], 2)} | {_seed_text(r)} |")
    return "\n".join(lines) + "\n"


def write_time_to_target(tables: Mapping[str, tuple[pathlib.Path, Mapping[str, Any]]], out: pathlib.Path,
                         root: pathlib.Path) -> list[pathlib.Path]:
    docs = [{"grid": grid, "table": _rel(path),
             "tasks": [fd.task_time_to_target(table, task, root) for task in fd.tasks(table)]}
            for grid, (path, table) in tables.items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    md.write_text(time_to_target_markdown(docs, COMMAND))
    note = ("seconds: first evaluation at or above full's final dev score; upper bounds at the "
            "evaluation interval's resolution; measured on this machine")
    js.write_text(json.dumps({"note": note, "grids": docs}, indent=1) + "\n")
    return [md, js]


# ---------------------------------------------------------------------------------------------
# Command.


def write_readme(out: pathlib.Path, entries: Sequence[tuple[str, str, str]]) -> pathlib.Path:
    """<out>/README.md: one line per output (file, source table, caption or why it is missing)."""
    lines = ["# Figures", "", f"Regenerate all: `{COMMAND}` (scripts/figures.py documents each figure).",
             "", "| file | source | caption |", "|---|---|---|"]
    lines += [f"| {name} | `{source}` | {caption} |" for name, source, caption in entries]
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out / "README.md"


CAPTIONS = {
    "data_fraction": "Dev main metric (%) against the train fraction, per task; a line per method, "
                     "mean ± sd over seeds; n=k/planned where seeds are missing; missing cells listed.",
    "curves": "Dev main metric (%) against training seconds, per task; thin: each seed's evaluations "
              "(step function), thick: their mean where every seed has a point; primed runs include phase 1.",
    "time_budget": "Final dev main metric (%) against the run's time budget (s), per task; a line per "
                   "method, mean ± sd over seeds.",
    "time_to_target": "Seconds to reach full fine-tuning's final dev score, per task and method "
                      "(upper bounds at the evaluation interval; this machine).",
}


def _load(grids: pathlib.Path, name: str) -> tuple[pathlib.Path, dict[str, Any] | None]:
    path = grids / f"{name}.json"
    return path, fd.load_table(path)


def _figure(entries: list, name: str, source: pathlib.Path, caption: str,
            written: pathlib.Path | None, why: str) -> None:
    if written is None:
        print(f"skipped {name}: {why}")
        entries.append((name, _rel(source), f"not generated: {why}"))
    else:
        print(f"wrote {_rel(written)}")
        entries.append((name, _rel(source), caption))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    grids, out, root = pathlib.Path(args.grids), pathlib.Path(args.out), pathlib.Path(args.root)
    entries: list[tuple[str, str, str]] = []
    path, table = _load(grids, "data_fraction")
    table = with_full_data_cells(table, _load(grids, "core")[1])  # The 100% cells are core's runs.
    written = plot_data_fraction(table, out / "data_fraction.png") if table else None
    _figure(entries, "data_fraction.png", path, CAPTIONS["data_fraction"], written, f"no {_rel(path)}")
    for grid in args.curves:
        path, table = _load(grids, grid)
        written = plot_curves(table, out / f"curves_{grid}.png", root) if table else None
        why = "no runs with curve.json" if table else f"no {_rel(path)}"
        _figure(entries, f"curves_{grid}.png", path, CAPTIONS["curves"], written, why)
    path, table = _load(grids, "time_budget")
    written = plot_time_budget(table, out / "time_budget.png", root) if table else None
    why = "no runs with a readable time_budget_s" if table else f"no {_rel(path)}"
    _figure(entries, "time_budget.png", path, CAPTIONS["time_budget"], written, why)
    targets = {g: (p, t) for g in args.targets for p, t in [_load(grids, g)] if t is not None}
    ttt = pathlib.Path(args.time_to_target)
    sources = ", ".join(_rel(grids / f"{g}.json") for g in args.targets)
    if targets:
        for p in write_time_to_target(targets, ttt, root):
            print(f"wrote {_rel(p)}")
        entries.append((_rel(ttt) + ".{md,json}", sources, CAPTIONS["time_to_target"]))
    else:
        print(f"skipped {_rel(ttt)}.{{md,json}}: no table among {sources}")
        entries.append((_rel(ttt) + ".{md,json}", sources, "not generated: no table"))
    print(f"wrote {_rel(write_readme(out, entries))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
