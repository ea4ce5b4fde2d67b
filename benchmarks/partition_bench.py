"""Train-step time and peak memory of each partition preset and of supermask training, as ratios
to full fine-tuning.

  python benchmarks/partition_bench.py            # writes results/bench_partitions.json

Packaged MiniLM, seq 128, batch 32, fp32, one process, all presets side by side in one run. Each
preset's step is the real `fft.steps.train_step` over its trainable tree with the frozen tree as a
separate, non-donated argument; `+cache` variants train from cached hidden states entering the
lowest trainable layer (fft.feature_cache), so the frozen prefix is not run at all. Peak memory is
XLA's compiled-program estimate (arguments + outputs + temporaries - aliased donations), the same
accounting on every backend; time is the median over timed steps after warm-up.
"""

from __future__ import annotations

import argparse
import functools
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
from configs import common
from fft import feature_cache, malloc_tuning, models, optim, partition, steps, supermask, tree_paths
from fft.models import loading

PRESETS = ("full", "bitfit", "head", "layers:top1", "layers:top2", "layers:top3", "supermask")
CACHED = ("head", "layers:top1", "layers:top2", "layers:top3")


def peak_bytes(compiled) -> int | None:
    m = compiled.memory_analysis()
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def measure(model, params, preset: str, cache: bool, batch: dict, n: int, warmup: int) -> dict:
    num_layers = model.config.encoder_spec.num_layers
    assemble = steps.merge_trees
    if preset.startswith("supermask"):  # Scores for every attention/FFN kernel + head.
        mcfg = supermask.MaskConfig(initial_sparsity=0.05)
        trainable, frozen = supermask.init_trainable(None, params, mcfg, head_keys=("classifier",))
        tx = supermask.make_optimizer(1e-3, 5e-5, 1000, config=mcfg)
        assemble = supermask.make_assemble(mcfg)
    else:
        rules = partition.preset_rules(preset, num_layers, head="(classifier)/.*")
        labels = partition.labels(params, rules)
        trainable, frozen = partition.split(params, labels)
        tx = partition.make_optimizer(
            partition.trainable_labels(labels),
            {k: optim.adamw(common.optim_config(), 1000) for k in ("train", "head")},
        )
    forward = None
    data = dict(batch)
    if cache:
        start = feature_cache.first_trainable_layer(tree_paths.leaf_paths(trainable), num_layers)
        forward = feature_cache.cached_apply(model, start)
        hidden = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                             batch["token_type_ids"], num_layers=start, method=model.prefix)
        data = {k: v for k, v in batch.items() if k not in ("input_ids", "token_type_ids")}
        data["hidden"] = np.asarray(hidden)
    trainable = jax.device_put(jax.device_get(trainable))
    frozen = jax.device_put(jax.device_get(frozen))
    # Jitted init: fresh buffers for every state leaf (eager init may share constant buffers,
    # which donation rejects).
    state = [steps.TrainState(jnp.zeros((), jnp.int32), trainable, jax.jit(tx.init)(trainable))]
    step = jax.jit(
        functools.partial(steps.train_step, model=model, tx=tx, is_regression=False, forward=forward,
                          assemble=assemble),
        donate_argnums=(0,),
    )
    data = jax.device_put(data)
    rng = jax.random.key(0)
    compiled = step.lower(state[0], frozen, data, rng).compile()

    def once():
        state[0], metrics = compiled(state[0], frozen, data, rng)
        jax.block_until_ready(metrics)

    seconds = bench.median_seconds(once, n, warmup)
    return {
        "preset": preset + ("+cache" if cache else ""),
        "trainable_params": partition.count_params(trainable),
        "step_s": seconds,
        "ex_s": len(batch["labels"]) / seconds,
        "peak_bytes": peak_bytes(compiled),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="results/bench_partitions.json")
    args = parser.parse_args()
    model_dir = loading.resolve_model_dir("minilm")
    pretrained = loading.load_pretrained(model_dir)
    model = models.create_model(pretrained.model_type, pretrained.model_config, 2, jnp.float32)
    params = jax.device_get(loading.init_params(model, jax.random.key(0), pretrained.params))
    batch = _random_batch(args.batch, args.seq)
    rows = []
    for preset in PRESETS:
        for cache in (False, True) if preset in CACHED else (False,):
            row = measure(model, params, preset, cache, batch, args.steps, args.warmup)
            rows.append(row)
    full = rows[0]
    for row in rows:
        row["time_ratio"] = row["step_s"] / full["step_s"]
        row["memory_ratio"] = row["peak_bytes"] / full["peak_bytes"] if full["peak_bytes"] else None
        print(f"{row['preset']:>18}  trainable {row['trainable_params']:>10,}  step {row['step_s'] * 1e3:7.1f} ms "
              f"({row['time_ratio']:.2f}x full)  peak {row['peak_bytes'] / 2**20:7.1f} MiB "
              f"({row['memory_ratio']:.2f}x full)", flush=True)
    result = {"seq": args.seq, "batch": args.batch, "jax": jax.__version__, "backend": jax.default_backend(),
              "cpus": os.cpu_count(), "rows": rows}
    bench.write_json(result, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Both sides of every comparison run in this one process.
    main()
