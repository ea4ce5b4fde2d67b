"""A supermask task stored as bits: one bit per masked weight plus the float32 head.

:func:`export_task` writes two zip archives in the npz layout (``numpy.load`` can open them):
  * ``task.npz``: members stored uncompressed;
  * ``task.xz.npz``: the same members, each LZMA-compressed (stdlib ``zipfile.ZIP_LZMA``).
Members:
  ``meta.json``: format, version, the :class:`~fft.supermask.MaskConfig`, per masked tensor its
    shape and number of kept entries, per head leaf its shape, and the caller's metadata;
  ``mask/<path>.npy``: uint8 ``numpy.packbits`` of the flattened (C-order) mask, big bit order,
    zero-padded to whole bytes;
  ``head/<path>.npy``: the head leaf in float32.
Files are written to a temporary name in the same folder and renamed (``os.replace``), so a
reader never sees half a file. :func:`import_task` rebuilds the dense parameters from the
pretrained tree: ``pretrained * mask`` computed exactly as :func:`fft.supermask.apply_masks` does
(a select, masked entries +0.0), so the result is bit-identical to training's forward pass.
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fft import supermask, tree_paths

FORMAT = "fft-supermask-task"
VERSION = 1
PACKED_NAME = "task.npz"
COMPRESSED_NAME = "task.xz.npz"
_META = "meta.json"
_MASK = "mask/"
_HEAD = "head/"


class Task(NamedTuple):
    """A task file's content: bool masks and float32 head leaves keyed by '/'-joined paths."""

    masks: dict[str, np.ndarray]
    head: dict[str, np.ndarray]
    config: supermask.MaskConfig
    metadata: dict[str, Any]


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _write_zip_atomic(path: pathlib.Path, members: Mapping[str, bytes], compression: int) -> None:
    """Writes a zip with ``members`` to ``path`` through a temporary file and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=compression) as zf:
                for name, data in members.items():
                    zf.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def host_masks(scores: Mapping[str, Any], config: supermask.MaskConfig) -> dict[str, np.ndarray]:
    """``{path: bool numpy mask}`` from scores (the forward masks of :func:`supermask.masks`)."""
    flat = tree_paths.flatten(jax.device_get(supermask.masks(scores, config)))
    return {p: np.asarray(m) > 0.5 for p, m in flat.items()}


def export_task(
    path_dir: str | os.PathLike,
    scores: Mapping[str, Any],
    head: Mapping[str, Any],
    config: supermask.MaskConfig,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Writes ``task.npz`` and ``task.xz.npz`` into ``path_dir`` (created if needed).

    Args:
      path_dir: output folder.
      scores: the trained scores (``trainable['scores']``).
      head: the head subtrees (``trainable['head']``, e.g. ``{'classifier': {...}}``).
      config: the mask config the scores were trained with.
      metadata: JSON-serialisable extras (task name, model, metrics...).

    Returns:
      ``masked_entries``, ``head_entries``; ``dense_bytes`` (the masked tensors and the head as
      float32); ``packed_bytes`` and ``compressed_bytes`` (the two files' sizes); ``mask_bytes_*``
      (the mask members alone: the packed payload, and the members' compressed sizes, npy
      headers included) and ``bits_per_entry_*`` = 8 * ``mask_bytes_*`` / ``masked_entries``.
    """
    out = pathlib.Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    masks = host_masks(scores, config)
    head_flat = {
        p: np.asarray(jax.device_get(x), np.float32) for p, x in tree_paths.flatten(head).items()
    }
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "masks": {p: {"shape": list(m.shape), "kept": int(m.sum())} for p, m in masks.items()},
        "head": {p: {"shape": list(x.shape)} for p, x in head_flat.items()},
        "metadata": dict(metadata or {}),
    }
    packed = {p: np.packbits(m.reshape(-1)) for p, m in masks.items()}
    members = {_META: json.dumps(meta, indent=1, sort_keys=True).encode()}
    members.update({f"{_MASK}{p}.npy": _npy_bytes(b) for p, b in packed.items()})
    members.update({f"{_HEAD}{p}.npy": _npy_bytes(x) for p, x in head_flat.items()})
    _write_zip_atomic(out / PACKED_NAME, members, zipfile.ZIP_STORED)
    _write_zip_atomic(out / COMPRESSED_NAME, members, zipfile.ZIP_LZMA)

    with zipfile.ZipFile(out / COMPRESSED_NAME) as zf:
        mask_compressed = sum(
            i.compress_size for i in zf.infolist() if i.filename.startswith(_MASK)
        )
    masked_entries = sum(m.size for m in masks.values())
    head_entries = sum(x.size for x in head_flat.values())
    mask_packed = sum(b.size for b in packed.values())
    per_entry = 8.0 / max(masked_entries, 1)
    return {
        "masked_entries": masked_entries,
        "head_entries": head_entries,
        "dense_bytes": 4 * (masked_entries + head_entries),
        "packed_bytes": (out / PACKED_NAME).stat().st_size,
        "compressed_bytes": (out / COMPRESSED_NAME).stat().st_size,
        "mask_bytes_packed": mask_packed,
        "mask_bytes_compressed": mask_compressed,
        "bits_per_entry_packed": mask_packed * per_entry,
        "bits_per_entry_compressed": mask_compressed * per_entry,
    }


def _resolve(path: str | os.PathLike) -> pathlib.Path:
    """A task file, or a folder holding ``task.npz`` (preferred) or ``task.xz.npz``."""
    path = pathlib.Path(path)
    if path.is_dir():
        for name in (PACKED_NAME, COMPRESSED_NAME):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: holds neither {PACKED_NAME} nor {COMPRESSED_NAME}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such task file")
    return path


def read_task(path: str | os.PathLike) -> Task:
    """Reads a task file (either variant) or a folder from :func:`export_task`.

    Raises:
      ValueError: not a task file, or a mask member whose size does not fit its shape.
    """
    path = _resolve(path)
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read(_META))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{path}: not a {FORMAT} v{VERSION} file")
        masks, head = {}, {}
        for p, info in meta["masks"].items():
            shape = tuple(info["shape"])
            size = math.prod(shape)
            bits = np.lib.format.read_array(io.BytesIO(zf.read(f"{_MASK}{p}.npy")))
            if bits.dtype != np.uint8 or bits.size != (size + 7) // 8:
                raise ValueError(
                    f"{path}: mask '{p}' has {bits.size} bytes, shape {shape} needs "
                    f"{(size + 7) // 8}"
                )
            masks[p] = np.unpackbits(bits, count=size).astype(bool).reshape(shape)
        for p in meta["head"]:
            head[p] = np.lib.format.read_array(io.BytesIO(zf.read(f"{_HEAD}{p}.npy")))
    config = supermask.MaskConfig.from_dict(meta["config"])
    return Task(masks, head, config, meta["metadata"])


def import_task(path: str | os.PathLike, pretrained: Mapping[str, Any]) -> dict[str, Any]:
    """The dense parameter tree of a stored task.

    Each masked leaf becomes ``pretrained * mask`` (in the pretrained dtype, masked entries +0.0,
    through :func:`fft.supermask.mask_weight` as in :func:`fft.supermask.apply_masks`); the stored
    head replaces the top-level subtrees it names (e.g. ``classifier``) or is added; every other
    leaf of ``pretrained`` passes through.

    Raises:
      ValueError: naming the path, when a masked tensor is missing from ``pretrained`` or has
        another shape there.
    """
    task = read_task(path)
    flat = tree_paths.flatten(pretrained)
    for p, mask in task.masks.items():
        if p not in flat:
            raise ValueError(f"Task mask '{p}' has no tensor in the pretrained tree")
        if tuple(np.shape(flat[p])) != mask.shape:
            raise ValueError(
                f"Shape mismatch at '{p}': pretrained {tuple(np.shape(flat[p]))}, task mask "
                f"{mask.shape}"
            )
        flat[p] = supermask.mask_weight(jnp.asarray(flat[p]), jnp.asarray(mask))
    head_tops = {p.split("/", 1)[0] for p in task.head}
    flat = {p: x for p, x in flat.items() if p.split("/", 1)[0] not in head_tops}
    flat.update({p: jnp.asarray(x) for p, x in task.head.items()})
    return tree_paths.unflatten(flat)
