"""Pure train and eval steps for sequence classification and regression.

`train_step(state, frozen, batch, rng, *, model, tx, is_regression)` differentiates only
`state.params` (the trainable tree); `frozen` holds the weights that do not train (empty for full
fine-tuning) and is merged in inside the loss, so no gradient is ever computed for it.

A batch is length-bucketed (`fft.data.batching`: one example per row) or packed
(`fft.data.packing`: several per row, one output per slot); both carry per-example `labels`
and `weights` that line up with the model's outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fft.data import packing as packed_rows
from fft.models.bert import Packing

Batch = dict[str, jax.Array]


class TrainState(NamedTuple):
    """The mutable training state; everything in it is checkpointed."""

    step: jax.Array  # int32 scalar.
    params: Any  # The trainable parameter tree.
    opt_state: optax.OptState


def merge_trees(trainable: Any, frozen: Any) -> Any:
    """Deep-merges two nested dicts with disjoint leaves into one parameter tree."""
    if not frozen:
        return trainable
    if not trainable:
        return frozen
    merged = dict(frozen)
    for key, value in trainable.items():
        if key in merged and isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = merge_trees(value, merged[key])
        elif key in merged:
            raise ValueError(f"Parameter {key!r} is both trainable and frozen")
        else:
            merged[key] = value
    return merged


def example_losses(outputs: jax.Array, labels: jax.Array, is_regression: bool) -> jax.Array:
    """Per-example loss [batch]: softmax cross-entropy on logits, or squared error on scores."""
    outputs = outputs.astype(jnp.float32)
    if is_regression:
        return jnp.square(outputs[:, 0] - labels.astype(jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)


def predictions(outputs: jax.Array, is_regression: bool) -> jax.Array:
    """Class ids [batch] (int32) or regression scores [batch] (float32)."""
    if is_regression:
        return outputs[:, 0].astype(jnp.float32)
    return jnp.argmax(outputs, axis=-1).astype(jnp.int32)


def _apply(
    model: nn.Module, params: Any, batch: Batch, *, deterministic: bool, rng=None, forward=None
) -> jax.Array:
    """Logits of `model` on `batch`; `forward` replaces `model.apply` (e.g. the feature cache's
    `cached_apply`, which reads `batch['hidden']` instead of token ids)."""
    rngs = None if deterministic else {"dropout": rng}
    if forward is not None:
        return forward({"params": params}, batch, deterministic=deterministic, rngs=rngs)
    if packed_rows.is_packed(batch):  # One output per slot of each row.
        packing = Packing(batch["segment_ids"], batch["position_ids"], batch["cls_positions"])
        return model.apply(
            {"params": params}, batch["input_ids"], None, batch["token_type_ids"],
            deterministic=deterministic, rngs=rngs, packing=packing,
        )
    return model.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        deterministic=deterministic,
        rngs=rngs,
    )


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def train_step(
    state: TrainState,
    frozen: Any,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    is_regression: bool,
    assemble: Callable[[Any, Any], Any] = merge_trees,
    forward: Callable[..., jax.Array] | None = None,
    learning_rates: Callable[[jax.Array], dict[str, jax.Array]] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch; returns the new state and scalar metrics.

    `assemble(trainable, frozen)` builds the model's parameters inside the loss (default: merge
    the two trees; a method applies its masks or low-rank updates here); `forward` overrides
    `model.apply`; `learning_rates(step)` adds each parameter group's learning rate (its tags)."""
    step_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(trainable):
        params = assemble(trainable, frozen)
        outputs = _apply(model, params, batch, deterministic=False, rng=step_rng, forward=forward)
        return weighted_mean(example_losses(outputs, batch["labels"], is_regression), batch["weights"])

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "train/loss": loss,
        "train/grad_norm": optax.tree.norm(grads),
        "train/param_norm": optax.tree.norm(params),
    }
    if learning_rates is not None:
        metrics.update(learning_rates(state.step))
    return TrainState(state.step + 1, params, opt_state), metrics


def eval_step(
    params: Any,
    frozen: Any,
    batch: Batch,
    *,
    model: nn.Module,
    is_regression: bool,
    assemble: Callable[[Any, Any], Any] = merge_trees,
) -> dict[str, jax.Array]:
    """Forward pass without dropout: per-example predictions and the summed weighted loss."""
    outputs = _apply(model, assemble(params, frozen), batch, deterministic=True)
    losses = example_losses(outputs, batch["labels"], is_regression)
    return {
        "predictions": predictions(outputs, is_regression),
        "loss_sum": jnp.sum(losses * batch["weights"]),
        "weight_sum": jnp.sum(batch["weights"]),
    }
