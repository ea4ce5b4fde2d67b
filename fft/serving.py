"""Serve many supermask tasks from one shared pretrained backbone.

A supermask task is a set of bit masks over some of the backbone's tensors plus a small head
(fft.mask_store). To answer a batch that mixes examples of several tasks, `MultiTaskServer` keeps
on the device one copy of the backbone, every task's masks *bit-packed* (1 bit per masked entry)
and the heads stacked. The jitted call groups the batch by task (`group_by_task`, on the host)
and runs the tasks one after another inside one program (`lax.map`): for task t the masks are
unpacked and applied to the backbone on the fly, so only one task's masked weights exist at a
time, as temporaries, and no dense per-task model is ever stored.

Heads with fewer labels than the widest one are zero-padded; `logits` returns each example's own
task's logits (sliced to that task's number of labels by the caller if they differ).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fft import mask_store, supermask, tree_paths
from fft.steps import merge_trees


@dataclasses.dataclass(frozen=True)
class TaskStack:
    """Masks and heads of T tasks, stacked along a leading task axis (host NumPy).

    Attributes:
      packed: path -> uint8 [T, ceil(size / 8)] bit-packed masks (np.packbits of the flat mask).
      shapes: path -> the masked tensor's shape.
      heads: head tree whose leaves are [T, ...]; label axes zero-padded to the widest head.
      num_labels: labels of each task's head.
      names: task names.
    """

    packed: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    heads: dict[str, Any]
    num_labels: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.packed.values()) + sum(
            x.nbytes for x in jax.tree.leaves(self.heads)
        )


def stack_tasks(tasks: Sequence[mask_store.Task], names: Sequence[str]) -> TaskStack:
    """Stacks tasks that mask the same tensors (heads may differ in their number of labels)."""
    paths = sorted(tasks[0].masks)
    for name, task in zip(names, tasks):
        if sorted(task.masks) != paths:
            raise ValueError(f"Task {name!r} masks other tensors than task {names[0]!r}")
        if sorted(task.head) != sorted(tasks[0].head):
            raise ValueError(f"Task {name!r} has another head structure than task {names[0]!r}")
    packed = {p: np.stack([np.packbits(t.masks[p].reshape(-1)) for t in tasks]) for p in paths}
    shapes = {p: tasks[0].masks[p].shape for p in paths}
    bias_path = next(p for p in tasks[0].head if p.endswith("classifier/bias"))
    num_labels = tuple(int(t.head[bias_path].shape[-1]) for t in tasks)
    width = max(num_labels)
    heads = {}
    for p in tasks[0].head:
        leaves = []
        for t in tasks:
            x = np.asarray(t.head[p], np.float32)
            if p.startswith("classifier/"):  # The label axis is the last one.
                x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])
            leaves.append(x)
        heads[p] = np.stack(leaves)
    return TaskStack(packed, shapes, tree_paths.unflatten(heads), num_labels, tuple(names))


def _unpack(packed_row: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    size = math.prod(shape)
    return jnp.unpackbits(packed_row, count=size).astype(bool).reshape(shape)


def task_params(backbone: Mapping[str, Any], packed: Mapping[str, jax.Array], shapes, head) -> dict:
    """One task's parameters: masked backbone leaves (+0.0 where masked) and its head, which
    replaces the backbone's subtrees of the same names (e.g. a trained `pooler`)."""
    flat = {p: x for p, x in tree_paths.flatten(backbone).items() if p.split("/", 1)[0] not in head}
    for p, row in packed.items():
        flat[p] = supermask.mask_weight(flat[p], _unpack(row, shapes[p]))
    return merge_trees(dict(head), tree_paths.unflatten(flat))


def multi_task_logits(model, backbone, packed, heads, batches, *, shapes) -> jax.Array:
    """Logits [T, B, width] for per-task sub-batches [T, B, L], one task at a time (lax.map)."""

    def one(args):
        packed_t, head_t, batch_t = args
        params = task_params(backbone, packed_t, shapes, head_t)
        return model.apply({"params": params}, batch_t["input_ids"], batch_t["attention_mask"],
                           batch_t["token_type_ids"], deterministic=True)

    return jax.lax.map(one, (packed, heads, batches))


def group_by_task(batch: Mapping[str, np.ndarray], task_ids: np.ndarray, num_tasks: int,
                  rows_per_task: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Splits a mixed batch into [T, rows_per_task, ...] sub-batches (padding rows repeat row 0
    of the batch with its mask kept) and returns (grouped, position) where position[i] is
    (task, row) flattened as task * rows_per_task + row for example i."""
    position = np.zeros(len(task_ids), np.int64)
    grouped = {k: np.repeat(v[None, :1], num_tasks * rows_per_task, 0).reshape(
        (num_tasks, rows_per_task) + v.shape[1:]) for k, v in batch.items()}
    for t in range(num_tasks):
        rows = np.flatnonzero(task_ids == t)
        if len(rows) > rows_per_task:
            raise ValueError(f"task {t} has {len(rows)} examples in the batch, more than {rows_per_task}")
        for k, v in batch.items():
            grouped[k][t, : len(rows)] = v[rows]
        position[rows] = t * rows_per_task + np.arange(len(rows))
    return grouped, position


class MultiTaskServer:
    """One backbone on the device, T tasks as packed masks + heads; `logits(batch, task_ids)`."""

    def __init__(self, model, backbone: Mapping[str, Any], stack: TaskStack, rows_per_task: int):
        self.model, self.stack, self.rows_per_task = model, stack, rows_per_task
        self.backbone = jax.device_put(backbone)
        self.packed = jax.device_put(stack.packed)
        self.heads = jax.device_put(stack.heads)
        self._fn = jax.jit(lambda bb, pk, hd, bt: multi_task_logits(
            model, bb, pk, hd, bt, shapes=stack.shapes))

    def lower(self, batch: Mapping[str, np.ndarray], task_ids: np.ndarray):
        grouped, _ = group_by_task(batch, task_ids, len(self.stack.names), self.rows_per_task)
        return self._fn.lower(self.backbone, self.packed, self.heads, grouped)

    def logits(self, batch: Mapping[str, np.ndarray], task_ids: np.ndarray) -> np.ndarray:
        """[batch, width] logits of each example under its own task's masks and head."""
        grouped, position = group_by_task(batch, task_ids, len(self.stack.names), self.rows_per_task)
        out = jax.device_get(self._fn(self.backbone, self.packed, self.heads, jax.device_put(grouped)))
        return out.reshape(-1, out.shape[-1])[position]
