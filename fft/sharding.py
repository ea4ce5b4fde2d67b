"""Device mesh and named shardings: data parallel by default, optional model axis by rules."""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fft import tree_paths


def make_mesh(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a (data, model) mesh from `config.shape` (one -1 allowed) and `config.axes`.

    Raises:
      ValueError: if the shape does not fit the number of devices.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = list(config.shape)
    if len(shape) != len(config.axes):
        raise ValueError(f"mesh.shape {tuple(shape)} and mesh.axes {tuple(config.axes)} differ in length")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh.shape {tuple(shape)} has more than one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"mesh.shape {tuple(shape)} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    needed = int(np.prod(shape))
    if needed > len(devices):
        raise ValueError(f"mesh.shape {tuple(shape)} needs {needed} devices, have {len(devices)}")
    # A mesh smaller than the machine (e.g. (1, 1) for a one-device reference run) takes the first devices.
    return Mesh(np.asarray(devices[:needed]).reshape(shape), tuple(config.axes))


def param_shardings(params, mesh: Mesh, rules: Sequence[tuple[str, tuple]] = ()):
    """NamedSharding per leaf: the first regex in `rules` that fully matches the path gives the
    PartitionSpec; unmatched leaves are replicated. Works on arrays or ShapeDtypeStructs."""
    compiled = [(re.compile(pattern), PartitionSpec(*spec)) for pattern, spec in rules]

    def sharding_for(path, leaf):
        name = tree_paths.path_str(path)
        for pattern, spec in compiled:
            if pattern.fullmatch(name):
                if len(spec) > len(np.shape(leaf)):
                    raise ValueError(f"Sharding rule {pattern.pattern!r} -> {spec} has more axes than {name} {np.shape(leaf)}")
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(sharding_for, params)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the 'data' axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def global_batch_to_device(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a global host batch on the mesh, split along 'data'.

    Every process holds the same global batch (data order is a pure function of the seed); each
    contributes the rows its own devices hold, so this works single- and multi-host alike.
    """
    sharding = batch_sharding(mesh)
    n_proc, pid = jax.process_count(), jax.process_index()

    def put(x: np.ndarray) -> jax.Array:
        if x.shape[0] % n_proc:
            raise ValueError(f"Global batch of {x.shape[0]} rows does not split over {n_proc} processes")
        rows = x.shape[0] // n_proc
        local = x[pid * rows : (pid + 1) * rows]
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    with jax.transfer_guard("allow"):  # An explicit placement, allowed under the loop's guard.
        return {k: put(v) for k, v in batch.items()}
