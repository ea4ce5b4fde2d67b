"""Length-bucketed, fixed-size numpy batches from `fft.data.tokenize.Encoded` examples.

Every batch is a dict as in docs/CONTRACT.md plus an `index` field:
  input_ids, attention_mask, token_type_ids: int32 [batch, length]
  labels: int32 [batch] (classification) or float32 [batch] (regression)
  weights: float32 [batch], 1 for an example, 0 for a padding row
  index: int32 [batch], the example's position in `encoded`, -1 for a padding row
`length` is always one of a few bucket lengths, so jit compiles one program per bucket, and
every batch has exactly `batch_size` rows (the last one is filled with weight-0 rows).

Padding rows hold pad tokens with only position 0 unmasked, so no row is fully masked (a
softmax over -inf everywhere would give NaN, and 0 * NaN is still NaN in a weighted loss).

Shuffling uses numpy Generators seeded from (seed, epoch): the order is a pure function of
them, the same on every host and after a restart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from fft.data import tokenize

Batch = dict[str, np.ndarray]


def bucket_lengths(
    max_length: int, *, min_length: int = 8, step: int | None = None
) -> tuple[int, ...]:
    """A few padded lengths ending at `max_length`.

    By default min_length * (1, 1.5, 2, 3, 4, 6, ...) below `max_length`, then `max_length`:
    (8, 12, 16, 24, 32, 48, 64, 96, 128) for 128, so a batch is padded by at most half beyond its
    longest example and short-sentence tasks (CoLA, SST-2: ~11-13 tokens) get short buckets
    (`benchmarks/train_bench.py --mode=epoch` counts the padded tokens of an epoch against
    padding each batch to its longest example).
    With `step`, multiples of it instead: (32, 64, 96, 128) for step 32. Each length is one
    more jit compilation of the train and eval steps.
    """
    if max_length < 1 or min_length < 1 or (step is not None and step < 1):
        raise ValueError(f"Lengths must be positive: {max_length=}, {min_length=}, {step=}")
    if step is not None:
        lengths = set(range(step, max_length, step))
    else:
        lengths, b = set(), min_length
        while b < max_length:
            lengths.update((b, b * 3 // 2))
            b *= 2
    return tuple(sorted(x for x in lengths if x < max_length)) + (max_length,)


def _check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    result = tuple(sorted({int(b) for b in buckets}))
    if not result or result[0] < 1:
        raise ValueError(f"buckets must be positive lengths, got {tuple(buckets)}")
    return result


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


def _bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    i = bisect.bisect_left(buckets, length)
    if i == len(buckets):
        raise ValueError(
            f"An example has {length} tokens, more than the largest bucket ({buckets[-1]}); "
            "encode with a max_length no larger than the largest bucket"
        )
    return buckets[i]


def _make_batch(encoded: tokenize.Encoded, idx: np.ndarray, batch_size: int, buckets) -> Batch:
    """Pads the examples `idx` into one batch of `batch_size` rows."""
    n = len(idx)
    length = _bucket_for(int(encoded.lengths[idx].max()), buckets)
    input_ids = np.full((batch_size, length), encoded.pad_id, np.int32)
    token_type_ids = np.zeros((batch_size, length), np.int32)
    attention_mask = np.zeros((batch_size, length), np.int32)
    for row, i in enumerate(idx):
        k = encoded.lengths[i]
        input_ids[row, :k] = encoded.input_ids[i]
        token_type_ids[row, :k] = encoded.token_type_ids[i]
        attention_mask[row, :k] = 1
    attention_mask[n:, 0] = 1  # Padding rows: see the module docstring.
    labels = np.zeros(batch_size, encoded.labels.dtype)
    labels[:n] = encoded.labels[idx]
    weights = np.zeros(batch_size, np.float32)
    weights[:n] = 1.0
    index = np.full(batch_size, -1, np.int32)
    index[:n] = idx
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": labels,
        "weights": weights,
        "index": index,
    }


def num_train_batches(encoded: tokenize.Encoded | int, batch_size: int) -> int:
    """Batches per epoch (the last one may be partly padding)."""
    _check_batch_size(batch_size)
    n = encoded if isinstance(encoded, int) else len(encoded)
    return math.ceil(n / batch_size)


def train_batches(
    encoded: tokenize.Encoded,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    buckets: Sequence[int],
    pool_batches: int = 50,
) -> Iterator[Batch]:
    """One epoch of shuffled, length-bucketed training batches.

    The examples are shuffled, sorted by length within pools of `pool_batches` batches, cut
    into batches (so a batch holds examples of similar length), and the batch order is
    shuffled. Every example appears exactly once; the order depends only on (seed, epoch).

    Args:
      encoded: the training examples.
      batch_size: rows per batch (global, across hosts).
      seed: non-negative data seed.
      epoch: non-negative epoch number; each epoch has its own order.
      buckets: allowed padded lengths; a batch gets the smallest one that fits.
      pool_batches: batches per sorting pool; 1 disables length grouping.

    Returns:
      An iterator of `num_train_batches(encoded, batch_size)` batch dicts.
    """
    _check_batch_size(batch_size)
    buckets = _check_buckets(buckets)
    if seed < 0 or epoch < 0 or pool_batches < 1:
        raise ValueError(
            f"Need seed >= 0, epoch >= 0, pool_batches >= 1: {seed}, {epoch}, {pool_batches}"
        )
    if len(encoded):
        _bucket_for(int(encoded.lengths.max()), buckets)  # Raises now rather than mid-epoch.
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(encoded))
    pool = pool_batches * batch_size
    pools = [order[s : s + pool] for s in range(0, len(order), pool)]
    order = np.concatenate(
        [p[np.argsort(encoded.lengths[p], kind="stable")] for p in pools] or [order]
    )
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    batch_order = rng.permutation(len(batches))
    return (_make_batch(encoded, batches[b], batch_size, buckets) for b in batch_order)


def eval_batches(
    encoded: tokenize.Encoded, batch_size: int, *, buckets: Sequence[int]
) -> Iterator[Batch]:
    """Evaluation batches, longest examples first for little padding (and early OOMs).

    Use each batch's `index` to put predictions back in example order (see `restore_order`).
    """
    _check_batch_size(batch_size)
    buckets = _check_buckets(buckets)
    if len(encoded):
        _bucket_for(int(encoded.lengths.max()), buckets)
    order = np.argsort(-encoded.lengths.astype(np.int64), kind="stable")
    return (
        _make_batch(encoded, order[s : s + batch_size], batch_size, buckets)
        for s in range(0, len(order), batch_size)
    )


def restore_order(
    indices: Sequence[np.ndarray], values: Sequence[np.ndarray], num_examples: int
) -> np.ndarray:
    """Puts per-batch values back in example order, dropping padding rows (index -1).

    Args:
      indices: each batch's `index` field, int32 [batch].
      values: per-batch values, [batch, ...].
      num_examples: how many examples the batches came from.

    Returns:
      [num_examples, ...] values in example order.

    Raises:
      ValueError: an example is missing or appears twice.
    """
    index = np.concatenate([np.asarray(i) for i in indices])
    value = np.concatenate([np.asarray(v) for v in values])
    real = index >= 0
    index, value = index[real], value[real]
    if len(index) != num_examples or not np.array_equal(np.sort(index), np.arange(num_examples)):
        raise ValueError(
            f"The batches do not hold each of the {num_examples} examples exactly once"
        )
    out = np.empty((num_examples,) + value.shape[1:], value.dtype)
    out[index] = value
    return out


def subsample(encoded: tokenize.Encoded, fraction: float, seed: int) -> tokenize.Encoded:
    """A random subset of round(fraction * n) examples (at least 1), in their original order.

    Deterministic in `seed`, and nested: with one seed, a smaller fraction's subset lies
    inside a larger one's.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(encoded)
    if n == 0:
        raise ValueError("Cannot subsample an empty set of examples")
    k = max(1, round(fraction * n))
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:k])
    return encoded.select(keep)


def padding_fraction(batches: Iterable[Batch]) -> float:
    """Share of the token slots in `batches` that are padding (padding rows count as padding)."""
    real = total = 0
    for batch in batches:
        real += int((batch["attention_mask"] * (batch["weights"][:, None] > 0)).sum())
        total += batch["input_ids"].size
    return 1.0 - real / total if total else 0.0


def padding_report(
    encoded: tokenize.Encoded, batch_size: int, *, buckets: Sequence[int], seed: int = 0
) -> dict[str, float]:
    """Padding of one training epoch with `buckets` vs padding everything to the largest bucket.

    Returns:
      padding_fraction, padding_fraction_max_length: share of padded token slots.
      token_ratio: token slots with buckets / slots padded to the largest bucket (compute left).
    """
    buckets = _check_buckets(buckets)

    def epoch(b):
        return list(train_batches(encoded, batch_size, seed=seed, epoch=0, buckets=b))

    bucketed, full = epoch(buckets), epoch(buckets[-1:])
    slots = sum(b["input_ids"].size for b in bucketed)
    return {
        "padding_fraction": padding_fraction(bucketed),
        "padding_fraction_max_length": padding_fraction(full),
        "token_ratio": slots / sum(b["input_ids"].size for b in full),
    }
