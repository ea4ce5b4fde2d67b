"""Supermask fine-tuning of the packaged MiniLM (no weight updates) against full fine-tuning.

  python scripts/supermask_sweep.py                   # runs what is missing, writes the table
  python scripts/supermask_sweep.py --table_only
  python scripts/supermask_sweep.py --runs=rte:0.05:1e-3,stsb:0.05:1e-3:1e-3:pooler+classifier

A run is task:initial_sparsity:score_lr[:head_lr[:head[:init[:epochs]]]]. Masks cover the attention and
feed-forward kernels of all 6 encoder layers (threshold mode; scores init 'uniform@0.05' unless
given, 'magnitude@1' = ranked by |W| with init_scale 1); the head ('classifier' unless given;
'pooler+classifier' also trains the pooler) trains with AdamW at head_lr (1e-4 unless given);
same epochs as full fine-tuning unless given (3; SST-2: 1 epoch on a 20% subset).

Writes results/supermask.{md,csv,json} (dev score vs full fine-tuning, final sparsity, stored
bytes: dense copy / packed mask / compressed mask) and results/supermask_sparsity.png (final
sparsity per layer and tensor type).
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys
from typing import NamedTuple

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts import experiments

REPO = experiments.REPO
# SST-2: one epoch on the same deterministic 20% subset as scripts/partition_sweep.py, whose SST-2
# `full` run (runs/partitions/sst2/full) is then the baseline; other tasks use runs/full_ft/<task>.
EPOCHS = {"sst2": ["--config.num_epochs=1", "--config.data.train_fraction=0.2"]}
FULL_RUNS = {"sst2": REPO / "runs" / "partitions" / "sst2" / "full"}
HEAD_LR = 1e-4
CLASSIFIER = "classifier"  # The model's own head; "pooler+classifier" also trains the pooler.
POOLER = "pooler+classifier"
UNIFORM = "uniform@0.05"  # Score init @ init_scale; "magnitude@1" ranks the scores by |W|.
MAGNITUDE = "magnitude@1"


class Run(NamedTuple):
    """One supermask run; the fields after score_lr default to the first runs' settings."""

    task: str
    sparsity: float
    score_lr: float
    head_lr: float = HEAD_LR
    head: str = CLASSIFIER
    init: str = UNIFORM
    epochs: float = 0.0  # 0: the config's default (3; SST-2: 1 epoch on 20%, see EPOCHS).


def _init_parts(init: str) -> tuple[str, float]:
    """'magnitude@1' -> ('magnitude', 1.0)."""
    kind, scale = init.split("@")
    return kind, float(scale)

# (task, initial sparsity, score lr, head lr, head[, init]), in the order they ran. The first four
# give the classifier lr 1e-4 (full fine-tuning's scale); CoLA, STS-B and RTE stayed at chance,
# as they did with a classifier at 1e-3 and with the pooler trained with the classifier (DistilBERT's
# layout, where `pre_classifier` belongs to the head; 148k more float32 entries per task). The
# uniform init starts every score within 0.05 of the threshold and the masks churn; scores ranked
# by |W| at init_scale 1 (MAGNITUDE) made STS-B learn and lifted SST-2 (with the pooler trained:
# without it STS-B reached only 28); CoLA and RTE stayed at or near chance with it, at score lr
# 1e-3 and 1e-2, except CoLA at 1% initial sparsity (MCC 14.5).
DEFAULT_RUNS = (
    Run("cola", 0.05, 1e-3, HEAD_LR, CLASSIFIER), Run("sst2", 0.05, 1e-3, HEAD_LR, CLASSIFIER),
    Run("stsb", 0.05, 1e-3, HEAD_LR, CLASSIFIER), Run("rte", 0.05, 1e-3, HEAD_LR, CLASSIFIER),
    Run("cola", 0.05, 5e-3, 1e-3, CLASSIFIER), Run("stsb", 0.05, 1e-3, 1e-3, CLASSIFIER),
    Run("cola", 0.05, 1e-3, 1e-3, POOLER), Run("stsb", 0.05, 1e-3, 1e-3, POOLER),
    Run("rte", 0.05, 1e-3, 1e-3, POOLER), Run("stsb", 0.05, 1e-3, 1e-3, POOLER, MAGNITUDE),
    Run("rte", 0.05, 1e-3, 1e-3, POOLER, MAGNITUDE), Run("cola", 0.05, 1e-3, 1e-3, POOLER, MAGNITUDE),
    Run("sst2", 0.05, 1e-3, 1e-3, POOLER, MAGNITUDE),
    # Initial sparsity 10% and 1% with the magnitude init, and the magnitude init without the pooler.
    Run("stsb", 0.10, 1e-3, 1e-3, POOLER, MAGNITUDE), Run("stsb", 0.01, 1e-3, 1e-3, POOLER, MAGNITUDE),
    Run("rte", 0.10, 1e-3, 1e-3, POOLER, MAGNITUDE), Run("rte", 0.01, 1e-3, 1e-3, POOLER, MAGNITUDE),
    Run("sst2", 0.10, 1e-3, 1e-3, POOLER, MAGNITUDE), Run("sst2", 0.01, 1e-3, 1e-3, POOLER, MAGNITUDE),
    Run("cola", 0.10, 1e-3, 1e-3, POOLER, MAGNITUDE), Run("cola", 0.01, 1e-3, 1e-3, POOLER, MAGNITUDE),
    Run("stsb", 0.05, 1e-3, 1e-3, CLASSIFIER, MAGNITUDE),
    # Score lr 1e-2 for the two tasks that stayed at chance.
    Run("rte", 0.05, 1e-2, 1e-3, POOLER, MAGNITUDE), Run("cola", 0.05, 1e-2, 1e-3, POOLER, MAGNITUDE),
    # More epochs for RTE, the smallest task (78 steps per epoch).
    Run("rte", 0.10, 1e-3, 1e-3, POOLER, MAGNITUDE, 8.0),
)


def overrides(task: str, sparsity: float, score_lr: float, head_lr: float, head: str,
              init: str = UNIFORM, epochs: float = 0.0) -> list[str]:
    extra = [] if head == CLASSIFIER else [f"--config.supermask.head_keys={head.replace('+', ';')}"]
    if init != UNIFORM:
        kind, scale = _init_parts(init)
        extra += [f"--config.supermask.init={kind}", f"--config.supermask.init_scale={scale:g}"]
    return [f"--config.supermask.initial_sparsity={sparsity}",
            f"--config.supermask.score_lr={score_lr}", f"--config.optim.lr={head_lr:g}", *extra,
            *EPOCHS.get(task, []), *([f"--config.num_epochs={epochs:g}"] if epochs else [])]


def workdir(task: str, sparsity: float, score_lr: float, head_lr: float, head: str,
            init: str = UNIFORM, epochs: float = 0.0) -> pathlib.Path:
    name = f"s{sparsity:g}_lr{score_lr:g}"
    if head_lr != HEAD_LR:
        name += f"_head{head_lr:g}"
    if head != CLASSIFIER:
        name += "_" + head.replace("+classifier", "").replace("+", "_")
    if init != UNIFORM:
        kind, scale = _init_parts(init)
        name += f"_{kind}{scale:g}"
    if epochs:
        name += f"_ep{epochs:g}"
    return REPO / "runs" / "supermask" / task / name


def parse_runs(text: str):
    runs = []
    for item in text.split(","):
        task, sparsity, lr, *rest = item.split(":")
        if len(rest) > 4:
            raise ValueError(f"run {item!r}: expected task:sparsity:score_lr[:head_lr[:head[:init[:epochs]]]]")
        head_lr = float(rest[0]) if rest else HEAD_LR
        head = rest[1] if len(rest) > 1 else CLASSIFIER
        init = rest[2] if len(rest) > 2 else UNIFORM
        epochs = float(rest[3]) if len(rest) > 3 else 0.0
        runs.append(Run(task, float(sparsity), float(lr), head_lr, head, init, epochs))
    return runs


def table(runs) -> list[dict]:
    rows = []
    for run in runs:
        task, sparsity, lr, head_lr, head, init, _ = run
        path = workdir(*run) / "final_metrics.json"
        full_path = FULL_RUNS.get(task, REPO / "runs" / "full_ft" / task) / "final_metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        name, value = experiments.primary_metric(task, m["eval"]["dev"])
        full = None
        if full_path.exists():
            full = experiments.primary_metric(task, json.loads(full_path.read_text())["eval"]["dev"])[1]
        store = m.get("export") or m["mask_store"]  # Runs from before methods were parts: mask_store.
        rows.append({
            "task": task, "initial_sparsity": sparsity, "score_lr": lr, "head_lr": head_lr,
            "head": head, "init": init, "metric": name,
            "dev": round(value, 2), "full_ft_dev": None if full is None else round(full, 2),
            "final_sparsity": round(store["sparsity"]["total"], 4),
            "dense_model_bytes": 4 * m["total_params"],
            "dense_masked_bytes": store["dense_bytes"], "packed_bytes": store["packed_bytes"],
            "compressed_bytes": store["compressed_bytes"],
            "bits_per_entry_compressed": round(store["bits_per_entry_compressed"], 3),
            "train_seconds": round(m["train_seconds"], 1), "epochs": round(m["epochs"], 2),
            "epochs_given": run.epochs,  # 0: the task's default epochs.
            "sparsity_per_tensor": store["sparsity"],
            "command": experiments.display_command(task, workdir(*run), overrides(*run), "supermask"),
        })
    return rows


def write(rows: list[dict]) -> None:
    out = REPO / "results"
    (out / "supermask.json").write_text(json.dumps(rows, indent=1))
    flat = [{k: v for k, v in r.items() if k != "sparsity_per_tensor"} for r in rows]
    with open(out / "supermask.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat[0]) if flat else ["task"])
        w.writeheader()
        w.writerows(flat)
    cols = [("task", "task"), ("initial_sparsity", "initial sparsity"), ("score_lr", "score lr"),
            ("head_lr", "head lr"), ("head", "trained head"), ("init", "score init"),
            ("metric", "metric"), ("dev", "dev"), ("full_ft_dev", "full FT dev"),
            ("final_sparsity", "final sparsity"), ("dense_model_bytes", "dense model bytes"),
            ("packed_bytes", "packed mask+head bytes"), ("compressed_bytes", "compressed bytes"),
            ("bits_per_entry_compressed", "bits/entry (compressed)"), ("epochs", "epochs"),
            ("train_seconds", "train s")]
    lines = [
        ("Supermask fine-tuning of the packaged MiniLM: only binary masks over the frozen attention "
        "and FFN kernels (and the head) train. Regenerate: `python scripts/supermask_sweep.py`."),
        "", *sparsity_summary(flat), "", "All runs:", "",
        "| " + " | ".join(t for _, t in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[k]) for k, _ in cols) + " |" for r in flat]
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in flat]
    (out / "supermask.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: lines.index("Commands:")]))
    plotted = [r for r in rows if r["init"] == MAGNITUDE] or rows
    if plotted:
        plot(plotted, out / "supermask_sparsity.png")


def sparsity_summary(rows: list[dict]) -> list[str]:
    """Markdown lines: dev (final sparsity) per task and initial sparsity, magnitude init, score lr 1e-3,
    default epochs."""
    chosen = [r for r in rows if r["init"] == MAGNITUDE and r["head"] == POOLER and r["score_lr"] == 1e-3
              and not r["epochs_given"]]
    if not chosen:
        return []
    sparsities = sorted({r["initial_sparsity"] for r in chosen})
    tasks = list(dict.fromkeys(r["task"] for r in chosen))
    lines = [("Dev score by initial sparsity (score init magnitude@1, score lr 1e-3, pooler + classifier "
              "trained, default epochs; in brackets the final sparsity):"), "",
             "| task | metric | " + " | ".join(f"initial {100 * s:g}%" for s in sparsities) + " | full FT |",
             "|---|---|" + "---|" * (len(sparsities) + 1)]
    for task in tasks:
        by = {r["initial_sparsity"]: r for r in chosen if r["task"] == task}
        cells = [f"{by[s]['dev']} ({100 * by[s]['final_sparsity']:.1f}%)" if s in by else "-" for s in sparsities]
        first = next(iter(by.values()))
        lines.append(f"| {task} | {first['metric']} | " + " | ".join(cells) + f" | {first['full_ft_dev']} |")
    return lines


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import re

    from matplotlib.figure import Figure

    kinds = ("attention/query", "attention/key", "attention/value", "attention/output/dense",
             "intermediate/dense", "output/dense")
    fig = Figure(figsize=(6 * min(len(rows), 3), 4 * ((len(rows) + 2) // 3)))
    axes = fig.subplots((len(rows) + 2) // 3, min(len(rows), 3), squeeze=False).ravel()
    for ax, r in zip(axes, rows):
        per = r["sparsity_per_tensor"]
        layers = sorted({int(m.group(1)) for p in per if (m := re.match(r"encoder/layer_(\d+)/", p))})
        for kind in kinds:
            ys = [100 * per.get(f"encoder/layer_{i}/{kind}/kernel", float("nan")) for i in layers]
            ax.plot(layers, ys, "o-", label=kind, markersize=3)
        ax.axhline(100 * r["initial_sparsity"], color="gray", linestyle=":", label="initial")
        head = "" if r["head"] == CLASSIFIER else " +pooler"
        ax.set_title(f"{r['task']} init {r['initial_sparsity']:g} lr {r['score_lr']:g}"
                     f"/{r['head_lr']:g}{head}: "
                     f"{r['metric']} {r['dev']}")
        ax.set_xlabel("encoder layer")
        ax.set_ylabel("masked entries (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="", help="task:sparsity:score_lr,...; default: all")
    parser.add_argument("--table_only", action="store_true")
    args = parser.parse_args()
    runs = parse_runs(args.runs) if args.runs else list(DEFAULT_RUNS)
    if not args.table_only:
        for run in runs:
            experiments.run(run.task, workdir(*run), overrides(*run), "supermask")
    write(table(list(DEFAULT_RUNS) + [r for r in runs if r not in DEFAULT_RUNS]))


if __name__ == "__main__":
    main()
