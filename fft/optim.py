"""Optimizers: AdamW with linear warmup and linear decay, weight decay off for biases and norms."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fft import tree_paths

# Leaves that get no weight decay (as in BERT's original recipe): biases and LayerNorm params.
NO_DECAY_PATTERN = r"(.*/bias$)|(.*layer_norm/.*)|(.*/scale$)"


def linear_warmup_decay(
    peak_lr: float, total_steps: int, warmup_steps: int
) -> optax.Schedule:
    """0 -> peak_lr over `warmup_steps`, then linearly to 0 at `total_steps`."""
    warmup_steps = max(int(warmup_steps), 0)
    decay_steps = max(int(total_steps) - warmup_steps, 1)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1)),
            optax.linear_schedule(peak_lr, 0.0, decay_steps),
        ],
        boundaries=[warmup_steps],
    )


def learning_rate(config: ml_collections.ConfigDict, total_steps: int, step: int) -> float:
    """The value of `adamw`'s schedule at `step`, computed on the host (for logging)."""
    warmup = max(round(config.warmup_fraction * total_steps), 0)
    if step < warmup:
        return config.lr * step / max(warmup, 1)
    return config.lr * max(0.0, 1.0 - (step - warmup) / max(total_steps - warmup, 1))


def decay_mask(params: optax.Params) -> optax.Params:
    """True for leaves that get weight decay: everything but biases and layer norms."""
    pattern = re.compile(NO_DECAY_PATTERN)

    def keep(path, _):
        return pattern.fullmatch(tree_paths.path_str(path)) is None

    return jax.tree_util.tree_map_with_path(keep, params)


class FusedAdamWState(NamedTuple):
    """State of `fused_adamw`: the step count and the first and second moments."""

    count: jax.Array  # int32 scalar: updates done so far.
    mu: optax.Updates
    nu: optax.Updates


def fused_adamw(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: optax.Params | Callable[[optax.Params], optax.Params] | None = None,
) -> optax.GradientTransformation:
    """AdamW with the same arithmetic as `optax.adamw`, as one expression per leaf.

    `optax.adamw` chains scale_by_adam, a masked add_decayed_weights and the learning-rate
    scaling, each building a whole intermediate tree. Here the new moments and the update of each
    leaf come from one elementwise expression, which leaves XLA less to fuse; on MiniLM's 22.7M
    parameters the update takes less time than optax's (`benchmarks/optim_bench.py` measures
    both side by side). Results agree with `optax.adamw` to float32 rounding (tests/optim_test.py).

    Args:
      learning_rate: a float or a schedule of the step count.
      b1, b2, eps: Adam's moment decays and denominator epsilon (eps added after the sqrt).
      weight_decay: decoupled weight decay, scaled by the learning rate as in `optax.adamw`.
      mask: a tree of bools (or a function of the params giving one): True leaves get weight
        decay. None decays every leaf.
    """

    def init(params):
        return FusedAdamWState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    def update(updates, state, params=None):
        if params is None and weight_decay:
            raise ValueError("fused_adamw needs `params` for weight decay.")
        count = optax.safe_increment(state.count)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        step = count.astype(jnp.float32)
        correction1, correction2 = 1 - b1**step, 1 - b2**step
        if not weight_decay:
            decay = jax.tree.map(lambda _: False, updates)
        elif mask is None:
            decay = jax.tree.map(lambda _: True, updates)
        else:
            decay = mask(params) if callable(mask) else mask

        def moments(g, m, v):
            return b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * jnp.square(g)

        mu = jax.tree.map(lambda g, m, v: moments(g, m, v)[0], updates, state.mu, state.nu)
        nu = jax.tree.map(lambda g, m, v: moments(g, m, v)[1], updates, state.mu, state.nu)

        def leaf_update(g, m, v, p, decayed):
            m, v = moments(g, m, v)  # Recomputed in the update's fusion rather than re-read.
            u = (m / correction1) / (jnp.sqrt(v / correction2) + eps)
            if decayed:
                u = u + weight_decay * p
            return (-lr * u).astype(g.dtype)

        param_tree = params if params is not None else updates
        new_updates = jax.tree.map(leaf_update, updates, state.mu, state.nu, param_tree, decay)
        return new_updates, FusedAdamWState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def adamw(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """AdamW from an `optim` config block (see configs/common.py:optim_config).

    Args:
      config: lr, warmup_fraction, weight_decay, b1, b2, eps, max_grad_norm (0 disables).
      total_steps: number of optimizer steps of the whole run (sets the schedule's length).
    """
    schedule = linear_warmup_decay(config.lr, total_steps, round(config.warmup_fraction * total_steps))
    parts = []
    if config.max_grad_norm:
        parts.append(optax.clip_by_global_norm(config.max_grad_norm))
    parts.append(
        fused_adamw(
            schedule,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
