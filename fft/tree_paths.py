"""Pytree paths as strings: one place that names the leaves of a parameter tree.

A leaf's path is its chain of keys joined by a separator, '/' by default
(``encoder/layer_3/attention/query/kernel``, see docs/CONTRACT.md). Two views of a tree:

  * Any pytree, through JAX key paths: :func:`key_str`, :func:`path_str` and
    :func:`leaf_paths` (paths in ``jax.tree.leaves`` order).
  * Nested ``Mapping``s with string keys (flax parameter dicts, configs): :func:`flatten` turns
    one into ``{path: leaf}`` in insertion order and :func:`unflatten` is its inverse.

:func:`natural_order` sorts a flat dict so that digit runs compare as numbers (``layer_2``
before ``layer_10``). All functions are pure: inputs are never modified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax


def key_str(key: Any) -> str:
    """The string for one entry of a JAX key path.

    ``DictKey`` gives its key, ``GetAttrKey`` its attribute name, ``SequenceKey`` its index
    (``FlattenedIndexKey`` its key); anything else is passed to ``str``.
    """
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_str(key_path: Sequence[Any], sep: str = "/") -> str:
    """``sep``-joins a JAX key path (as from ``jax.tree_util.tree_flatten_with_path``)."""
    return sep.join(key_str(k) for k in key_path)


def leaf_paths(tree: Any) -> list[str]:
    """The '/'-joined path of every leaf of ``tree``, in ``jax.tree.leaves`` order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def flatten(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """``{sep-joined path: leaf}`` of nested Mappings, in insertion order.

    Every value that is not a ``Mapping`` is a leaf; empty Mappings have no leaves and vanish.

    Raises:
      ValueError: a key is not a non-empty str, or contains ``sep``; the message names the
        path of the Mapping holding it.
    """
    flat: dict[str, Any] = {}
    _flatten_into(flat, tree, "", sep)
    return flat


def _flatten_into(flat: dict[str, Any], tree: Mapping[str, Any], prefix: str, sep: str) -> None:
    for key, value in tree.items():
        if not isinstance(key, str) or not key or sep in key:
            where = f"under '{prefix}'" if prefix else "at the top level"
            raise ValueError(f"key {key!r} {where} must be a non-empty str without {sep!r}")
        path = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, Mapping):
            _flatten_into(flat, value, path, sep)
        else:
            flat[path] = value


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Inverse of :func:`flatten`: nested dicts from ``sep``-joined paths (insertion order).

    Leaves are placed as they are (a Mapping leaf is not merged into); only the new dicts are
    built here.

    Raises:
      ValueError: a path lies under another path's leaf (e.g. ``'a'`` and ``'a/b'``).
    """
    tree: dict[str, Any] = {}
    built = {id(tree)}  # The dicts made here; anything else in the tree is a leaf.
    for path, leaf in flat.items():
        *parents, name = path.split(sep)
        node = tree
        for depth, part in enumerate(parents):
            if part not in node:
                node[part] = {}
                built.add(id(node[part]))
            node = node[part]
            if id(node) not in built:
                above = sep.join(parents[: depth + 1])
                raise ValueError(f"path '{path}' lies under the leaf '{above}'")
        if name in node:
            raise ValueError(f"path '{path}' is a leaf and also holds other paths")
        node[name] = leaf
    return tree


def natural_key(path: str) -> tuple[Any, ...]:
    """Sort key under which digit runs compare as ints (``'layer_2' < 'layer_10'``)."""
    return tuple(int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", path)))


def natural_order(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``flat`` as a new dict with its paths in natural order (see :func:`natural_key`)."""
    return {k: flat[k] for k in sorted(flat, key=natural_key)}
