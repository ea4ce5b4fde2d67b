"""Cost of dropout masks: fft's hashed masks against `jax.random.bernoulli` (threefry and rbg keys).

  python benchmarks/dropout_bench.py            # writes results/bench_dropout.json
  python benchmarks/dropout_bench.py --seqs=16,64 --steps=6

Two measurements, side by side in one run:
1. Applying dropout (rate 0.1) to one tensor of each shape MiniLM drops at batch 32, seq 64:
   attention probabilities [32, 12, 64, 64] and hidden states [32, 64, 384].
2. The whole MiniLM train step (forward, backward, AdamW) at batch 32, with the model's dropout
   layers drawing masks from each source. The `bernoulli` variants swap
   `fft.models.dropout.dropout` for the flax.linen.Dropout formula (`jax.random.bernoulli` on the
   layer's key), so everything else in the step is the same program.
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

from benchmarks import common as bench
from benchmarks import train_bench
from configs import common
from fft import malloc_tuning, models, optim, steps
from fft.models import dropout as hashed_dropout
from fft.models import loading

HASHED = hashed_dropout.dropout


def bernoulli_dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """What flax.linen.Dropout computes: a jax.random.bernoulli keep mask, kept entries scaled."""
    if rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


# name -> (dropout function, key implementation)
SOURCES = {
    "hashed": (HASHED, "rbg"),
    "bernoulli_threefry": (bernoulli_dropout, "threefry2x32"),
    "bernoulli_rbg": (bernoulli_dropout, "rbg"),
}


def mask_times(n: int, warmup: int) -> list[dict]:
    rows = []
    for name, shape in (("attention_probs", (32, 12, 64, 64)), ("hidden", (32, 64, 384))):
        x = jnp.ones(shape, jnp.float32)
        row = {"tensor": name, "shape": list(shape)}
        for source, (fn, impl) in SOURCES.items():
            apply = jax.jit(functools.partial(fn, rate=0.1))
            key = jax.random.key(0, impl=impl)

            def once(apply=apply, x=x, key=key):
                jax.block_until_ready(apply(x, key=key))

            seconds = bench.median_seconds(once, n, warmup)
            row[f"{source}_ms"] = 1e3 * seconds
            row[f"{source}_ns_per_element"] = 1e9 * seconds / x.size
        row["speedup_vs_bernoulli_threefry"] = row["bernoulli_threefry_ms"] / row["hashed_ms"]
        row["speedup_vs_bernoulli_rbg"] = row["bernoulli_rbg_ms"] / row["hashed_ms"]
        print(_fmt(row), flush=True)
        rows.append(row)
    return rows


def step_times(seqs: list[int], batch: int, n: int, warmup: int) -> list[dict]:
    pretrained = loading.load_pretrained(loading.resolve_model_dir("minilm"))
    model = models.create_model(pretrained.model_type, pretrained.model_config, 2, jnp.float32)
    params = loading.init_params(model, jax.random.key(0), pretrained.params)
    tx = optim.adamw(common.optim_config(), total_steps=1000)
    rows = []
    for seq in seqs:
        data = jax.device_put(train_bench._random_batch(batch, seq))
        row = {"seq": seq, "batch": batch}
        for source, (fn, impl) in SOURCES.items():
            hashed_dropout.dropout = fn  # Read when the step is traced (below), then restored.
            try:
                train = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, is_regression=False),
                                donate_argnums=(0,))
                rng = jax.random.key(1, impl=impl)
                state = [steps.TrainState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.array, params),
                                          tx.init(params))]

                def once(train=train, rng=rng, state=state, data=data):
                    state[0], metrics = train(state[0], {}, data, rng)
                    jax.block_until_ready(metrics)

                once()  # Trace and compile with this source in place.
            finally:
                hashed_dropout.dropout = HASHED
            row[f"{source}_step_ms"] = 1e3 * bench.median_seconds(once, n, warmup)
        row["step_speedup_vs_bernoulli_threefry"] = row["bernoulli_threefry_step_ms"] / row["hashed_step_ms"]
        row["step_speedup_vs_bernoulli_rbg"] = row["bernoulli_rbg_step_ms"] / row["hashed_step_ms"]
        print(_fmt(row), flush=True)
        rows.append(row)
    return rows


def _fmt(row: dict) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", default="16,64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="results/bench_dropout.json")
    args = parser.parse_args()
    result = {"machine": bench.machine_info()}
    print("== one dropout layer (rate 0.1) ==")
    result["masks"] = mask_times(max(args.steps, 10), args.warmup)
    print(f"== MiniLM train step, batch {args.batch} ==")
    result["train_step"] = step_times([int(s) for s in args.seqs.split(",")], args.batch, args.steps, args.warmup)
    bench.write_json(result, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Both sides of every comparison run in this one process.
    main()
