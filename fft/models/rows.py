"""How the rows of a batch map to examples, on the model side: attention masks, positions, packed
rows (`Packing`, built by `fft.data.packing`) and pooling each example to one vector."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Added to attention scores of padding keys. Finite, so an all-padding row gives a uniform softmax, not NaN.
_MASK_VALUE = -1e9


class Packing(NamedTuple):
    """Several examples per row of a batch ("packed" rows, built by `fft.data.packing`).

    Row r holds up to `slots` examples one after another; each attends only to itself, has its
    own positions 0, 1, ..., and is classified from its own first token. With the same weights,
    an example's logits are those of the example alone in an unpadded row (tests/packing_test.py).

    Attributes:
      segment_ids: int [rows, seq]: s + 1 for the tokens of the row's example in slot s, 0 for
        padding.
      position_ids: int [rows, seq]: each token's position within its example.
      cls_positions: int [rows, slots]: the column of each slot's first token (any column for an
        empty slot, whose logits the caller ignores).
    """

    segment_ids: jax.Array
    position_ids: jax.Array
    cls_positions: jax.Array

    def attention_mask(self) -> jax.Array:
        """[rows, seq_q, seq_k] bool: a query sees the keys of its own example."""
        seg = self.segment_ids
        return (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)

    def first_tokens(self, hidden: jax.Array) -> jax.Array:
        """Each slot's first-token hidden state: [rows, seq, hidden] -> [rows * slots, hidden]."""
        picked = jnp.take_along_axis(hidden, self.cls_positions[:, :, None], axis=1)
        return picked.reshape(-1, hidden.shape[-1])


def attention_bias(attention_mask: jax.Array | None, seq_len: int) -> jax.Array:
    """An additive float32 attention bias from a 0/1 key mask [batch, seq] (-> [batch, 1, 1, seq])
    or a query-key mask [batch, seq, seq] (-> [batch, 1, seq, seq]; packed rows)."""
    if attention_mask is None:
        return jnp.zeros((1, 1, 1, seq_len), jnp.float32)
    if attention_mask.ndim == 3:
        return jnp.where(attention_mask[:, None] > 0, 0.0, _MASK_VALUE).astype(jnp.float32)
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, _MASK_VALUE).astype(jnp.float32)


def position_ids(seq_len: int, max_positions: int) -> jax.Array:
    """[seq] positions 0..seq-1; raises ValueError if the sequence is longer than the table."""
    if seq_len > max_positions:
        raise ValueError(
            f"Sequence length {seq_len} exceeds max_position_embeddings {max_positions}."
        )
    return jnp.arange(seq_len)


def packed_inputs(attention_mask, packing: Packing | None, seq_len: int, max_positions: int):
    """(attention mask, positions) of a batch: packed rows' own, or the key mask and 0..seq-1."""
    if packing is None:
        return attention_mask, position_ids(seq_len, max_positions)
    if attention_mask is not None:
        raise ValueError("Packed rows take their attention mask from packing.segment_ids; pass None")
    position_ids(seq_len, max_positions)  # Checks the length.
    return packing.attention_mask(), packing.position_ids


def first_tokens(hidden: jax.Array, packing: Packing | None) -> jax.Array:
    """Hidden states of the tokens that classify: [batch, hidden] (packed: [rows * slots, hidden])."""
    return hidden[:, 0] if packing is None else packing.first_tokens(hidden)


# How a classifier turns an example's hidden states into one vector (its `pooling` attribute):
#   cls   the first ([CLS]) token; BERT then applies its pretrained `pooler` (dense + tanh).
#   mean  the float32 mean over the example's real tokens, as sentence-transformers pools
#         (all-MiniLM-L6-v2 was trained so); BERT then has no `pooler` parameters.
POOLINGS = ("cls", "mean")


def check_pooling(pooling: str) -> None:
    """Raises ValueError unless `pooling` is one of `POOLINGS`."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}.")


def mean_tokens(
    hidden: jax.Array, attention_mask: jax.Array | None, packing: Packing | None
) -> jax.Array:
    """Each example's mean hidden state over its own real tokens, in float32.

    Args:
      hidden: [batch, seq, hidden] (packed: [rows, seq, hidden]).
      attention_mask: 0/1 [batch, seq] (1: a real token); None: every token is real. Must be None
        for packed rows, whose slot s owns the tokens where `packing.segment_ids == s + 1`.
      packing: packed rows, or None.

    Returns:
      float32 [batch, hidden] (packed: [rows * slots, hidden]); sum(hidden * mask) / sum(mask),
      with an example that has no tokens (an all-padding row, an empty slot) giving zeros.
    """
    h = hidden.astype(jnp.float32)
    if packing is not None:
        slots = jnp.arange(1, packing.cls_positions.shape[1] + 1, dtype=packing.segment_ids.dtype)
        weights = packing.segment_ids[:, None, :] == slots[None, :, None]  # [rows, slots, seq]
    elif attention_mask is not None:
        weights = (attention_mask > 0)[:, None, :]  # [batch, 1, seq]
    else:
        weights = jnp.ones((h.shape[0], 1, h.shape[1]), bool)
    weights = weights.astype(jnp.float32)
    # HIGHEST: a plain float32 sum on accelerators too (no reduced-precision matmul passes).
    total = jnp.matmul(weights, h, precision=jax.lax.Precision.HIGHEST)  # [b, slots, hidden]
    count = jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1.0)
    return (total / count).reshape(-1, h.shape[-1])


def pool_tokens(
    hidden: jax.Array, attention_mask: jax.Array | None, packing: Packing | None, pooling: str
) -> jax.Array:
    """The vector each example is classified from, before any pooler: its first token's hidden
    state (`pooling='cls'`, in hidden's dtype) or `mean_tokens` ('mean', float32).
    [batch, seq, hidden] -> [batch, hidden] (packed: [rows * slots, hidden])."""
    check_pooling(pooling)
    if pooling == "mean":
        return mean_tokens(hidden, attention_mask, packing)
    return first_tokens(hidden, packing)
