"""How far did full fine-tuning move the packaged MiniLM? Per-task and per-layer distance tables.

  python scripts/distances_report.py            # after scripts/glue_full_ft.py

For every finished run under `runs/full_ft/<task>` it runs `fft.analyze` (latest checkpoint vs
the run's step 0: pretrained encoder + seeded head) into `results/distances/<task>/`
(distances.csv, distances.json, layers.png), then writes across tasks:

  results/distances.md    total relative L1/L2 and angle per task; relative L1 per layer per task
  results/distances.csv   the same numbers, long format (task, group, measure, value)
  results/distances.png   relative L1 and angle per layer, one line per task
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np
from matplotlib.figure import Figure

from fft import analyze, distances

TASKS = ("cola", "stsb", "rte", "sst2")
MEASURES = ("rel_l1", "rel_l2", "angle", "frac_changed")


def analyze_runs(runs_dir: pathlib.Path, out_dir: pathlib.Path, tasks) -> dict[str, dict]:
    reports = {}
    for task in tasks:
        workdir = runs_dir / task
        if not (workdir / "final_metrics.json").exists():
            print(f"skip {task}: no finished run in {workdir}")
            continue
        pre, ft, step = analyze.run_params(workdir)
        title = f"MiniLM full fine-tuning on {task} (step {step}) vs pretrained"
        report = analyze.write_report(pre, ft, out_dir / "distances" / task, distances.Tol(0, 0), 3, title)
        print(f"== {task} (step {step})\n{report['table']}")
        reports[task] = json.loads((out_dir / "distances" / task / "distances.json").read_text())
    return reports


def _fmt(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def write_summary(reports: dict[str, dict], out_dir: pathlib.Path) -> None:
    tasks = list(reports)
    groups = [g for g in next(iter(reports.values()))["groups"] if g != distances.TOTAL]
    lines = [
        "Distance of the fully fine-tuned MiniLM from its pretrained weights (encoder + pooler;",
        ("the head is freshly initialised and shown separately). Regenerate: "
        "`python scripts/distances_report.py`."),
        "",
        ("| task | rel. L1 (all) | rel. L2 (all) | angle (all, deg) | rel. L1 encoder layers, min-max | "
        "most-moved layers (rel. L1) |"),
        "|---|---|---|---|---|---|",
    ]
    rows = []
    for task, rep in reports.items():
        total = rep["total"]
        layers = {g: v for g, v in rep["groups"].items() if g.startswith("layer_")}
        rl1 = [v["rel_l1"] for v in layers.values()]
        lines.append(
            f"| {task} | {_fmt(total['rel_l1'])} | {_fmt(total['rel_l2'])} | "
            f"{_fmt(math.degrees(total['angle']))} | {_fmt(min(rl1))} - {_fmt(max(rl1))} | "
            f"{', '.join(rep['critical_layers'])} |"
        )
        for group, vals in rep["groups"].items():
            for m in MEASURES:
                rows.append({"task": task, "group": group, "measure": m, "value": vals[m]})
    lines += ["", "Relative L1 distance per group (x 1e-3):", ""]
    lines.append("| group | " + " | ".join(tasks) + " |")
    lines.append("|---|" + "---|" * len(tasks))
    for g in [*groups, distances.TOTAL]:
        cells = [_fmt(1e3 * reports[t]["groups"][g]["rel_l1"]) for t in tasks]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines += ["", "Angle to the pretrained weights per group (degrees):", ""]
    lines.append("| group | " + " | ".join(tasks) + " |")
    lines.append("|---|" + "---|" * len(tasks))
    for g in [*groups, distances.TOTAL]:
        cells = [_fmt(math.degrees(reports[t]["groups"][g]["angle"])) for t in tasks]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    (out_dir / "distances.md").write_text("\n".join(lines) + "\n")
    with open(out_dir / "distances.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["task", "group", "measure", "value"])
        w.writeheader()
        w.writerows(rows)
    print("\n".join(lines))
    # The pooler (~10x the encoder layers) and the fresh head would flatten the layer profile.
    plot(reports, [g for g in groups if g not in ("head", "pooler")], out_dir / "distances.png")


def plot(reports: dict[str, dict], groups: list[str], path: pathlib.Path) -> None:
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    x = np.arange(len(groups))
    for task, rep in reports.items():
        rl1 = [rep["groups"][g]["rel_l1"] for g in groups]
        ang = [math.degrees(rep["groups"][g]["angle"]) for g in groups]
        axes[0].plot(x, rl1, "o-", label=task)
        axes[1].plot(x, ang, "o-", label=task)
    for ax, ylabel in zip(axes, ("relative L1 distance to pretrained", "angle to pretrained (degrees)")):
        ax.set_xticks(x, groups, rotation=45, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Full fine-tuning of all-MiniLM-L6-v2: how far each layer moved")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs_dir", default="runs/full_ft")
    parser.add_argument("--out_dir", default="results")
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    out_dir = REPO / args.out_dir
    reports = analyze_runs(REPO / args.runs_dir, out_dir, args.tasks.split(","))
    if not reports:
        raise SystemExit(f"no finished runs under {args.runs_dir}; run scripts/glue_full_ft.py first")
    write_summary(reports, out_dir)


if __name__ == "__main__":
    main()
