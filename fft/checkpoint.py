"""Atomic, resumable, verified checkpoints of the mutable training state with orbax.

Only what changes during training is saved (trainable params, optimizer state, step); the frozen
pretrained weights are reloaded from the model source. Orbax writes each step into a temporary
folder and renames it when complete, so an interrupted save never leaves a half checkpoint.

What a disk can still do to a finished step (a truncated or overwritten file, a flipped bit, a
deleted metadata file, an emptied folder) is caught on restore:

  * Every save also writes `<workdir>/checkpoint_fingerprints/<step>.json`: one 32-bit fingerprint
    per array, computed on the devices (`fingerprints`), written before orbax commits the step.
  * `restore_latest` tries the steps newest first. A step that does not read, or whose arrays do
    not match their fingerprints, is moved to `<workdir>/damaged_checkpoints/<step>` (nothing is
    deleted) with one warning, and the next older step is tried. Steps saved without fingerprints
    (older fft) restore unverified.
  * A step that reads but holds another state layout (another model size or method) is not damage:
    `CheckpointError` names the first differing leaf, and nothing is moved.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pathlib
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from fft import console, errors, tree_paths

FINGERPRINTS = "checkpoint_fingerprints"  # Sibling of checkpoints/: orbax never looks there.
DAMAGED = "damaged_checkpoints"  # Where damaged steps are moved, also a sibling of checkpoints/.
ALGORITHM = "u32 sum of words times odd position hashes"  # Recorded with fingerprints (_fingerprint).


def make_manager(
    workdir: str | pathlib.Path, config: ml_collections.ConfigDict
) -> ocp.CheckpointManager:
    """A CheckpointManager in `<workdir>/checkpoints` saving every `config.every_steps` steps."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(config.every_steps), 1),
        max_to_keep=config.max_to_keep,
        create=True,
        cleanup_tmp_directories=True,  # Folders of saves cut short are removed here.
    )
    directory = pathlib.Path(workdir).resolve() / "checkpoints"
    with _quiet():
        return _manager(directory, options)


def _manager(directory: pathlib.Path, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
    # One item handler fixes the single-item layout (`<step>/default`) up front; orbax otherwise
    # infers it from the first step it reads, and an emptied step folder would turn it off.
    handler = ocp.StandardCheckpointHandler()
    return ocp.CheckpointManager(directory, item_handlers=handler, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> bool:
    """Saves `state` at `step` if due (or `force`) with its fingerprints; asynchronous (see
    `manager.wait_until_finished`). All processes call it; process 0 writes the fingerprints."""
    if not (force or manager.should_save(step)):
        return False
    directory = pathlib.Path(manager.directory)
    if step not in manager.all_steps():  # Else orbax refuses below; keep that step's file.
        record = {"step": step, "algorithm": ALGORITHM, "fingerprints": fingerprints(state),
                  "layout": {p: _text(s) for p, s in _layout(state).items()}}
        if jax.process_index() == 0:
            _write_json(_fingerprint_file(directory, step), record)
    saved = manager.save(step, args=ocp.args.StandardSave(state), force=force)
    _prune_fingerprints(directory, keep=step)
    return saved


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Any, int | None]:
    """Restores the newest good step into the structure, dtypes and shardings of `target`.

    Damaged steps (unreadable, or not matching their fingerprints) are moved to
    `<workdir>/damaged_checkpoints/` with a warning each, once an older step restored.

    Args:
      manager: the run's manager (reloaded here if steps were moved).
      target: a pytree of jax.Arrays or ShapeDtypeStructs carrying shardings.

    Returns:
      (restored state, step), or (target, None) when the workdir holds no checkpoint.

    Raises:
      CheckpointError: a step that reads was saved from another state layout, or no step reads.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return target, None
    with _quiet():
        restored, step, damaged = _first_good(manager, steps, target)
    directory = pathlib.Path(manager.directory)
    if damaged:
        moved = {s: _move_aside(directory, s) for s, _ in damaged} if jax.process_index() == 0 else {}
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("fft_checkpoint_moved_aside")
        for s, reason in damaged:
            where = f" (step {s} moved to {moved[s]})" if s in moved else ""
            console.warn(
                f"checkpoint step {s} in {directory} is damaged ({reason}); restoring step {step}{where}"
            )
        with _quiet():
            manager.reload()
    _prune_fingerprints(directory)
    return restored, step


def load_state_dict(
    workdir: str | pathlib.Path, step: int | None = None
) -> tuple[dict[str, Any], int]:
    """Reads a run's checkpoint without knowing its structure (for analysis, not for resuming).

    The latest step that reads and matches its fingerprints; damaged steps are reported but left
    in place (analysis changes nothing).

    Args:
      workdir: a run's workdir (holding `checkpoints/`), or the `checkpoints/` folder itself.
      step: which step; default the latest good one.

    Returns:
      ({'step', 'params', 'opt_state'} as host NumPy arrays in nested dicts, step).

    Raises:
      FileNotFoundError: no checkpoint folder, or no (such) step in it.
      CheckpointError: the step asked for, or every step, is damaged.
    """
    directory = pathlib.Path(workdir).resolve()
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{workdir}: no checkpoints/ folder (is it a run's workdir?)")
    with _quiet():
        manager = _manager(directory, ocp.CheckpointManagerOptions(read_only=True))
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"{directory}: holds no finished checkpoint")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"{directory}: no checkpoint at step {step} (have {sorted(steps)})")
    # Restored onto this process's first device whatever the topology that wrote it (N processes,
    # N devices, sharded params): analysis reads a run anywhere, e.g. a pod's run on a laptop.
    candidates = sorted(steps, reverse=True) if step is None else [step]
    with _quiet():
        restored, found, damaged = _first_good(manager, candidates, None)
    for s, reason in damaged:
        console.warn(f"checkpoint step {s} in {directory} is damaged ({reason}); reading step {found}")
    return jax.device_get(dict(restored)), found


def fingerprints(tree: Any) -> dict[str, int]:
    """{leaf path: 32-bit fingerprint} of every array in `tree`, computed on its devices.

    One jitted reduction per device set (one for a run's state), so sharded arrays and arrays
    spread over several processes are fingerprinted in place; every process gets all values. The
    value depends only on the array's bytes, not on its sharding or the reduction order.
    """
    flat = {tree_paths.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    groups: dict[Any, list[str]] = {}
    for path, x in flat.items():
        devices = getattr(x, "sharding", None) and frozenset(x.sharding.device_set)
        groups.setdefault(devices, []).append(path)
    out: dict[str, int] = {}
    for paths in groups.values():
        sharding = getattr(flat[paths[0]], "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):  # Out replicated over its mesh.
            sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        elif not isinstance(sharding, jax.sharding.SingleDeviceSharding):
            sharding = None
        values = _fingerprint_fn(sharding)([flat[p] for p in paths])
        # Any process's first shard is the whole vector; an explicit transfer, which the training
        # loop's transfer guard allows.
        out.update(zip(paths, map(int, jax.device_get(values.addressable_data(0)))))
    return {path: out[path] for path in flat}


@functools.cache
def _fingerprint_fn(out_sharding):
    """The jitted fingerprints of a list of arrays, as one uint32 vector placed `out_sharding`."""
    fn = lambda leaves: jnp.stack([_fingerprint(x) for x in leaves])
    return jax.jit(fn, out_shardings=out_sharding)


def _fingerprint(x: jax.Array) -> jax.Array:
    """sum_i word_i * w_i mod 2**32 over the array's bytes as unsigned words, w_i odd.

    Why one flipped bit always changes it: flipping bit b (b < 32; 16- and 8-bit words are
    zero-extended, so b < 16 or b < 8 there) of word i changes word_i by +-2**b, hence the sum by
    +-2**b * w_i (mod 2**32). As w_i is odd, 2**b * w_i has exactly b < 32 trailing zero bits, so
    it is not 0 mod 2**32. A bool is one word of 0 or 1, which a flip changes by +-1. Wrapping
    uint32 addition is associative and commutative: the result does not depend on how XLA splits
    the sum over shards. The hashed weights make swapped or shifted words change the sum too
    (likely, not certain).
    """
    dtype = jnp.dtype(x.dtype)
    if dtype == jnp.bool_:
        words = x.astype(jnp.uint32)
    else:
        if jnp.issubdtype(dtype, jnp.complexfloating):
            x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
            dtype = jnp.dtype(x.dtype)
        unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[dtype.itemsize]
        words = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)  # 8 bytes: 2 words.
    words = words.reshape(-1)
    h = jnp.arange(words.size, dtype=jnp.uint32) * np.uint32(0x9E3779B1)  # Hash of the position,
    h = (h ^ (h >> 15)) * np.uint32(0x85EBCA77)  # so that equal words at other places differ;
    weights = (h ^ (h >> 13)) | np.uint32(1)  # always odd (see above).
    return jnp.sum(words * weights, dtype=jnp.uint32)


def _first_good(manager, steps: list[int], target: Any) -> tuple[Any, int, list[tuple[int, str]]]:
    """The first of `steps` that restores and verifies: (state, step, [(damaged step, reason)])."""
    damaged = []
    for step in steps:
        restored, reason = _attempt(manager, step, target)
        if reason is None:
            return restored, step, damaged
        damaged.append((step, reason))
    directory = pathlib.Path(manager.directory)
    listing = ", ".join(f"step {s} ({reason})" for s, reason in damaged)
    raise errors.CheckpointError(
        f"no checkpoint in {directory} can be restored: {listing}",
        hint=f"train in a fresh workdir, or move {directory} away to train this one from step 0",
    )


def _attempt(manager, step: int, target: Any) -> tuple[Any, str | None]:
    """(restored, None), or (None, why step `step` is damaged); raises on a layout mismatch."""
    directory = pathlib.Path(manager.directory)
    step_dir = directory / str(step)
    reason, metadata = None, None
    try:
        metadata = ocp.StandardCheckpointHandler().metadata(step_dir / "default")
        saved = _layout(metadata)
    except Exception as e:  # noqa: BLE001  (tensorstore raises plain Exceptions)
        reason = _metadata_reason(step_dir, e)
    if reason := _agreed(reason):
        return None, reason
    if target is None:  # Analysis: the saved layout, on this process's first device.
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local), metadata
        )
    else:
        _check_fits(step, directory, saved, _layout(target))
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
        )
    restored = None
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:
        if "RESOURCE_EXHAUSTED" in str(e) or isinstance(e, MemoryError):
            raise  # Out of device or host memory: the checkpoint is not to blame.
        reason = f"data unreadable: {_short_cause(e)}"
    if reason := _agreed(reason):
        return None, reason
    if reason := _verify(directory, step, restored, saved):
        return None, reason
    return restored, None


def _verify(directory: pathlib.Path, step: int, restored: Any, saved: dict) -> str | None:
    """Why `restored` does not match the fingerprints saved with `step`, or None (also when the
    step has no fingerprints: saved by an older fft)."""
    path = _fingerprint_file(directory, step)
    try:
        record = json.loads(path.read_text())
        expected, layout = dict(record["fingerprints"]), dict(record["layout"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        console.warn(f"{path} is unreadable; restoring checkpoint step {step} unverified")
        return None
    described = {p: _text(s) for p, s in saved.items()}
    if record.get("step") != step or record.get("algorithm") != ALGORITHM or layout != described:
        console.warn(f"{path} does not describe checkpoint step {step}; restoring it unverified")
        return None
    actual = fingerprints(restored)
    wrong = [p for p in expected if actual.get(p) != expected[p]]
    if not wrong:
        return None
    more = f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""
    return f"fingerprint mismatch at {wrong[0]}{more}"


def _layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """{leaf path: (shape, dtype name)} of arrays, ShapeDtypeStructs or orbax array metadata."""
    return {
        tree_paths.path_str(p): (tuple(int(d) for d in x.shape), str(jnp.dtype(x.dtype)))
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _text(shape_dtype: tuple[tuple[int, ...], str]) -> str:
    """((32, 64), 'float32') -> 'float32[32,64]'."""
    return f"{shape_dtype[1]}[{','.join(map(str, shape_dtype[0]))}]"


def _check_fits(step: int, directory: pathlib.Path, saved: dict, wanted: dict) -> None:
    """Raises CheckpointError naming the first leaf where the checkpoint's layout differs."""
    if saved == wanted:
        return
    diffs = [
        f"{p} is in this run but not in the checkpoint" if p not in saved
        else f"{p} is {_text(saved[p])} in the checkpoint but {_text(wanted[p])} in this run"
        for p in wanted if saved.get(p) != wanted[p]
    ] + [f"{p} is in the checkpoint but not in this run" for p in saved if p not in wanted]
    more = f" ({len(diffs) - 1} more leaves differ)" if len(diffs) > 1 else ""
    raise errors.CheckpointError(
        f"checkpoint step {step} in {directory} holds another state than this run's: "
        f"{diffs[0]}{more}",
        hint="the workdir was made with another config (model size, method or its options; its "
        "config.json shows which): resume it with that config, or train this one in a fresh workdir",
    )


def _metadata_reason(step_dir: pathlib.Path, e: Exception) -> str:
    """Why the metadata of a step does not read, in a few words."""
    if not step_dir.is_dir() or not any(step_dir.iterdir()):
        return "empty folder"
    if isinstance(e, FileNotFoundError):
        return "metadata file missing"
    return f"metadata unreadable: {_short_cause(e)}"


def _short_cause(e: BaseException) -> str:
    """A tensorstore status code (DATA_LOSS, OUT_OF_RANGE ...) from `e`'s chain, else its type."""
    seen = e
    while seen is not None:
        if code := re.search(r"\b([A-Z]+(?:_[A-Z]+)+|NOT_FOUND|INTERNAL|UNKNOWN): ", str(seen)):
            return code.group(1)
        seen = seen.__cause__ or seen.__context__
    return type(e).__name__


def _agreed(reason: str | None) -> str | None:
    """`reason`, made the same on all processes: a step damaged for one is damaged for all."""
    if jax.process_count() == 1:
        return reason
    bad = multihost_utils.process_allgather(np.asarray(reason is not None))
    return reason or ("unreadable on another process" if np.any(bad) else None)


def _move_aside(directory: pathlib.Path, step: int) -> pathlib.Path:
    """Moves step `step` (and its fingerprints) to `<workdir>/damaged_checkpoints/<step>[.n]`."""
    root = directory.parent / DAMAGED
    root.mkdir(parents=True, exist_ok=True)
    dest, n = root / str(step), 0
    while dest.exists():
        n += 1
        dest = root / f"{step}.{n}"
    os.replace(directory / str(step), dest)
    prints = _fingerprint_file(directory, step)
    if prints.exists():
        os.replace(prints, root / f"{dest.name}.fingerprints.json")
    return dest


def _fingerprint_file(directory: pathlib.Path, step: int) -> pathlib.Path:
    return pathlib.Path(directory).parent / FINGERPRINTS / f"{step}.json"


def _prune_fingerprints(directory: pathlib.Path, keep: int | None = None) -> None:
    """Deletes the fingerprints of steps whose folder is gone (max_to_keep, saves cut short).

    By folder, not by `manager.all_steps()`: orbax drops old steps from that list when it starts
    a save but deletes their folders only once the new step is committed; until then they may
    still be restored, and verified. What a save deletes is pruned at the next save or restore.
    """
    folder = directory.parent / FINGERPRINTS
    if jax.process_index() != 0 or not folder.is_dir():
        return
    for path in folder.iterdir():
        step = path.name.split(".")[0]
        live = step.isdigit() and (int(step) == keep or (directory / step).is_dir())
        if not live or path.suffix == ".tmp":  # A .tmp is a write cut short.
            path.unlink(missing_ok=True)


def _write_json(path: pathlib.Path, record: dict) -> None:
    """Writes `record` to `path` atomically: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _quiet():
    """Unless library logs are on (`-v`), keeps orbax's warnings about the steps it reads (a
    missing metadata file, a read-only manager) and tensorstore's aborted reads off stderr: a
    damaged step is reported once, by fft."""
    _silence_closed_loop_noise()
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    if absl_logger.getEffectiveLevel() >= logging.WARNING:
        absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def _silence_closed_loop_noise() -> None:
    """Drops the unraisable exceptions Python prints after orbax failed to read a damaged step.

    Orbax reads each step in a fresh asyncio loop and closes it when a read fails: tensorstore
    then completes the other reads' futures into the closed loop ("Event loop is closed"), and the
    abandoned read coroutines raise again when collected ("Exception ignored in: <coroutine ...>"),
    a traceback each, possibly long after the restore returned. They say nothing the one damage
    warning does not; any other unraisable exception is still printed.
    """
    previous = sys.unraisablehook
    if getattr(previous, "fft_read_noise_filter", False):
        return

    def hook(unraisable):
        value, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        closed_loop = isinstance(value, RuntimeError) and str(value) == "Event loop is closed"
        if not (closed_loop or (code and f"{os.sep}orbax{os.sep}" in code.co_filename)):
            previous(unraisable)

    hook.fft_read_noise_filter = True
    sys.unraisablehook = hook
