"""Many tasks on one frozen backbone in one batch: each example uses its own task's parameters.

For every method that freezes the backbone and has a :class:`fft.methods.base.Serving` (LoRA,
adapters, BitFit and the other partitions that leave the big matrices frozen), a task is a small
trained tree. :class:`MultiTaskServer` keeps one copy of the backbone and the T tasks' trained
leaves stacked along a task axis. In the jitted call, each example's leaves are gathered by its
task id, so every trained leaf gets a leading batch axis, and the modules that own them compute
per example: LoRA's low-rank path (``x A_b B_b``, beside the Dense), adapters (``fft.models.bert.adapter_apply``),
Dense layers (head, pooler, biases: ``x W_b + b_b``) and LayerNorms (``scale_b``, ``bias_b``),
all through flax method interception, the model code unchanged. No dense per-task model is ever
formed, and the cost does not depend on how the tasks mix within a batch.

Tasks may differ in LoRA rank (factors are zero-padded to the largest) and in the number of
labels (heads zero-padded to the widest; :meth:`MultiTaskServer.logits` returns that width, and
each task's own labels are the first ``num_labels[t]`` columns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fft import tree_paths
from fft.methods import base, lora
from fft.models import bert

_PADDED_AXES = {"a": -1, "b": -2}  # LoRA factors: A [in, r] pads r last, B [r, out] pads r first.


@dataclasses.dataclass(frozen=True)
class TaskBank:
    """The trained leaves of T tasks, stacked: path -> [T, ...] (host NumPy)."""

    leaves: dict[str, np.ndarray]
    num_labels: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.leaves.values())


def _pad_to(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return np.pad(x, pad)


def stack_tasks(trainables: Sequence[Mapping[str, Any]], names: Sequence[str], head_keys: Sequence[str]) -> TaskBank:
    """Stacks tasks' trained trees (as each method's ``Serving.prepare`` gives them).

    Raises:
      ValueError: the tasks train different leaves, or a leaf's shape differs other than in a
        LoRA rank or a head's number of labels (the message names the leaf and the tasks).
    """
    flats = [{p: np.asarray(v, np.float32) for p, v in tree_paths.flatten(t).items()} for t in trainables]
    paths = list(flats[0])
    for name, flat in zip(names, flats):
        if sorted(flat) != sorted(paths):
            diff = sorted(set(flat) ^ set(paths))[:4]
            raise ValueError(f"task {name!r} trains other leaves than task {names[0]!r} (e.g. {diff})")
    head = tuple(head_keys)
    label_paths = [p for p in paths if p.split("/", 1)[0] == head[-1]]
    num_labels = tuple(int(flat[label_paths[0]].shape[-1]) for flat in flats)
    leaves = {}
    for p in paths:
        xs = [flat[p] for flat in flats]
        leaf = p.rsplit("/", 1)[-1]
        if p in label_paths:  # The label axis is the last one.
            width = max(x.shape[-1] for x in xs)
            xs = [_pad_to(x, -1, width) for x in xs]
        elif p.startswith("lora/") and leaf in _PADDED_AXES:
            axis = _PADDED_AXES[leaf]
            rank = max(x.shape[axis] for x in xs)
            xs = [_pad_to(x, axis, rank) for x in xs]
        shapes = {x.shape for x in xs}
        if len(shapes) > 1:
            raise ValueError(f"leaf '{p}' has different shapes across tasks: {dict(zip(names, [x.shape for x in xs]))}")
        leaves[p] = np.stack(xs)
    return TaskBank(leaves, num_labels, tuple(names))


def _owner(path: str) -> tuple[str, str]:
    """(module that computes with the leaf, the leaf's path inside it). Adapter leaves belong to
    their Adapter module; LoRA factors (``lora/<dense>/{a,b}``) to their Dense as ``lora_a`` and
    ``lora_b``; any other leaf to the module holding it (Dense, LayerNorm)."""
    parts = path.split("/")
    if parts[0] == "lora":
        return "/".join(parts[1:-1]), f"lora_{parts[-1]}"
    if "adapter" in parts[:-1]:
        i = parts.index("adapter")
        return "/".join(parts[: i + 1]), "/".join(parts[i + 1 :])
    return "/".join(parts[:-1]), parts[-1]


def _per_example(x: jax.Array, like: jax.Array) -> jax.Array:
    """A per-example vector [B, H] broadcast against activations [B, ..., H]."""
    return x.reshape(x.shape[0], *[1] * (like.ndim - 2), x.shape[-1])


def interceptor(owned: Mapping[str, Mapping[str, jax.Array]]):
    """A flax interceptor computing each owning module with its per-example leaves."""

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        leaves = owned.get("/".join(module.scope.path)) if context.method_name == "__call__" else None
        if leaves is None:
            return next_fun(*args, **kwargs)
        if isinstance(module, bert.Adapter):
            params = tree_paths.unflatten(dict(leaves))
            return bert.adapter_apply(params, args[0].astype(module.dtype), module.spec.activation)
        shared = module.variables.get("params", {})
        if isinstance(module, nn.Dense):
            x = args[0].astype(module.dtype)
            if "kernel" in leaves or "bias" in leaves:
                kernel = leaves.get("kernel", shared.get("kernel"))
                bias = leaves.get("bias", shared.get("bias"))
                if kernel.ndim == 3:
                    y = jnp.einsum("b...i,bio->b...o", x, kernel.astype(module.dtype))
                else:
                    y = jnp.matmul(x, kernel.astype(module.dtype))
                if bias is not None:
                    bias = bias.astype(module.dtype)
                    y = y + (_per_example(bias, y) if bias.ndim == 2 else bias)
            else:
                y = next_fun(*args, **kwargs)
            if "lora_a" in leaves:  # Scale folded into B (Serving.prepare).
                y = y + lora.low_rank(x, leaves["lora_a"], leaves["lora_b"]).astype(y.dtype)
            return y
        if isinstance(module, nn.LayerNorm):
            x = args[0].astype(jnp.float32)
            mean = jnp.mean(x, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            y = (x - mean) * jax.lax.rsqrt(var + module.epsilon)
            scale = leaves.get("scale", shared.get("scale"))
            bias = leaves.get("bias", shared.get("bias"))
            y = y * (_per_example(scale, y) if scale.ndim == 2 else scale)
            y = y + (_per_example(bias, y) if bias.ndim == 2 else bias)
            return y.astype(module.dtype or jnp.float32)
        raise ValueError(
            f"per-task leaves {sorted(leaves)} of module '{'/'.join(module.scope.path)}' "
            f"({type(module).__name__}): multi-task serving handles Dense, LayerNorm and Adapter"
        )

    return intercept


def multi_task_logits(serving: base.Serving, frozen, stacked: Mapping[str, jax.Array], batch, task_ids):
    """Logits [B, width]: example i under task ``task_ids[i]`` (jittable)."""
    per_example = {p: x[task_ids] for p, x in stacked.items()}
    owned: dict[str, dict[str, jax.Array]] = {}
    for p, x in per_example.items():
        module, leaf = _owner(p)
        owned.setdefault(module, {})[leaf] = x
    trainable = tree_paths.unflatten(per_example)
    params = serving.assemble(trainable, frozen)
    with nn.intercept_methods(interceptor(owned)):
        return serving.model.apply(
            {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
            deterministic=True,
        )


def chunked_logits(serving: base.Serving, frozen, stacked, batch, task_ids, rows: int):
    """`multi_task_logits` over consecutive chunks of `rows` examples (`lax.map`): the per-example
    weight copies and activations of one chunk at a time, and cache-sized matmuls on CPUs."""
    n = task_ids.shape[0]
    if not rows or rows >= n:
        return multi_task_logits(serving, frozen, stacked, batch, task_ids)
    if n % rows:
        raise ValueError(f"batch of {n} examples does not split into chunks of {rows} rows")

    def split(x):
        return x.reshape(n // rows, rows, *x.shape[1:])

    def one(args):
        b, ids = args
        return multi_task_logits(serving, frozen, stacked, b, ids)

    out = jax.lax.map(one, (jax.tree.map(split, dict(batch)), split(task_ids)))
    return out.reshape(n, out.shape[-1])


class MultiTaskServer:
    """One frozen backbone on the device, T tasks' trained leaves stacked; `logits(batch, ids)`.

    `rows_per_call` > 0 (default 8) runs a batch in chunks of that many examples inside the one
    jitted call (padded to a multiple): the per-example weight copies and activations of one chunk
    at a time, and on CPUs cache-sized matmuls (results/bench_multitask.json: 1.0-1.3x the dense
    task models one by one, vs 0.8-1.0x for the whole batch at once). 0: the whole batch."""

    def __init__(self, frozen: Mapping[str, Any], tasks: Sequence[tuple[base.Method, Any]], names: Sequence[str],
                 rows_per_call: int = 8):
        """`tasks`: (method, trained tree) per task, the methods built on one backbone whose
        frozen tree is `frozen`; the first task's method gives the model (tasks differ only in
        their trained leaves, LoRA rank/scale and number of labels)."""
        for method, _ in tasks:
            if method.serving is None:
                raise ValueError(f"method {method.name!r} has no per-example serving (see fft.serving for masks)")
        self.serving = serving = tasks[0][0].serving
        prepared = [method.serving.prepare(trainable) for method, trainable in tasks]
        self.bank = stack_tasks(prepared, names, base.head_keys(tasks[0][0].model))
        self.frozen = jax.device_put(frozen)
        self.stacked = jax.device_put(self.bank.leaves)
        self.rows_per_call = rows_per_call
        self._fn = jax.jit(lambda fr, st, b, ids: chunked_logits(serving, fr, st, b, ids, rows_per_call))

    def _padded(self, batch: Mapping[str, np.ndarray], task_ids) -> tuple[dict, np.ndarray, int]:
        """The model inputs and task ids padded (repeating row 0) to a multiple of rows_per_call."""
        batch = {k: np.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
        task_ids = np.asarray(task_ids, np.int32)
        n, rows = len(task_ids), self.rows_per_call
        if n != len(batch["input_ids"]):
            raise ValueError(f"{n} task ids for a batch of {len(batch['input_ids'])} examples")
        bad = task_ids[(task_ids < 0) | (task_ids >= len(self.bank.names))]
        if bad.size:
            raise ValueError(f"task id {int(bad[0])} out of range: the server holds {len(self.bank.names)} tasks")
        extra = (-n) % rows if rows else 0
        if extra:
            batch = {k: np.concatenate([v, np.repeat(v[:1], extra, 0)]) for k, v in batch.items()}
            task_ids = np.concatenate([task_ids, np.repeat(task_ids[:1], extra)])
        return batch, task_ids, n

    def lower(self, batch: Mapping[str, np.ndarray], task_ids: np.ndarray):
        batch, task_ids, _ = self._padded(batch, task_ids)
        return self._fn.lower(self.frozen, self.stacked, batch, task_ids)

    def logits(self, batch: Mapping[str, np.ndarray], task_ids: np.ndarray) -> np.ndarray:
        """[batch, width] logits of each example under its own task."""
        batch, task_ids, n = self._padded(batch, task_ids)
        return np.asarray(jax.device_get(self._fn(self.frozen, self.stacked, batch, task_ids)))[:n]
