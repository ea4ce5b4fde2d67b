"""Task deltas: a fine-tuning run stored as only the leaves it trained.

A run that trains part of the model (a head, biases, a few layers; see :mod:`fft.partition`)
needs to keep only its trainable tree: the rest is the pretrained checkpoint. A delta is a
safetensors file whose keys are '/'-joined parameter paths (``encoder/layer_3/output/dense/bias``)
and whose string metadata records what it applies to (base model, preset, task, ...).
:func:`apply_delta` rebuilds the full tree from the pretrained one.

Leaves keep their dtype (bfloat16 included) and are saved bit-exactly. Files are written to a
temporary file in the target directory, flushed to disk and renamed over the target, so a crash
never leaves a half-written delta under the final name.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from fft import errors, tree_paths

DEFAULT_ALLOW_NEW = r"(pre_classifier|classifier)/.*"
_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


class DeltaError(errors.FftError, ValueError):
    """A delta does not fit the tree it is applied to, or cannot be written."""


def _flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`fft.tree_paths.flatten`, with a bad key reported as a :class:`DeltaError`."""
    try:
        return tree_paths.flatten(tree)
    except ValueError as e:
        raise DeltaError(str(e)) from None


def _nbytes(x: Any) -> int:
    dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
    return math.prod(np.shape(x)) * np.dtype(dtype).itemsize


def tree_bytes(tree: Any) -> int:
    """Bytes the leaves of a tree occupy (reads shapes and dtypes only)."""
    return sum(_nbytes(x) for x in jax.tree.leaves(tree))


def _c_contiguous(x: np.ndarray) -> np.ndarray:
    """``x`` in C order (``np.ascontiguousarray`` would turn 0-d arrays into 1-d ones)."""
    return x if x.flags.c_contiguous else x.copy(order="C")


def export_delta(
    trainable: Mapping[str, Any],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Writes the trainable leaves to a safetensors file, atomically.

    Args:
      trainable: nested dict of arrays (NumPy or JAX, possibly sharded: fetched to the host).
      path: the file to write; its directory must exist.
      metadata: string key/values stored in the file header (e.g. base model, preset).

    Returns:
      The size of the written file in bytes.

    Raises:
      DeltaError: an empty tree, a bad key, or non-string metadata.
    """
    flat = _flatten(trainable)
    if not flat:
        raise DeltaError("the delta has no leaves")
    metadata = dict(metadata or {})
    bad = {k: v for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise DeltaError(f"metadata keys and values must be strings; got {bad!r}")
    host = jax.device_get(flat)
    tensors = {k: _c_contiguous(np.asarray(v)) for k, v in host.items()}
    supported = set(map(np.dtype, _DTYPES.values()))
    for key, value in tensors.items():
        if value.dtype not in supported:
            raise DeltaError(f"leaf '{key}' has dtype {value.dtype}; safetensors cannot store it")
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        safetensors.numpy.save_file(tensors, tmp, metadata=metadata or None)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return os.path.getsize(path)


def load_delta(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Reads a delta file.

    Returns:
      (nested dict of NumPy arrays, metadata dict; empty when the file has none).

    Raises:
      DeltaError: a tensor has an unsupported dtype, or one key lies under another's leaf.
    """
    with open(path, "rb") as f:
        raw = f.read()
    flat = {}
    for key, info in safetensors.deserialize(raw):
        if info["dtype"] not in _DTYPES:
            raise DeltaError(f"{path}: tensor '{key}' has unsupported dtype {info['dtype']}")
        arr = np.frombuffer(info["data"], dtype=_DTYPES[info["dtype"]])
        flat[key] = arr.reshape(info["shape"])
    with safetensors.safe_open(os.fspath(path), framework="numpy") as f:
        metadata = dict(f.metadata() or {})
    flat = {k: flat[k] for k in sorted(flat)}
    try:
        return tree_paths.unflatten(flat), metadata
    except ValueError as e:
        raise DeltaError(f"{path}: {e}") from None


def _spec(x: Any) -> str:
    return f"shape {tuple(np.shape(x))} dtype {np.dtype(x.dtype).name}"


def _replace(tree: Mapping[str, Any], parts: list[str], value: Any, depth: int = 0) -> dict:
    """A copy of ``tree`` with the leaf at ``parts[depth:]`` set; copies only the dicts on the way.

    ``parts`` is the whole path; ``tree`` is the sub-dict at ``parts[:depth]``.
    """
    out, key = dict(tree), parts[depth]
    if depth == len(parts) - 1:
        if isinstance(out.get(key), Mapping):
            raise DeltaError(f"delta leaf '{'/'.join(parts)}' is a module in the pretrained tree")
        out[key] = value
        return out
    child = out.get(key, {})
    if not isinstance(child, Mapping):
        raise DeltaError(
            f"delta leaf '{'/'.join(parts)}' lies under the pretrained leaf "
            f"'{'/'.join(parts[: depth + 1])}'"
        )
    out[key] = _replace(child, parts, value, depth + 1)
    return out


def apply_delta(
    pretrained: Mapping[str, Any],
    delta: Mapping[str, Any],
    *,
    allow_new: str | None = DEFAULT_ALLOW_NEW,
) -> dict[str, Any]:
    """The full tree: ``pretrained`` with the leaves named in ``delta`` replaced.

    Args:
      pretrained: nested dict of the base model's parameters.
      delta: nested dict of trained leaves (e.g. from :func:`load_delta`).
      allow_new: regex of paths that may be absent from ``pretrained`` (a freshly initialised
        task head); None allows none.

    Returns:
      A new nested dict; neither input is modified (untouched sub-dicts and leaves are shared).

    Raises:
      DeltaError: a delta leaf is missing from ``pretrained`` (and not allowed new), or differs
        from it in shape or dtype; the message names the path.
    """
    flat_pre = _flatten(pretrained)
    new = re.compile(allow_new) if allow_new is not None else None
    result: dict[str, Any] = dict(pretrained)
    for path, value in _flatten(delta).items():
        if path in flat_pre:
            if _spec(flat_pre[path]) != _spec(value):
                want = _spec(flat_pre[path])
                raise DeltaError(f"delta leaf '{path}' has {_spec(value)}; pretrained has {want}")
        elif new is None or not new.fullmatch(path):
            raise DeltaError(
                f"delta leaf '{path}' is not in the pretrained tree (new leaves allowed only "
                f"for paths matching {allow_new!r})"
            )
        result = _replace(result, path.split("/"), value)
    return result
