"""Packed training batches: several examples per row, a fixed number of examples per step.

Length buckets (`fft.data.batching`) pad each batch to one of a few lengths, so a run compiles one
train step per bucket it meets (seven for CoLA) and, for short-sentence tasks, most of an epoch's
first run is compilation. Packing lays the `batch_size` examples of a step end to end into rows of
one length, so the whole run has one or two batch shapes:

    shape = packing.plan(encoded, batch_size, seed=0, epochs=3)
    for batch in packing.train_batches(encoded, batch_size, seed=0, epoch=0, shape=shape): ...

Each step still trains on exactly `batch_size` examples (the last one of an epoch on the rest), in
an order that depends only on (seed, epoch), the same on every host: a shuffle cut into steps,
then a few swaps of long for short examples between steps, so that (nearly) every step fits the
same number of rows. The model keeps the examples
of a row apart (`fft.models.bert.Packing`: block-diagonal attention, per-example positions, one
first token per example), so an example's logits are the ones it gets alone in a row.

A packed batch is a dict of numpy arrays:
  input_ids, token_type_ids: int32 [rows, length]
  segment_ids: int32 [rows, length]; s + 1 on the tokens of the row's slot s, 0 on padding
  position_ids: int32 [rows, length]; positions within each example
  cls_positions: int32 [rows, slots]; the column where slot s starts (0 for an empty slot)
  labels, weights, index: [rows * slots]; one entry per slot, row-major (weight 0 and index -1
    for an empty slot)
Every per-example field has `rows * slots` entries, so splitting the leading axis over the
devices of the 'data' mesh axis keeps each example with its row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np

from fft.data import batching, tokenize

Batch = dict[str, np.ndarray]
# Epochs simulated by `plan` to size the rows (fewer where they would exceed _PLAN_BATCHES steps);
# later epochs rarely need more, and a step that does gets a row count of its own (one more
# compilation).
_PLAN_EPOCHS = 3
_PLAN_BATCHES = 4000


@dataclasses.dataclass(frozen=True)
class PackShape:
    """The batch shapes of a packed run.

    Attributes:
      length: tokens per row.
      slots: examples per row at most.
      rows: the allowed row counts, ascending; a batch gets the smallest that fits it.
    """

    length: int
    slots: int
    rows: tuple[int, ...]

    def __post_init__(self):
        if self.length < 1 or self.slots < 1 or not self.rows or min(self.rows) < 1:
            raise ValueError(f"PackShape needs positive length, slots and rows: {self}")


def first_fit_decreasing(lengths: Sequence[int], length: int, slots: int) -> list[list[int]]:
    """Packs items into rows of `length` tokens and at most `slots` items, longest first.

    Each item goes into the first row with room for it. Returns the item positions of each row,
    each row's items in the order they were placed (longest first).

    Raises:
      ValueError: an item is longer than a row.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = int(lengths[i])
        if n > length:
            raise ValueError(f"An example has {n} tokens, more than the packed row length {length}")
        for r, room in enumerate(free):
            if n <= room and len(rows[r]) < slots:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(length - n)
    return rows


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The example positions of each step of one epoch: a seeded shuffle cut into batches."""
    batching._check_batch_size(batch_size)
    if seed < 0 or epoch < 0:
        raise ValueError(f"Need seed >= 0 and epoch >= 0: {seed}, {epoch}")
    order = np.random.default_rng([seed, epoch, 1]).permutation(n)
    return [order[s : s + batch_size] for s in range(0, n, batch_size)]


def _balance(
    batches: list[np.ndarray], lengths: np.ndarray, shape: PackShape, max_scan: int = 64
) -> list[list[list[int]]]:
    """Swaps examples between the steps of an epoch until each fits `shape.rows[0]` rows.

    A step that needs more rows trades its longest example for the shortest example of a later
    step (cyclically) that still fits afterwards. Batches keep their sizes and every example
    stays in exactly one step, so an epoch is still a permutation of the data; only which long
    examples share a step changes. A step that no swap within `max_scan` steps can fix keeps its
    examples (and gets a larger row count). Updates `batches` in place; returns each step's rows
    (`first_fit_decreasing` of its examples).
    """
    target, length, slots = shape.rows[0], shape.length, shape.slots
    packed = [first_fit_decreasing(lengths[b], length, slots) for b in batches]
    n = len(batches)
    for i in range(n):
        j, scanned = i, 0
        while len(packed[i]) > target and scanned < max_scan and n > 1:
            j, scanned = (j + 1) % n, scanned + 1
            if j == i or len(packed[j]) >= target:
                continue
            x = int(np.argmax(lengths[batches[i]]))
            y = int(np.argmin(lengths[batches[j]]))
            if lengths[batches[j][y]] >= lengths[batches[i][x]]:
                continue
            bi, bj = batches[i].copy(), batches[j].copy()
            bi[x], bj[y] = bj[y], bi[x]
            rows_j = first_fit_decreasing(lengths[bj], length, slots)
            if len(rows_j) > target:
                continue
            batches[i], batches[j] = bi, bj
            packed[i], packed[j] = first_fit_decreasing(lengths[bi], length, slots), rows_j
    return packed


def epoch_steps(
    encoded: tokenize.Encoded, batch_size: int, *, seed: int, epoch: int, shape: PackShape
) -> list[tuple[np.ndarray, list[list[int]]]]:
    """The steps of one packed epoch: each step's example positions and their rows (positions
    into that step's examples), balanced to `shape.rows[0]` rows where swaps allow."""
    batches = _epoch_batches(len(encoded), batch_size, seed, epoch)
    packed = _balance(batches, encoded.lengths, shape)
    return list(zip(batches, packed, strict=True))


def choose_length(lengths: np.ndarray, max_length: int) -> int:
    """The default row length: the smallest bucket length (`batching.bucket_lengths`) that holds
    the longest example and four of the mean one (rows of several examples pack tightly)."""
    need = max(int(lengths.max()), math.ceil(4 * float(lengths.mean())))
    for candidate in batching.bucket_lengths(max_length):
        if candidate >= need:
            return candidate
    return max_length


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def plan(
    encoded: tokenize.Encoded,
    batch_size: int,
    *,
    seed: int,
    epochs: float,
    max_length: int = 128,
    length: int = 0,
    row_multiple: int = 1,
    quantile: float = 0.8,
) -> PackShape:
    """Chooses the row length, slots per row and row counts of a packed run from its data.

    Packs the batches of the first epochs (at most 3) as `train_batches` will. `quantile` of the
    shuffled steps fit the first row count as they are; `epoch_steps` swaps examples between
    steps until (nearly) all of them do. A second row count, the most a step still needs, is
    added only if some step cannot be balanced. So a run compiles its train step once, rarely twice.

    Args:
      encoded: the training examples.
      batch_size: examples per step.
      seed, epochs: the run's data seed and length in epochs.
      max_length: the longest allowed example (the default `length` is chosen below it).
      length: tokens per row; 0 chooses one (`choose_length`).
      row_multiple: row counts are multiples of this (the size of the 'data' mesh axis).
      quantile: share of the shuffled steps that fit the first row count before balancing.
    """
    if len(encoded) == 0:
        raise ValueError("Cannot plan packed batches for an empty training set")
    if row_multiple < 1 or not 0.0 < quantile <= 1.0:
        raise ValueError(f"Need row_multiple >= 1 and quantile in (0, 1]: {row_multiple}, {quantile}")
    lengths = encoded.lengths
    length = length or choose_length(lengths, max_length)
    if int(lengths.max()) > length:
        raise ValueError(
            f"data.pack_length={length} is shorter than the longest training example "
            f"({int(lengths.max())} tokens); raise it or set it to 0 (auto)"
        )
    per_epoch = batching.num_train_batches(encoded, batch_size)
    num_epochs = max(1, min(_PLAN_EPOCHS, math.ceil(epochs), _PLAN_BATCHES // per_epoch))
    epoch_batches = [_epoch_batches(len(encoded), batch_size, seed, e) for e in range(num_epochs)]
    packed = [first_fit_decreasing(lengths[b], length, batch_size) for bs in epoch_batches for b in bs]
    slots = max(len(row) for rows in packed for row in rows)
    needed = np.array([len(rows) for rows in packed])
    main = _round_up(int(math.ceil(np.quantile(needed, quantile))), row_multiple)
    shape = PackShape(length=length, slots=slots, rows=(main,))
    # Balanced steps mostly fit `main` rows; the rest get the most any of them needs.
    most = max(len(rows) for bs in epoch_batches for rows in _balance(bs, lengths, shape))
    return PackShape(length=length, slots=slots, rows=tuple(sorted({main, _round_up(most, row_multiple)})))


def _num_rows(needed: int, shape: PackShape, row_multiple: int) -> int:
    fits = [r for r in shape.rows if r >= needed]
    return fits[0] if fits else _round_up(needed, row_multiple)


def epoch_padding(
    encoded: tokenize.Encoded, batch_size: int, *, seed: int, epoch: int, shape: PackShape,
    row_multiple: int = 1,
) -> tuple[int, int]:
    """(token positions, example tokens) of one packed epoch, without building its arrays."""
    steps = epoch_steps(encoded, batch_size, seed=seed, epoch=epoch, shape=shape)
    positions = sum(_num_rows(len(rows), shape, row_multiple) for _, rows in steps) * shape.length
    return positions, int(encoded.lengths.sum())


def pack_batch(
    encoded: tokenize.Encoded,
    idx: np.ndarray,
    shape: PackShape,
    row_multiple: int = 1,
    rows: list[list[int]] | None = None,
) -> Batch:
    """Packs the examples `idx` (one step) into a batch of `shape` (see the module docstring).

    `rows` (positions into `idx` per row) defaults to `first_fit_decreasing`. A step that needs
    more rows than `shape.rows` allows gets its own row count (a multiple of `row_multiple`)."""
    if rows is None:
        rows = first_fit_decreasing(encoded.lengths[idx], shape.length, shape.slots)
    num_rows = _num_rows(len(rows), shape, row_multiple)
    L, S = shape.length, shape.slots
    input_ids = np.full((num_rows, L), encoded.pad_id, np.int32)
    token_type_ids = np.zeros((num_rows, L), np.int32)
    segment_ids = np.zeros((num_rows, L), np.int32)
    position_ids = np.zeros((num_rows, L), np.int32)
    cls_positions = np.zeros((num_rows, S), np.int32)
    labels = np.zeros(num_rows * S, encoded.labels.dtype)
    weights = np.zeros(num_rows * S, np.float32)
    index = np.full(num_rows * S, -1, np.int32)
    for r, items in enumerate(rows):
        col = 0
        for s, item in enumerate(items):
            i = int(idx[item])
            k = int(encoded.lengths[i])
            input_ids[r, col : col + k] = encoded.input_ids[i]
            token_type_ids[r, col : col + k] = encoded.token_type_ids[i]
            segment_ids[r, col : col + k] = s + 1
            position_ids[r, col : col + k] = np.arange(k)
            cls_positions[r, s] = col
            labels[r * S + s] = encoded.labels[i]
            weights[r * S + s] = 1.0
            index[r * S + s] = i
            col += k
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "segment_ids": segment_ids,
        "position_ids": position_ids,
        "cls_positions": cls_positions,
        "labels": labels,
        "weights": weights,
        "index": index,
    }


def train_batches(
    encoded: tokenize.Encoded,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shape: PackShape,
    row_multiple: int = 1,
) -> Iterator[Batch]:
    """One epoch of packed training batches of `batch_size` examples each.

    Every example appears exactly once; the order depends only on (seed, epoch). There are
    `batching.num_train_batches(encoded, batch_size)` batches, as with length buckets."""
    if len(encoded) and int(encoded.lengths.max()) > shape.length:
        raise ValueError(
            f"An example has {int(encoded.lengths.max())} tokens, more than the packed row "
            f"length {shape.length}"
        )
    steps = epoch_steps(encoded, batch_size, seed=seed, epoch=epoch, shape=shape)
    return (pack_batch(encoded, idx, shape, row_multiple, rows) for idx, rows in steps)


def is_packed(batch: Batch) -> bool:
    """Whether `batch` is a packed batch (has `segment_ids`)."""
    return "segment_ids" in batch


def token_slots(batches) -> tuple[int, int]:
    """(token positions computed, real example tokens) over `batches`, packed or bucketed."""
    slots = real = 0
    for batch in batches:
        slots += batch["input_ids"].size
        if is_packed(batch):
            real += int((batch["segment_ids"] > 0).sum())
        else:
            real += int((batch["attention_mask"] * (batch["weights"][:, None] > 0)).sum())
    return slots, real
