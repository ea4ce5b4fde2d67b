"""Optimizers: AdamW with linear warmup and linear decay, weight decay off for biases and norms."""

from __future__ import annotations

import re

import jax
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


def schedule(peak_lr: float, config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """The run's schedule (warmup over ``config.warmup_fraction``, then linear decay) peaking at
    ``peak_lr``; every parameter group follows it with its own peak."""
    return linear_warmup_decay(peak_lr, total_steps, round(config.warmup_fraction * total_steps))


def adamw_with(learning_rate: optax.ScalarOrSchedule, config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with ``config``'s betas, eps and weight decay (none on biases and norms); no clipping."""
    return optax.adamw(
        learning_rate,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
        mask=decay_mask,
    )


def adamw(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """AdamW from an `optim` config block (see configs/common.py:optim_config).

    Args:
      config: lr, warmup_fraction, weight_decay, b1, b2, eps, max_grad_norm (0 disables).
      total_steps: number of optimizer steps of the whole run (sets the schedule's length).
    """
    parts = []
    if config.max_grad_norm:
        parts.append(optax.clip_by_global_norm(config.max_grad_norm))
    parts.append(adamw_with(schedule(config.lr, config, total_steps), config))
    return optax.chain(*parts)
