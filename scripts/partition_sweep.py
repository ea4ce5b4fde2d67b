"""Which parameters need to train? Partition presets x GLUE tasks, and a data-fraction sweep.

  python scripts/partition_sweep.py                 # runs what is missing, writes the tables
  python scripts/partition_sweep.py --table_only    # rebuild results from finished runs
  python scripts/partition_sweep.py --part=methods  # or --part=fraction

Methods (packaged MiniLM, batch 32, max length 128, 3 epochs; SST-2: 1 epoch on a fixed 20% subset):
  full        every weight (the run of scripts/glue_full_ft.py, lr 5e-5)
  bitfit      biases + head, lr 1e-3 (BitFit's range; 5e-5 barely moves biases)
  head        classifier only, lr 1e-3, frozen-prefix feature cache
  top1..top3  top k encoder layers (+ pooler) + head, lr 1e-4, feature cache
  critical2   the 2 layers that moved most in this task's full run (results/distances/<task>),
              lr 1e-4, feature cache when the lowest of them is above layer 0
Data fraction (Doering et al.): full and bitfit at 10/30/50/100% of CoLA and STS-B training data.

Writes results/partitions.{md,csv,json}, results/data_fraction.{md,csv,json,png}.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import re
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts import experiments

REPO = experiments.REPO
TASKS = ("cola", "stsb", "rte", "sst2")
# SST-2 (67k examples): every method, full fine-tuning included, on the same deterministic 20%
# subset for one epoch, so that the whole table fits a 2-core machine; its `full` row is its own run.
EPOCHS = {"sst2": ["--config.num_epochs=1", "--config.data.train_fraction=0.2"]}
CACHE = ["--config.feature_cache=true"]
# Table name -> (fft method, its command-line options).
METHODS = {
    "bitfit": ("bitfit", ["--config.optim.lr=1e-3"]),
    "head": ("head", ["--config.optim.lr=1e-3", *CACHE]),
    "top1": ("layers", ["--config.layers.select=top1", "--config.optim.lr=1e-4", *CACHE]),
    "top2": ("layers", ["--config.layers.select=top2", "--config.optim.lr=1e-4", *CACHE]),
    "top3": ("layers", ["--config.layers.select=top3", "--config.optim.lr=1e-4", *CACHE]),
    "critical2": ("critical", ["--config.critical.k=2", "--config.optim.lr=1e-4"]),
}
# The feature cache's check: the same run without it (dropout then also runs in the frozen part).
# On the SST-2 subset: the cheapest task where the top layer alone learns the task.
NO_CACHE = {"sst2": ("top1", "top1_nocache")}
FRACTION_TASKS = ("cola", "stsb")
FRACTIONS = (0.1, 0.3, 0.5)


def critical_overrides(task: str) -> list[str]:
    """critical:2 reads the task's distances.json; the cache is used if the prefix is frozen."""
    dist = REPO / "results" / "distances" / task / "distances.json"
    if not (REPO / "runs" / "full_ft" / task / "final_metrics.json").exists():
        return [f"<needs runs/full_ft/{task}: python scripts/glue_full_ft.py>"]
    if not dist.exists():
        subprocess.run(
            [sys.executable, "-m", "fft.analyze", f"--run=runs/full_ft/{task}",
             f"--out_dir=results/distances/{task}"], cwd=REPO, check=True,
        )
    from fft import partition

    layers = partition.ranked_layers(dist)[:2]
    extra = [f"--config.critical.distances_file=results/distances/{task}/distances.json"]
    return extra + (CACHE if min(layers) > 0 else [])


def method_runs(tasks) -> list[tuple[str, str, pathlib.Path, list[str], str]]:
    """(task, table name, workdir, options, fft method) of each run."""
    runs = []
    for task in tasks:
        if task in EPOCHS:  # Subset tasks get their own full fine-tuning baseline.
            runs.append((task, "full", REPO / "runs" / "partitions" / task / "full", EPOCHS[task], "full"))
        for name, (method, overrides) in METHODS.items():
            extra = critical_overrides(task) if name == "critical2" else []
            runs.append((task, name, REPO / "runs" / "partitions" / task / name,
                         [*overrides, *extra, *EPOCHS.get(task, [])], method))
        if task in NO_CACHE:
            base, name = NO_CACHE[task]
            method, options = METHODS[base]
            overrides = [o for o in options if o not in CACHE] + EPOCHS.get(task, [])
            runs.append((task, name, REPO / "runs" / "partitions" / task / name, overrides, method))
    return runs


def fraction_runs() -> list[tuple[str, str, float, pathlib.Path, list[str]]]:
    runs = []
    for task in FRACTION_TASKS:
        for fraction in FRACTIONS:
            for method in ("full", "bitfit"):
                overrides = [f"--config.data.train_fraction={fraction}"]
                if method == "bitfit":
                    overrides += METHODS["bitfit"][1]
                workdir = REPO / "runs" / "fraction" / task / f"{method}_{int(100 * fraction)}"
                runs.append((task, method, fraction, workdir, overrides))
    return runs


def row(task: str, method: str, workdir: pathlib.Path, overrides: list[str], fft_method: str = "full") -> dict | None:
    path = workdir / "final_metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    if "trainable_params" not in m:  # Full runs from before partitions: every leaf trains.
        m.update(full_run_counts(workdir))
    name, value = experiments.primary_metric(task, m["eval"]["dev"])
    cache_s = m.get("feature_cache_seconds")
    if m.get("feature_cache") and cache_s is None:  # Runs from before it was recorded: the log.
        log = (workdir.parent / f"{workdir.name}.log").read_text()
        cache_s = float(re.findall(r"Feature cache of layers .* built in ([0-9.]+)s", log)[-1])
    return {
        "task": task, "method": method, "metric": name, "dev": round(value, 2),
        "trainable_params": m["trainable_params"], "total_params": m["total_params"],
        "stored_bytes": m["stored_bytes"],
        # Training time includes building the feature cache, when there is one.
        "train_seconds": round(m["train_seconds"] + (cache_s or 0.0), 1),
        "cache_seconds": None if cache_s is None else round(cache_s, 1),
        "train_examples_per_sec": round(m["train_examples_per_sec"], 1),
        "epochs": round(m["epochs"], 2), "train_examples": m["train_examples"],
        "feature_cache": m.get("feature_cache", False),
        "partition": m.get("method_description", m.get("partition", "full")),
        "command": experiments.display_command(task, workdir, overrides, fft_method),
    }


def full_run_counts(workdir: pathlib.Path) -> dict:
    """Parameter count and task-delta bytes of a full run (exports its delta if missing)."""
    from fft import checkpoint, delta, partition

    out = workdir / "task_delta.safetensors"
    state, _ = checkpoint.load_state_dict(workdir)
    if not out.exists():
        delta.export_delta(state["params"], out, {"partition": "full"})
    n = partition.count_params(state["params"])
    return {"trainable_params": n, "total_params": n, "stored_bytes": out.stat().st_size}


def full_row(task: str) -> dict | None:
    if task in EPOCHS:
        return row(task, "full", REPO / "runs" / "partitions" / task / "full", EPOCHS[task])
    return row(task, "full", REPO / "runs" / "full_ft" / task, [])


def write(rows: list[dict], stem: str, header: str, columns: list[tuple[str, str]]) -> None:
    out = REPO / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task"])
        w.writeheader()
        w.writerows(rows)
    lines = [header, "", "| " + " | ".join(t for _, t in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[k]) for k, _ in columns) + " |" for r in rows]
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 4 + len(rows)]))


def methods_table(tasks) -> None:
    rows = []
    for task in tasks:
        rows.append(full_row(task))
        rows += [row(t, n, w, o, m) for t, n, w, o, m in method_runs([task]) if n != "full"]
    rows = [r for r in rows if r]
    for r in rows:
        full = next((f for f in rows if f["task"] == r["task"] and f["method"] == "full"), None)
        r["dev_vs_full"] = round(r["dev"] - full["dev"], 2) if full else None
        r["time_vs_full"] = round(r["train_seconds"] / full["train_seconds"], 2) if full else None
    write(
        rows, "partitions",
        "Which parameters train: dev score (%) of each partition of the packaged MiniLM "
        "(regenerate: `python scripts/partition_sweep.py`). stored bytes = the task delta "
        "(trained leaves, safetensors); train s = training + building the feature cache, without "
        "evaluation; all runs shared the 2 CPU cores with other runs, so times are indicative "
        "(clean ratios: results/bench_partitions.json).",
        [("task", "task"), ("method", "method"), ("metric", "metric"), ("dev", "dev"),
         ("dev_vs_full", "dev - full"), ("trainable_params", "trainable params"),
         ("stored_bytes", "stored bytes"), ("train_seconds", "train s"),
         ("time_vs_full", "time / full"), ("feature_cache", "cache")],
    )


def fraction_table() -> None:
    rows = []
    for task in FRACTION_TASKS:
        for t, method, fraction, workdir, overrides in fraction_runs():
            if t == task and (r := row(task, method, workdir, overrides, method)):
                rows.append({"fraction": fraction, **r})
        for method, workdir, overrides in (
            ("full", REPO / "runs" / "full_ft" / task, []),
            ("bitfit", REPO / "runs" / "partitions" / task / "bitfit", METHODS["bitfit"][1]),
        ):
            if r := row(task, method, workdir, overrides, method):
                rows.append({"fraction": 1.0, **r})
    rows.sort(key=lambda r: (r["task"], r["method"], r["fraction"]))
    write(
        rows, "data_fraction",
        "Full fine-tuning vs BitFit on a fraction of the training data (deterministic subsets from "
        "the seed; same epochs). Regenerate: `python scripts/partition_sweep.py --part=fraction`.",
        [("task", "task"), ("method", "method"), ("fraction", "fraction"), ("metric", "metric"),
         ("dev", "dev"), ("train_examples", "train examples"), ("train_seconds", "train s")],
    )
    plot_fraction(rows)


def plot_fraction(rows: list[dict]) -> None:
    from matplotlib.figure import Figure

    tasks = sorted({r["task"] for r in rows})
    if not tasks:
        return
    fig = Figure(figsize=(5 * len(tasks), 4))
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        for method, style in (("full", "o-"), ("bitfit", "s--")):
            pts = sorted((r["fraction"], r["dev"]) for r in rows if r["task"] == task and r["method"] == method)
            if pts:
                ax.plot([100 * x for x, _ in pts], [y for _, y in pts], style, label=method)
        metric = next(r["metric"] for r in rows if r["task"] == task)
        ax.set_title(f"{task}: dev {metric} vs training data")
        ax.set_xlabel("% of training set")
        ax.set_ylabel(f"dev {metric} (%)")
        ax.set_xticks([10, 30, 50, 100])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(REPO / "results" / "data_fraction.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--part", choices=("all", "methods", "fraction"), default="all")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--table_only", action="store_true")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if not args.table_only:
        methods = args.methods.split(",")
        # SST-2 last: its critical:2 run reads the distances of the (long) SST-2 full run.
        first, last = [t for t in tasks if t != "sst2"], [t for t in tasks if t == "sst2"]
        if args.part in ("all", "methods"):
            for task, name, workdir, overrides, method in method_runs(first):
                if name in methods or name.endswith("_nocache"):
                    experiments.run(task, workdir, overrides, method)
        if args.part in ("all", "fraction"):
            for task, method, _, workdir, overrides in fraction_runs():
                if task in tasks:
                    experiments.run(task, workdir, overrides, method)
        if args.part in ("all", "methods"):
            for task, name, workdir, overrides, method in method_runs(last):
                if name in methods or name == "full" or name.endswith("_nocache"):
                    experiments.run(task, workdir, overrides, method)
    methods_table(tasks)
    fraction_table()


if __name__ == "__main__":
    main()
