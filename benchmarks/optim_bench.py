"""Cost of the AdamW update: `fft.optim.fused_adamw` against `optax.adamw`, side by side.

  python benchmarks/optim_bench.py              # writes results/bench_optim.json
  python benchmarks/optim_bench.py --seqs=16 --steps=6

Two measurements in one run, both on the packaged MiniLM's 22.7M parameters:
1. The optimizer update alone (global-norm clipping, AdamW with the decay mask, applying the
   updates), jitted with the state donated, as `fft.optim.adamw` builds it with either AdamW.
   With torch installed, torch.optim.AdamW (its default implementation, and `fused=True`)
   plus `clip_grad_norm_` on the same tensors is timed as a reference.
2. The whole MiniLM train step at batch 32 with each AdamW. The update's cost is the same at
   every sequence length, so its share is largest on short sequences (CoLA, SST-2).
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
import optax

from benchmarks import common as bench
from benchmarks import train_bench
from configs import common
from fft import malloc_tuning, models, optim, steps
from fft.models import loading


def _optax_adamw(config, total_steps: int) -> optax.GradientTransformation:
    """`fft.optim.adamw` as it was before `fused_adamw`: clipping then `optax.adamw`."""
    schedule = optim.linear_warmup_decay(config.lr, total_steps, round(config.warmup_fraction * total_steps))
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                    weight_decay=config.weight_decay, mask=optim.decay_mask),
    )


OPTIMIZERS = {"optax_adamw": _optax_adamw, "fused_adamw": optim.adamw}


def _model_and_params():
    pretrained = loading.load_pretrained(loading.resolve_model_dir("minilm"))
    model = models.create_model(pretrained.model_type, pretrained.model_config, 2, jnp.float32)
    return model, loading.init_params(model, jax.random.key(0), pretrained.params)


def update_times(params, n: int, warmup: int) -> dict[str, float]:
    """Milliseconds per optimizer update (clip + AdamW + apply), each optimizer in turn."""
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    out = {}
    for name, make in OPTIMIZERS.items():
        tx = make(common.optim_config(), 1000)

        def apply(p, s, g, tx=tx):
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        apply = jax.jit(apply, donate_argnums=(0, 1))
        state = [jax.tree.map(jnp.array, params)]
        state.append(tx.init(state[0]))

        def once(apply=apply, state=state):
            state[0], state[1] = apply(state[0], state[1], grads)
            jax.block_until_ready(state[0])

        out[name] = 1e3 * bench.median_seconds(once, n, warmup)
        print(f"  update {name}: {out[name]:.1f} ms", flush=True)
    out["ratio_optax_over_fused"] = out["optax_adamw"] / out["fused_adamw"]
    out.update(_torch_update_times(params, n, warmup))
    return out


def _torch_update_times(params, n: int, warmup: int) -> dict[str, float]:
    try:
        import torch
    except ImportError:
        print("  torch not installed: skipping the torch.optim.AdamW reference")
        return {}
    out = {}
    for name, kwargs in {"torch_adamw": {}, "torch_adamw_fused": {"fused": True}}.items():
        tensors = [torch.nn.Parameter(torch.from_numpy(np.array(x))) for x in jax.tree.leaves(params)]
        for t in tensors:
            t.grad = torch.full_like(t, 1e-3)
        opt = torch.optim.AdamW(tensors, lr=5e-5, weight_decay=0.01, **kwargs)

        def once(opt=opt, tensors=tensors):
            torch.nn.utils.clip_grad_norm_(tensors, 1.0)
            opt.step()

        out[name] = 1e3 * bench.median_seconds(once, n, warmup)
        print(f"  update {name}: {out[name]:.1f} ms", flush=True)
    return out


def step_times(model, params, seqs: list[int], batch: int, n: int, warmup: int) -> list[dict]:
    """Examples/s of the whole train step with each AdamW, interleaved call by call."""
    rows = []
    for seq in seqs:
        data = jax.device_put(train_bench._random_batch(batch, seq))
        calls = {}
        for name, make in OPTIMIZERS.items():
            tx = make(common.optim_config(), 1000)
            train = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, is_regression=False),
                            donate_argnums=(0,))
            p = jax.tree.map(jnp.array, params)
            state = [steps.TrainState(jnp.zeros((), jnp.int32), p, tx.init(p))]

            def once(train=train, state=state, data=data):
                state[0], metrics = train(state[0], {}, data, jax.random.key(1))
                jax.block_until_ready(metrics)

            calls[name] = once
        times = {name: [] for name in calls}
        for name, once in calls.items():
            bench.timings(once, 0, warmup)
        for _ in range(n):  # Alternate, so a change in machine load hits both sides alike.
            for name, once in calls.items():
                times[name] += bench.timings(once, 1)
        row = {"seq": seq, "batch": batch}
        for name, ts in times.items():
            row[f"{name}_ex_s"] = batch / float(np.median(ts))
        row["step_ratio_fused_over_optax"] = row["fused_adamw_ex_s"] / row["optax_adamw_ex_s"]
        print("  " + train_bench._fmt_row(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", default="16,64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="results/bench_optim.json")
    args = parser.parse_args()
    model, params = _model_and_params()
    result = {"machine": bench.machine_info()}
    print("== optimizer update alone (MiniLM, 22.7M parameters) ==")
    result["update_ms"] = update_times(params, max(args.steps, 10), args.warmup)
    print(f"== MiniLM train step, batch {args.batch} ==")
    result["train_step"] = step_times(model, params, [int(s) for s in args.seqs.split(",")],
                                      args.batch, args.steps, args.warmup)
    bench.write_json(result, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Both sides of every comparison run in this one process.
    main()
