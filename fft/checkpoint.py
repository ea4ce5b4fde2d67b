"""Atomic, resumable checkpoints of the mutable training state with orbax.

Only what changes during training is saved (trainable params, optimizer state, step); the frozen
pretrained weights are reloaded from the model source. Orbax writes each step into a temporary
folder and renames it when complete, so an interrupted save never leaves a half checkpoint.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp


def make_manager(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """A CheckpointManager in `<workdir>/checkpoints` saving every `config.every_steps` steps."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(config.every_steps), 1),
        max_to_keep=config.max_to_keep,
        create=True,
        cleanup_tmp_directories=True,
    )
    directory = pathlib.Path(workdir).resolve() / "checkpoints"
    return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> bool:
    """Saves `state` at `step` if due (or `force`); asynchronous, see `manager.wait_until_finished`."""
    return manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Any, int | None]:
    """Restores the latest step into the structure, dtypes and shardings of `target`.

    Args:
      manager: the run's manager.
      target: a pytree of jax.Arrays or ShapeDtypeStructs carrying shardings.

    Returns:
      (restored state, step), or (target, None) when the workdir holds no checkpoint.
    """
    step = manager.latest_step()
    if step is None:
        return target, None
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
    )
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"Checkpoint at step {step} in {manager.directory} does not match this run's state "
            f"(was it made with another config?): {e}"
        ) from e
    return restored, step


def load_state_dict(workdir: str | pathlib.Path, step: int | None = None) -> tuple[dict[str, Any], int]:
    """Reads a run's checkpoint without knowing its structure (for analysis, not for resuming).

    Args:
      workdir: a run's workdir (holding `checkpoints/`), or the `checkpoints/` folder itself.
      step: which step; default the latest.

    Returns:
      ({'step', 'params', 'opt_state'} as host NumPy arrays in nested dicts, step).

    Raises:
      FileNotFoundError: no checkpoint folder, or no (such) step in it.
    """
    directory = pathlib.Path(workdir).resolve()
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{workdir}: no checkpoints/ folder (is it a run's workdir?)")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"{directory}: holds no finished checkpoint")
    step = max(steps) if step is None else step
    if step not in steps:
        raise FileNotFoundError(f"{directory}: no checkpoint at step {step} (have {sorted(steps)})")
    # Restore onto this process's first device whatever the topology that wrote it (N processes,
    # N devices, sharded params): analysis reads a run anywhere, e.g. a pod's run on a laptop.
    metadata = ocp.StandardCheckpointHandler().metadata(directory / str(step) / "default")
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local), metadata)
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return jax.device_get(dict(restored)), step
