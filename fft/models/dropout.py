"""Dropout whose keep-mask is a counter-based hash of the element index and the dropout key.

`jax.random.bernoulli` first materialises one random word per element with a block cipher
(threefry, or Philox behind 'rbg' keys), which on CPU costs about as much as a matmul of the same
size. Here each element's 32 random bits are `fmix32` (MurmurHash3's finaliser) of its flat index
mixed with the words of the key, so XLA computes them inside the fusion that applies the mask: no
random buffer, and a fraction of the cost (`benchmarks/dropout_bench.py` measures both).

The bits pass the checks a dropout mask needs (tests/dropout_test.py): the keep rate matches,
neighbouring elements and masks from different keys are uncorrelated, and a key always gives the
same mask, on one device or sharded over many (the index is the global one). They are not a
cryptographic or general-purpose random stream; use `jax.random` for anything else.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: spreads consecutive indices over the 32-bit range.


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with p ~ 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two uint32 words from a typed or raw PRNG key of any implementation."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = key.reshape(-1).astype(jnp.uint32)
    if words.shape[0] < 2:
        raise ValueError(f"A dropout key needs at least 2 uint32 words, got shape {key.shape}")
    first, second = words[0], words[1]
    for i in range(2, words.shape[0]):  # rbg keys have 4 words: fold the rest in.
        if i % 2:
            second = second ^ _fmix32(words[i])
        else:
            first = first ^ _fmix32(words[i])
    return first, second


def hashed_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 bits of `shape`, a deterministic function of `key` and each element's flat index."""
    size = int(np.prod(shape, dtype=np.int64))
    if size >= 2**32:
        raise ValueError(f"hashed_bits indexes elements with uint32; {shape} has {size} elements")
    first, second = _key_words(key)
    index = lax.iota(jnp.uint32, size).reshape(shape)
    return _fmix32(_fmix32(index * jnp.uint32(_GOLDEN) + first) ^ second)


def keep_mask(key: jax.Array, shape: tuple[int, ...], keep_prob: float) -> jax.Array:
    """Boolean mask of `shape`, each entry True with probability `keep_prob` (to 2**-32)."""
    if not 0.0 <= keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in [0, 1], got {keep_prob}")
    if keep_prob == 1.0:
        return jnp.ones(shape, bool)
    return hashed_bits(key, shape) < jnp.uint32(round(keep_prob * 2**32))


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Zeroes each entry of `x` with probability `rate` and scales the rest by 1 / (1 - rate)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout rate must be in [0, 1], got {rate}")
    if rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    keep_prob = 1.0 - rate
    kept = x / jnp.asarray(keep_prob, x.dtype)
    return jnp.where(keep_mask(key, x.shape, keep_prob), kept, jnp.zeros_like(x))


class Dropout(nn.Module):
    """Drop-in for `flax.linen.Dropout` (no broadcast dims) using `keep_mask`'s hashed bits.

    Draws its key with `make_rng(rng_collection)`, so apply with `rngs={'dropout': key}` as usual.
    """

    rate: float
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        return dropout(x, self.rate, self.make_rng(self.rng_collection))
