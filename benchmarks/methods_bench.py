"""Train-step time and peak memory of every fine-tuning method, as ratios to full fine-tuning.

  python benchmarks/methods_bench.py                  # writes results/bench_methods.json
  python benchmarks/methods_bench.py --variants=full,lora_qv,lora_qv_merge

Packaged MiniLM, seq 128, batch 32, fp32, one process, every variant side by side in one run.
Each variant is built through the method registry (`fft.methods.create` from a `configs/glue.py`
config), and its step is the training loop's own: `fft.steps.train_step` with the method's model,
`assemble` and optimizer after global-norm clipping (`fft.train.make_optimizer`), the trainable
state donated and the frozen tree a separate argument. `+cache` variants train from the hidden
states entering the method's lowest changed layer (fft.feature_cache). Time: medians over blocks
that alternate between the variants (benchmarks/common.py:interleaved_medians), so drift in the
machine's speed hits all alike. Peak memory: XLA's compiled-program estimate (arguments + outputs
+ temporaries - donated aliases), the same accounting on every backend.
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
from configs import glue as glue_config
from fft import feature_cache, malloc_tuning, methods, models, partition, steps, train
from fft.models import loading

# name -> (method, option overrides, use the feature cache)
VARIANTS = {
    "full": ("full", {}, False),
    "bitfit": ("bitfit", {}, False),
    "head+cache": ("head", {}, True),
    "layers:top2": ("layers", {"select": "top2"}, False),
    "layers:top2+cache": ("layers", {"select": "top2"}, True),
    "supermask": ("supermask", {}, False),
    "lora_qv": ("lora", {"mode": "side"}, False),
    "lora_qv_merge": ("lora", {"mode": "merge"}, False),
    "lora_all": ("lora", {"mode": "side", "targets": "all_linear"}, False),
    "lora_all_merge": ("lora", {"mode": "merge", "targets": "all_linear"}, False),
    "houlsby": ("adapters", {"placement": "houlsby"}, False),
    "pfeiffer": ("adapters", {"placement": "pfeiffer"}, False),
}


def memory(compiled) -> dict[str, int | None]:
    """XLA's estimate: peak = arguments + outputs + temporaries - donated aliases, and its parts
    (arguments: trainable state and frozen weights; temporaries: activations, gradients)."""
    m = compiled.memory_analysis()
    if m is None:
        return {"peak_bytes": None}
    parts = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}
    peak = parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]
    return {"peak_bytes": peak, **{f"{k}_bytes": v for k, v in parts.items()}}


def build(model, params, name: str, batch: dict) -> tuple[dict, object]:
    """(row, one-step callable) of a variant."""
    method_name, options, cache = VARIANTS[name]
    config = glue_config.get_config(f"task=rte,method={method_name}")
    config[method_name].update(options)
    method = methods.create(config, model)
    trainable, frozen = jax.device_get(method.init(params, train.method_key(config)))
    tx, _ = train.make_optimizer(config, method, trainable, 1000)
    forward, data = None, dict(batch)
    if cache:
        start = method.cache_start(trainable)
        forward = feature_cache.cached_apply(method.model, start)
        hidden = jax.jit(
            lambda p, b: method.model.apply(
                {"params": p}, b["input_ids"], b["attention_mask"], b["token_type_ids"],
                num_layers=start, method=method.model.prefix,
            )
        )(method.assemble(trainable, frozen), batch)
        data = {k: v for k, v in batch.items() if k not in ("input_ids", "token_type_ids")}
        data["hidden"] = np.asarray(hidden)
    trainable = jax.device_put(trainable)
    frozen = jax.device_put(frozen)
    # Jitted init: fresh buffers for every state leaf (donation rejects shared constant buffers).
    state = [steps.TrainState(jnp.zeros((), jnp.int32), trainable, jax.jit(tx.init)(trainable))]
    step = jax.jit(
        functools.partial(steps.train_step, model=method.model, tx=tx, is_regression=False,
                          forward=forward, assemble=method.assemble),
        donate_argnums=(0,),
    )
    data = jax.device_put(data)
    rng = jax.random.key(0)
    compiled = step.lower(state[0], frozen, data, rng).compile()

    def once():
        state[0], out = compiled(state[0], frozen, data, rng)
        jax.block_until_ready(out)

    row = {"variant": name, "method": method.description, "feature_cache": cache,
           "trainable_params": partition.count_params(trainable), **memory(compiled)}
    return row, once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="results/bench_methods.json")
    args = parser.parse_args()
    names = args.variants.split(",")
    if names[0] != "full":
        names = ["full", *[n for n in names if n != "full"]]
    model_dir = loading.resolve_model_dir("minilm")
    pretrained = loading.load_pretrained(model_dir)
    model = models.create_model(pretrained.model_type, pretrained.model_config, 2, jnp.float32)
    params = jax.device_get(loading.init_params(model, jax.random.key(0), pretrained.params))
    batch = _random_batch(args.batch, args.seq)
    rows, fns = [], {}
    for name in names:
        if VARIANTS[name][0] not in methods.REGISTRY:
            print(f"{name}: method {VARIANTS[name][0]!r} is not registered; skipped", flush=True)
            continue
        row, fn = build(model, params, name, batch)
        rows.append(row)
        fns[name] = fn
        print(f"compiled {name}: peak {row['peak_bytes'] / 2**20:.1f} MiB", flush=True)
    seconds = bench.interleaved_medians(fns, args.steps, args.warmup)
    full = rows[0]
    full["step_s"] = seconds["full"]
    for row in rows:
        row["step_s"] = seconds[row["variant"]]
        row["ex_s"] = args.batch / row["step_s"]
        row["time_ratio"] = row["step_s"] / seconds["full"]
        row["memory_ratio"] = row["peak_bytes"] / full["peak_bytes"] if full["peak_bytes"] else None
        if full.get("temp_bytes"):
            row["temp_ratio"] = row["temp_bytes"] / full["temp_bytes"]
            row["state_ratio"] = row["argument_bytes"] / full["argument_bytes"]
        print(f"{row['variant']:>18}  trainable {row['trainable_params']:>10,}  step {row['step_s'] * 1e3:7.1f} ms "
              f"({row['time_ratio']:.2f}x full)  peak {row['peak_bytes'] / 2**20:7.1f} MiB "
              f"({row['memory_ratio']:.2f}x full)", flush=True)
    result = {"seq": args.seq, "batch": args.batch, "steps": args.steps, **bench.machine_info(), "rows": rows}
    bench.write_json(result, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Every variant runs in this one process.
    main()
