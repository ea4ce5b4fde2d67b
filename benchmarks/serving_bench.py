"""Many supermask tasks on one backbone vs dense task models one by one: memory and throughput.

  python benchmarks/serving_bench.py            # writes results/bench_serving.json

Packaged MiniLM; T tasks, each masking every attention/FFN kernel (5% sparsity, random masks:
speed and memory do not depend on which bits are set) with its own 2-label head. A mixed batch
of T x rows examples (seq 64) is answered (a) by `fft.serving.MultiTaskServer`: one backbone,
packed masks, tasks applied one after another inside one jitted program; (b) by T dense task
models resident on the device, each run on its own examples. Same inputs, one run.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common as bench
from benchmarks.train_bench import _random_batch
from fft import malloc_tuning, mask_store, models, serving, supermask, tree_paths
from fft.models import loading


def tree_bytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def compiled_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--rows", type=int, default=16, help="examples per task in the batch")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/bench_serving.json")
    args = parser.parse_args()

    pre = loading.load_pretrained(loading.resolve_model_dir("minilm"))
    model = models.create_model(pre.model_type, pre.model_config, 2, jnp.float32)
    params = jax.device_get(loading.init_params(model, jax.random.key(0), pre.params))
    head, backbone = supermask.split_head(params, ("classifier",))
    tasks = []
    for t in range(args.tasks):
        config = supermask.MaskConfig(initial_sparsity=0.05, seed=t)
        scores = supermask.init_scores(None, backbone, config)
        flat = tree_paths.flatten(supermask.masks(scores, config))
        masks = {p: np.asarray(m) > 0.5 for p, m in flat.items()}
        tasks.append(mask_store.Task(masks, tree_paths.flatten(head), config, {}))
    stack = serving.stack_tasks(tasks, [f"task{t}" for t in range(args.tasks)])

    n = args.tasks * args.rows
    batch = {k: v for k, v in _random_batch(n, args.seq).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    task_ids = np.repeat(np.arange(args.tasks), args.rows)
    np.random.default_rng(0).shuffle(task_ids)

    # (a) shared backbone + packed masks.
    server = serving.MultiTaskServer(model, backbone, stack, rows_per_task=args.rows)
    shared_compiled = server.lower(batch, task_ids).compile()
    shared_s = bench.median_seconds(lambda: server.logits(batch, task_ids), args.repeats, warmup=1)
    shared_logits = server.logits(batch, task_ids)

    # (b) dense task models, resident, one by one.
    dense = []
    for task in tasks:
        flat = dict(tree_paths.flatten(backbone))
        for p, m in task.masks.items():
            flat[p] = np.where(m, flat[p], np.float32(0))
        flat.update(task.head)
        dense.append(jax.device_put(tree_paths.unflatten(flat)))
    forward = jax.jit(lambda p, b: model.apply({"params": p}, b["input_ids"], b["attention_mask"],
                                               b["token_type_ids"], deterministic=True))
    groups = [{k: v[task_ids == t] for k, v in batch.items()} for t in range(args.tasks)]
    dense_compiled = forward.lower(dense[0], groups[0]).compile()

    def run_dense():
        out = np.zeros((n, 2), np.float32)
        for t in range(args.tasks):
            out[task_ids == t] = jax.device_get(forward(dense[t], groups[t]))
        return out

    dense_s = bench.median_seconds(run_dense, args.repeats, warmup=1)
    max_diff = float(np.abs(run_dense() - shared_logits).max())

    resident_shared = tree_bytes(backbone) + stack.nbytes
    resident_dense = sum(tree_bytes(d) for d in dense)
    result = {
        "tasks": args.tasks, "rows_per_task": args.rows, "seq": args.seq, "backend": jax.default_backend(),
        "shared": {"resident_bytes": resident_shared, "program_bytes": compiled_bytes(shared_compiled),
                   "seconds": shared_s, "ex_s": n / shared_s},
        "dense_one_by_one": {"resident_bytes": resident_dense, "program_bytes": compiled_bytes(dense_compiled),
                             "seconds": dense_s, "ex_s": n / dense_s},
        "memory_ratio_resident": resident_shared / resident_dense,
        "throughput_ratio": dense_s / shared_s,
        "max_abs_logit_diff": max_diff,
    }
    print(f"{args.tasks} tasks x {args.rows} rows, seq {args.seq}")
    for name in ("shared", "dense_one_by_one"):
        r = result[name]
        print(f"  {name:>17}: resident {r['resident_bytes'] / 2**20:8.1f} MiB  program {r['program_bytes'] / 2**20:8.1f} MiB"
              f"  {r['ex_s']:7.1f} ex/s")
    print(f"  resident memory shared/dense {result['memory_ratio_resident']:.3f}; "
          f"throughput shared/dense {result['throughput_ratio']:.2f}x; max |logit diff| {max_diff:.2e}")
    bench.write_json(result, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Both sides of every comparison run in this one process.
    main()
