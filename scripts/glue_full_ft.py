"""Full fine-tuning of the packaged MiniLM on GLUE tasks, and the results table.

  python scripts/glue_full_ft.py                # run what is missing, then write the table
  python scripts/glue_full_ft.py --table_only   # rebuild results/full_finetune.{md,csv,json}

Each run is `python -m fft.main --config=configs/glue.py:task=T ... --workdir=runs/full_ft/T`,
so an interrupted run resumes from its checkpoint when this is started again. The command, wall
time, training examples/s and dev metrics of every run go into the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import shlex
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
# task -> extra overrides. SST-2 (67k examples) gets one epoch to fit a 2-core CPU session.
RUNS = {
    "cola": [],
    "stsb": [],
    "rte": [],
    "sst2": ["--config.num_epochs=1"],
}


def command(task: str, runs_dir: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "fft.main", f"--config=configs/glue.py:task={task}",
            f"--workdir={runs_dir / task}", "--config.checkpoint.every_steps=200", *RUNS[task]]


def run(task: str, runs_dir: pathlib.Path) -> None:
    cmd = command(task, runs_dir)
    log = runs_dir / f"{task}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", shlex.join(cmd[1:]), f"(log: {log})", flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True)
    print(f"  done in {time.time() - t0:.0f}s", flush=True)


def collect(runs_dir: pathlib.Path) -> list[dict]:
    rows = []
    for task in RUNS:
        path = runs_dir / task / "final_metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        config = json.loads((runs_dir / task / "config.json").read_text())
        dev = m["eval"]["dev"]
        metrics = {k: round(100 * v, 2) for k, v in dev.items() if k not in ("loss", "combined")}
        rows.append({
            "task": task,
            "dev": " / ".join(f"{k} {v}" for k, v in metrics.items()),
            "epochs": round(m["epochs"], 2),
            "batches": "packed" if config["data"].get("packing") else "length buckets",
            "train_examples": m["train_examples"],
            "train_seconds": round(m["train_seconds"], 1),
            "wall_seconds": round(m["wall_seconds"], 1),
            "train_examples_per_sec": round(m["train_examples_per_sec"], 1),
            "command": "python -m fft.main " + shlex.join(command(task, pathlib.Path("runs/full_ft"))[3:]),
            **{f"dev_{k}": v for k, v in metrics.items()},
        })
    return rows


def write_table(rows: list[dict], out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "full_finetune.json").write_text(json.dumps(rows, indent=1))
    keys = ["task", "dev", "epochs", "batches", "train_examples", "train_seconds", "wall_seconds", "train_examples_per_sec", "command"]
    with open(out_dir / "full_finetune.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [
        ("Dev scores of full fine-tuning (the official GLUE metric, %). Times are wall-clock seconds "
        "of training (evaluation excluded; wall includes loading, compiling and evaluating) on the "
        "2-core machine, one run after another; speed side by side with PyTorch: "
        "results/bench_train.json."),
        "",
        "| task | dev metric (%) | epochs | training batches | train examples | train time (s) | wall (s) | train ex/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['task']} | {r['dev']} | {r['epochs']} | {r['batches']} | {r['train_examples']} | "
                     f"{r['train_seconds']} | {r['wall_seconds']} | {r['train_examples_per_sec']} |")
    lines.append("")
    lines.append("Commands (run from the repo root):")
    lines.append("")
    lines.extend(f"- `{r['command']}`" for r in rows)
    (out_dir / "full_finetune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(RUNS))
    parser.add_argument("--runs_dir", default="runs/full_ft")
    parser.add_argument("--out_dir", default="results")
    parser.add_argument("--table_only", action="store_true")
    args = parser.parse_args()
    runs_dir = REPO / args.runs_dir
    if not args.table_only:
        for task in args.tasks.split(","):
            if not (runs_dir / task / "final_metrics.json").exists():
                run(task, runs_dir)
    write_table(collect(runs_dir), REPO / args.out_dir)


if __name__ == "__main__":
    main()
