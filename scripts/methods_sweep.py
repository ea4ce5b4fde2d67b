"""LoRA and adapters next to the earlier methods on five GLUE tasks (one seed, literature lr).

  python scripts/methods_sweep.py                  # runs what is missing (resumable), writes the table
  python scripts/methods_sweep.py --table_only     # rebuild results/methods.* from finished runs
  python scripts/methods_sweep.py --methods=lora_qv --tasks=rte,mrpc

Setting (all runs): the packaged MiniLM, batch 32, max length 128, 3 epochs, seed 0, packed
batches; SST-2: 1 epoch on the fixed 20% subset, as in results/partitions.md. One seed at a
learning rate from the literature; no tuning (the seeds-and-selection protocol is another driver):
  lora_qv    LoRA r=8, alpha=8 on query and value, lr 5e-4 (Hu et al. 2021, RoBERTa-base GLUE:
             r_q = r_v = 8, alpha 8, lr 4e-4..5e-4)
  lora_all   the same on every encoder Dense layer and the pooler ('all_linear')
  houlsby    bottleneck adapters of size 64 after the attention and FFN outputs, LayerNorms train,
             lr 3e-4 (from Houlsby et al. 2019's grid {3e-5, 3e-4, 3e-3})
  pfeiffer   the same adapters after the FFN output only (Pfeiffer et al. 2021)
  full, bitfit on MRPC (new here): full lr 5e-5, BitFit lr 1e-3, as in results/partitions.md.
Earlier methods on the other tasks come from results/partitions.json, results/full_finetune.json
and results/supermask.json (their own runs, length-bucketed batches). A cell that did not run is
shown as missing.

Writes results/methods.{md,csv,json}. Runs go to runs/methods/<task>/<name> and resume.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts import experiments

REPO = experiments.REPO
# Most informative first: the small tasks (cheap, noisy) and the new task, then the larger ones.
TASKS = ("rte", "mrpc", "cola", "stsb", "sst2")
EPOCHS = {"sst2": ["--config.num_epochs=1", "--config.data.train_fraction=0.2"]}
# name -> (fft method, options)
NEW = {
    "lora_qv": ("lora", ["--config.optim.lr=5e-4"]),
    "houlsby": ("adapters", ["--config.adapters.placement=houlsby", "--config.optim.lr=3e-4"]),
    "lora_all": ("lora", ["--config.lora.targets=all_linear", "--config.optim.lr=5e-4"]),
    "pfeiffer": ("adapters", ["--config.adapters.placement=pfeiffer", "--config.optim.lr=3e-4"]),
}
MRPC_EXISTING = {
    "full": ("full", []),
    "bitfit": ("bitfit", ["--config.optim.lr=1e-3"]),
}
EARLIER = ("full", "bitfit", "head", "top1", "top2", "top3", "critical2", "supermask")
ORDER = (*EARLIER, *NEW)


def runs(tasks, names) -> list[tuple[str, str, str, pathlib.Path, list[str]]]:
    """(task, name, fft method, workdir, options), most informative first."""
    out = []
    for name in names:
        table = NEW if name in NEW else MRPC_EXISTING
        if name not in table:
            continue
        method, options = table[name]
        for task in tasks:
            if table is MRPC_EXISTING and task != "mrpc":
                continue
            workdir = REPO / "runs" / "methods" / task / name
            out.append((task, name, method, workdir, [*options, *EPOCHS.get(task, [])]))
    return out


def run_row(task, name, method, workdir, options) -> dict:
    path = workdir / "final_metrics.json"
    row = {"task": task, "method": name, "source": "this sweep",
           "command": experiments.display_command(task, workdir, options, method)}
    if not path.exists():
        return {**row, "dev": None}
    m = json.loads(path.read_text())
    metric, value = experiments.primary_metric(task, m["eval"]["dev"])
    others = {k: round(100 * v, 2) for k, v in m["eval"]["dev"].items()
              if k not in (metric, "loss") and not (k == "combined" and len(m["eval"]["dev"]) <= 3)}
    return {
        **row, "metric": metric, "dev": round(value, 2), "dev_all": others, "trainable_params": m["trainable_params"],
        "total_params": m["total_params"], "stored_bytes": m["stored_bytes"],
        "train_seconds": round(m["train_seconds"], 1), "epochs": round(m["epochs"], 2),
        "description": m.get("method_description"),
    }


def earlier_rows(task: str) -> list[dict]:
    """Rows of the earlier methods from their own results files (not rerun here): partitions.json;
    full fine-tuning from full_finetune.json (its packed rerun) where it has the task; supermask's
    best setting across tasks (magnitude init at 5% sparsity, pooler and classifier train)."""
    out = []
    results = REPO / "results"
    full = {r["task"]: r for r in json.loads((results / "full_finetune.json").read_text())}
    for r in json.loads((results / "partitions.json").read_text()):
        if r["task"] != task or r["method"] not in EARLIER:
            continue
        row = {
            "task": task, "method": r["method"], "source": "results/partitions.json",
            "metric": r["metric"], "dev": r["dev"], "trainable_params": r["trainable_params"],
            "total_params": r["total_params"], "stored_bytes": r["stored_bytes"],
            "train_seconds": r["train_seconds"], "epochs": r["epochs"], "command": r["command"],
        }
        if r["method"] == "full" and task not in EPOCHS and f"dev_{r['metric']}" in full.get(task, {}):
            f = full[task]
            row.update(source="results/full_finetune.json", dev=f[f"dev_{r['metric']}"],
                       train_seconds=f["train_seconds"], epochs=f["epochs"], command=f["command"])
        out.append(row)
    for r in json.loads((results / "supermask.json").read_text()):
        if (r["task"] == task and r["initial_sparsity"] == 0.05 and r["score_lr"] == 1e-3
                and r["head"] == "pooler+classifier" and r["init"] == "magnitude@1"
                and not r.get("epochs_given")):
            out.append({
                "task": task, "method": "supermask", "source": "results/supermask.json",
                "metric": r["metric"], "dev": r["dev"], "trainable_params": None,
                "total_params": r["dense_model_bytes"] // 4, "stored_bytes": r["packed_bytes"],
                "train_seconds": r["train_seconds"], "epochs": r["epochs"], "command": r["command"],
            })
    return out


def table(tasks) -> list[dict]:
    rows = []
    for task in tasks:
        got = earlier_rows(task) if task != "mrpc" else []
        got += [run_row(*r) for r in runs([task], ORDER)]
        have = {r["method"] for r in got}
        got += [{"task": task, "method": n, "dev": None, "source": "not run"} for n in EARLIER
                if n not in have]
        got.sort(key=lambda r: ORDER.index(r["method"]))
        full = next((r for r in got if r["method"] == "full" and r.get("dev") is not None), None)
        for r in got:
            r["dev_vs_full"] = None if full is None or r.get("dev") is None else round(r["dev"] - full["dev"], 2)
        rows += got
    return rows


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "—"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write(rows: list[dict]) -> None:
    out = REPO / "results"
    (out / "methods.json").write_text(json.dumps(rows, indent=1))
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "task", k != "method", k))
    with open(out / "methods.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    cols = [("task", "task"), ("method", "method"), ("metric", "metric"), ("dev", "dev"),
            ("dev_all", "other dev metrics"),
            ("dev_vs_full", "dev - full"), ("trainable_params", "trainable params"),
            ("stored_bytes", "stored bytes"), ("train_seconds", "train s"), ("source", "source")]
    lines = [
        (
            "Methods side by side: dev score (%) of the packaged MiniLM, one seed (0), learning rates "
        "from the literature, no tuning (see scripts/methods_sweep.py). SST-2: 1 epoch on a fixed "
        "20% subset; other tasks 3 epochs. '—' = did not run. Rows from results/partitions.json "
        "and results/supermask.json are those runs (length-bucketed batches, machine shared with "
        "other runs, so train s is indicative; clean ratios: results/bench_methods.json). "
            "Regenerate: `python scripts/methods_sweep.py`."
        ),
        "",
        "| " + " | ".join(t for _, t in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    lines += ["", "Commands:", ""]
    lines += [f"- `{r['command']}`" for r in rows if r.get("source") == "this sweep"]
    (out / "methods.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 4 + len(rows)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default=",".join([*NEW, *MRPC_EXISTING]))
    parser.add_argument("--table_only", action="store_true")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if not args.table_only:
        for task, _, method, workdir, options in runs(tasks, args.methods.split(",")):
            experiments.run(task, workdir, options, method)
            write(table(TASKS))
    write(table(TASKS))


if __name__ == "__main__":
    main()
