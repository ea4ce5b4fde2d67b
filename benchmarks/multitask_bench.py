"""Many tasks on one backbone (fft.multitask) vs dense task models one by one vs PEFT mixed batches.

  python benchmarks/multitask_bench.py                 # writes results/bench_multitask.json
  python benchmarks/multitask_bench.py --peft_python=  # without the PEFT side

Packaged MiniLM, fp32, T=8 tasks of 2 labels each, one batch of 64 random-id examples at seq 128
(benchmarks/train_bench.py:_random_batch), for LoRA (r=8, alpha=8, query+value) and Houlsby
adapters (size 64, LayerNorms trained). Each task is the method's `init` (its own key) with the
trained leaves randomised by a fixed NumPy seed, so the tasks differ: LoRA B ~ N(0, 0.02),
adapters' up-projection kernels ~ N(0, 0.02), and every task's classifier ~ N(0, 0.02).
Three task mixes of the batch: `one` (all 64 examples task 0), `two` (tasks 0/1 alternating,
32 each), `all` (the 8 tasks round-robin, 8 each).

  server  `fft.multitask.MultiTaskServer`: one frozen backbone and the T tasks' trained leaves
          stacked on the device; one jitted call for the whole batch, each example gathering
          its own task's leaves (one compiled program for every mix).
  dense   the T merged task models (`method.merged`, plain dense parameter trees) all resident on
          the device; the batch grouped by task (grouping done beforehand), each group run
          through its own task's model with `method.model.apply` (one jitted program per group
          size, compiled before timing), logits scattered back; examples/s = 64 / total time.
  peft    (LoRA only) benchmarks/peft_mixed_batch.py in a torch + transformers + peft Python
          (`--peft_python`): `BertForSequenceClassification` from the same MiniLM folder with 8
          LoRA adapters, the same input ids, `adapter_names=[...]` per example for the same
          mixes, and one adapter merged (`merge_and_unload`) on the whole batch as PEFT's best
          case. Its threads: `--threads` (default 2, the machine this was written on).

Time: medians of `--repeats` calls per variant, server and dense variants alternating in blocks
(benchmarks/common.py:interleaved_medians); PEFT: medians after a warm-up, in its own process
after the JAX side. Memory: resident bytes (server: backbone + stacked task leaves; dense: T
merged trees) and XLA's compiled peak (memory_analysis: argument + output + temp - alias) of
the serving call; for dense, the device total is the T trees plus the largest group program's
peak less the one tree among its arguments. Correctness, once per method: every example's server
logits against its own task's dense model on the `all` mix (max |diff| recorded, must be < 1e-4).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common as bench
from benchmarks.train_bench import _random_batch
from configs import glue as glue_config
from fft import malloc_tuning, methods, models, multitask, tree_paths
from fft.models import loading

DEFAULT_PEFT_PYTHON = "/work/venv-peft/bin/python"
PEFT_SCRIPT = pathlib.Path(__file__).resolve().parent / "peft_mixed_batch.py"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# name -> (registered method, options)
METHODS = {
    "lora": ("lora", {"rank": 8, "alpha": 8.0, "targets": "query_value"}),
    "houlsby": ("adapters", {"size": 64, "placement": "houlsby"}),
}
MIXES = ("one", "two", "all")


def task_ids_of(mix: str, batch: int, tasks: int) -> np.ndarray:
    """Task id of each example: the same mixes as benchmarks/peft_mixed_batch.py."""
    period = {"one": 1, "two": 2, "all": tasks}[mix]
    return (np.arange(batch) % period).astype(np.int32)


def tree_bytes(tree) -> int:
    leaves = jax.tree.leaves(tree)
    return sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize for x in leaves)


def peak_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def randomize(trainable, rng: np.random.Generator):
    """Trained leaves as training might leave them: LoRA B, adapter up-kernels and the head
    ~ N(0, 0.02); every other trained leaf (LoRA A, adapter down, LayerNorms) as `init` made it."""
    flat = {p: np.asarray(v, np.float32) for p, v in tree_paths.flatten(trainable).items()}
    for p, v in flat.items():
        if (p.startswith("lora/") and p.endswith("/b")) or p.endswith("adapter/up/kernel") \
                or p.startswith("classifier/"):
            flat[p] = rng.normal(0.0, 0.02, v.shape).astype(np.float32)
    return tree_paths.unflatten(flat)


def build_tasks(name: str, model, params, tasks: int, seed: int):
    """[(method, trainable)] of T tasks and the frozen tree they share."""
    method_name, options = METHODS[name]
    config = glue_config.get_config(f"task=rte,method={method_name}")
    config[method_name].update(options)
    rng = np.random.default_rng(seed)
    out, frozen = [], None
    for t in range(tasks):
        method = methods.create(config, model)
        trainable, fr = jax.device_get(method.init(params, jax.random.key(seed + t)))
        frozen = fr if frozen is None else frozen
        out.append((method, randomize(trainable, rng)))
    return out, frozen


def bench_method(name: str, model, params, batch, args) -> dict:
    tasks, frozen = build_tasks(name, model, params, args.tasks, args.seed)
    method = tasks[0][0]
    n = batch["input_ids"].shape[0]
    mix_ids = {mix: task_ids_of(mix, n, args.tasks) for mix in MIXES}

    server = multitask.MultiTaskServer(frozen, tasks, [f"t{t}" for t in range(args.tasks)], rows_per_call=0)
    server_peak = peak_bytes(server.lower(batch, mix_ids["all"]).compile())
    server.logits(batch, mix_ids["all"])  # Compiles the call `logits` makes (one for every mix).
    # The same server running the batch in chunks of `rows_per_call` examples (lax.map).
    chunked = multitask.MultiTaskServer(frozen, tasks, server.bank.names, rows_per_call=args.rows_per_call)
    chunked_peak = peak_bytes(chunked.lower(batch, mix_ids["all"]).compile())
    chunked.logits(batch, mix_ids["all"])
    server_resident = tree_bytes(server.frozen) + server.bank.nbytes

    dense = [jax.device_put(m.merged(tr, frozen)) for m, tr in tasks]
    dense_tree = tree_bytes(dense[0])
    forward = jax.jit(lambda p, b: method.model.apply(
        {"params": p}, b["input_ids"], b["attention_mask"], b["token_type_ids"],
        deterministic=True))
    groups = {}  # mix -> [(task, example indices, inputs)]
    compiled = {}  # group size -> compiled program
    for mix, ids in mix_ids.items():
        groups[mix] = []
        for t in np.unique(ids):
            rows = np.flatnonzero(ids == t)
            inputs = {k: batch[k][rows] for k in INPUTS}
            groups[mix].append((int(t), rows, inputs))
            if len(rows) not in compiled:
                compiled[len(rows)] = forward.lower(dense[0], inputs).compile()
    dense_peaks = {size: peak_bytes(c) for size, c in sorted(compiled.items())}
    dense_resident = args.tasks * dense_tree
    dense_total = dense_resident + max(dense_peaks.values()) - dense_tree

    def run_dense(mix):
        out = np.zeros((n, 2), np.float32)
        for t, rows, inputs in groups[mix]:
            out[rows] = jax.device_get(compiled[len(rows)](dense[t], inputs))
        return out

    # Correctness: every example under its own task, all 8 tasks in the batch.
    server_logits = server.logits(batch, mix_ids["all"])
    max_diff = float(np.abs(server_logits - run_dense("all")).max())
    max_diff = max(max_diff, float(np.abs(chunked.logits(batch, mix_ids["all"]) - run_dense("all")).max()))
    print(f"{name}: max |server - dense logits| over {n} examples of {args.tasks} tasks: "
          f"{max_diff:.2e}", flush=True)
    assert max_diff < 1e-4, f"{name}: server logits differ from the dense task models by {max_diff}"

    fns = {}
    for mix in MIXES:
        fns[f"server/{mix}"] = lambda ids=mix_ids[mix]: server.logits(batch, ids)
        fns[f"chunked/{mix}"] = lambda ids=mix_ids[mix]: chunked.logits(batch, ids)
        fns[f"dense/{mix}"] = lambda mix=mix: run_dense(mix)
    seconds = bench.interleaved_medians(fns, args.repeats, args.warmup, block=args.block)
    mixes = {}
    for mix in MIXES:
        s, d, c = seconds[f"server/{mix}"], seconds[f"dense/{mix}"], seconds[f"chunked/{mix}"]
        mixes[mix] = {"tasks_in_batch": len(groups[mix]), "server_s": s, "dense_s": d,
                      "server_ex_s": n / s, "dense_ex_s": n / d, "server_over_dense": d / s,
                      "chunked_s": c, "chunked_ex_s": n / c, "chunked_over_dense": d / c}
    return {
        "method": method.description,
        "trained_params_per_task": server.bank.nbytes // args.tasks // 4,
        "max_abs_logit_diff": max_diff,
        "mixes": mixes,
        "memory": {
            "server_backbone_bytes": tree_bytes(server.frozen),
            "server_task_bank_bytes": server.bank.nbytes,
            "server_resident_bytes": server_resident,
            "server_peak_bytes": server_peak,
            "chunked_rows": args.rows_per_call,
            "chunked_peak_bytes": chunked_peak,
            "chunked_total_ratio": chunked_peak / dense_total,
            "dense_tree_bytes": dense_tree,
            "dense_resident_bytes": dense_resident,
            "dense_program_peak_bytes": dense_peaks,
            "dense_total_bytes": dense_total,
            "resident_ratio": server_resident / dense_resident,
            "total_ratio": server_peak / dense_total,
        },
    }


def run_peft(python: str, model_dir: pathlib.Path, input_ids: np.ndarray, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = pathlib.Path(tmp) / "ids.npy"
        np.save(ids_file, input_ids)
        cmd = [python, str(PEFT_SCRIPT), f"--model_dir={model_dir}", f"--ids={ids_file}",
               f"--tasks={args.tasks}", "--rank=8", f"--repeats={args.peft_repeats}",
               f"--threads={args.threads}", f"--seed={args.seed}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mib(x: float) -> str:
    return f"{x / 2**20:7.1f} MiB"


def report(result: dict) -> None:
    peft = result.get("peft")
    print(f"\n{result['tasks']} tasks, batch {result['batch']} x seq {result['seq']}, "
          f"{result['cpus']} CPUs ({result['jax_backend']}); examples/s (ratios: server / other)")
    print(f"{'method':>8} {'mix':>4} {'server':>8} {'chunked':>8} {'dense':>8} {'peft mix':>9} "
          f"{'srv/dense':>9} {'chk/dense':>9} {'srv/peft':>9}")
    for name, row in result["methods"].items():
        for mix, m in row["mixes"].items():
            p = peft["ex_s"][mix] if peft and name == "lora" else None
            ps = f"{p:9.1f}" if p else f"{'-':>9}"
            rs = f"{m['server_ex_s'] / p:8.2f}x" if p else f"{'-':>9}"
            print(f"{name:>8} {mix:>4} {m['server_ex_s']:8.1f} {m['chunked_ex_s']:8.1f} "
                  f"{m['dense_ex_s']:8.1f} {ps} {m['server_over_dense']:8.2f}x "
                  f"{m['chunked_over_dense']:8.2f}x {rs}")
    if peft:
        print(f"{'lora':>8} PEFT merged single adapter (best case), all {result['batch']} "
              f"examples: {peft['ex_s']['merged_one']:.1f} ex/s")
    else:
        print(f"PEFT not measured: {result.get('peft_skipped')}")
    print("\nmemory: resident (server: backbone + T tasks' stacked leaves; dense: T merged models)"
          "\n        and device total with the serving program's peak")
    print(f"{'method':>8} {'server':>11} {'(bank)':>11} {'dense':>11} {'ratio':>6}"
          f" {'srv peak':>11} {'chk peak':>11} {'dense tot':>11} {'ratio':>6} {'chk ratio':>9}"
          f" {'max|dlogit|':>11}")
    for name, row in result["methods"].items():
        m = row["memory"]
        print(f"{name:>8} {mib(m['server_resident_bytes'])} {mib(m['server_task_bank_bytes'])}"
              f" {mib(m['dense_resident_bytes'])} {m['resident_ratio']:6.3f}"
              f" {mib(m['server_peak_bytes'])} {mib(m['chunked_peak_bytes'])}"
              f" {mib(m['dense_total_bytes'])} {m['total_ratio']:6.3f}"
              f" {m['chunked_total_ratio']:9.3f} {row['max_abs_logit_diff']:11.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per JAX variant")
    parser.add_argument("--block", type=int, default=2, help="timed calls per alternating block")
    parser.add_argument("--warmup", type=int, default=1, help="extra untimed calls per JAX variant")
    parser.add_argument("--peft_repeats", type=int, default=7, help="timed calls per PEFT variant")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the PEFT side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows_per_call", type=int, default=8, help="chunk size of the chunked server")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--peft_python",
                        default=DEFAULT_PEFT_PYTHON if os.path.exists(DEFAULT_PEFT_PYTHON) else "",
                        help="a Python with torch, transformers and peft; empty: skip PEFT")
    parser.add_argument("--out", default="results/bench_multitask.json")
    args = parser.parse_args()

    model_dir = loading.resolve_model_dir("minilm")
    pretrained = loading.load_pretrained(model_dir)
    model = models.create_model(pretrained.model_type, pretrained.model_config, 2, jnp.float32)
    params = jax.device_get(loading.init_params(model, jax.random.key(0), pretrained.params))
    batch = {k: v for k, v in _random_batch(args.batch, args.seq).items() if k in INPUTS}

    mixes = {m: f"task ids {task_ids_of(m, 16, args.tasks).tolist()}..." for m in MIXES}
    result = {"tasks": args.tasks, "batch": args.batch, "seq": args.seq, "repeats": args.repeats,
              "block": args.block, "warmup": args.warmup, "mixes": mixes,
              **bench.machine_info(), "methods": {}}
    for name in args.methods.split(","):
        result["methods"][name] = bench_method(name, model, params, batch, args)
    if not args.peft_python:
        result["peft_skipped"] = "no --peft_python (torch + transformers + peft) given or found"
    elif "lora" not in result["methods"]:
        result["peft_skipped"] = "LoRA not among --methods"
    else:
        print("PEFT side ...", flush=True)
        result["peft"] = peft = run_peft(args.peft_python, model_dir, batch["input_ids"], args)
        lora = result["methods"]["lora"]["mixes"]
        for mix in MIXES:
            lora[mix]["peft_mixed_ex_s"] = peft["ex_s"][mix]
            lora[mix]["server_over_peft_mixed"] = lora[mix]["server_ex_s"] / peft["ex_s"][mix]
            merged = peft["ex_s"]["merged_one"]
            lora[mix]["server_over_peft_merged"] = lora[mix]["server_ex_s"] / merged
    report(result)
    bench.write_json(result, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Every variant runs in this one process.
    main()
