"""The reference for packed batches, shared by the tests that check a model on them: the same
examples packed several to a row (fft.data.packing) and one per row (length buckets) must give
each example the same logits, loss and gradients."""

import functools

import jax
import numpy as np

from fft import steps
from fft.data import batching, packing, tokenize


def encoded(n, *, seed=0, min_len=3, max_len=40, regression=False, vocab=90, skewed=False):
    """n examples of random lengths (uniform, or `skewed`: mostly short, a long tail, as in GLUE);
    ids in [5, vocab), token types 0 then 1; labels in 0..2 (or scores in [0, 5) for regression)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n).astype(np.int32)
    if skewed:
        lengths = np.clip(min_len + rng.exponential(8, n), min_len, max_len).astype(np.int32)
    ids = [rng.integers(5, vocab, k).astype(np.int32) for k in lengths]
    types = [(np.arange(k) >= k // 2).astype(np.int32) for k in lengths]
    labels = rng.random(n).astype(np.float32) * 5 if regression else rng.integers(0, 3, n, dtype=np.int32)
    return tokenize.Encoded(ids, types, labels, lengths, pad_id=0)


def packed_and_rows(enc, batch_size=12, length=64, bucket=32):
    """(packed batch, the same examples one per row) for the first step of epoch 0."""
    shape = packing.plan(enc, batch_size, seed=0, epochs=1, length=length)
    packed = next(packing.train_batches(enc, batch_size, seed=0, epoch=0, shape=shape))
    rows = batching._make_batch(enc, packed["index"][packed["index"] >= 0], batch_size, (bucket,))
    return packed, rows


def _inputs(batch):
    return {k: v for k, v in batch.items() if k != "index"}


def assert_logits_match(model, params, packed, rows, atol=2e-5):
    """Each real slot's logits equal its example's logits alone in a row; empty slots are finite."""
    apply = jax.jit(functools.partial(steps._apply, model, deterministic=True))
    packed_out = np.asarray(apply(params, _inputs(packed)))
    rows_out = np.asarray(apply(params, _inputs(rows)))
    real = packed["index"] >= 0
    assert np.isfinite(packed_out).all()
    np.testing.assert_allclose(packed_out[real], rows_out[: int(real.sum())], atol=atol, rtol=0)
    return packed_out


def assert_gradients_match(model, params, packed, rows, regression=False):
    """The weighted-mean loss and its gradient are the same packed and one per row."""

    def loss(p, batch):
        out = steps._apply(model, p, batch, deterministic=True)
        return steps.weighted_mean(steps.example_losses(out, batch["labels"], regression), batch["weights"])

    grad = jax.jit(jax.value_and_grad(loss))
    lp, gp = grad(params, _inputs(packed))
    lr, gr = grad(params, _inputs(rows))
    np.testing.assert_allclose(lp, lr, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gr), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
