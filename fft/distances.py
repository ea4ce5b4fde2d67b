"""Parameter-space distances between a pretrained and a fine-tuned parameter tree.

Radiya-Dixit & Wang (2020): fine-tuned BERT stays close to its pretrained weights, and how close
depends on the layer. This module measures that per leaf, per group of leaves (embeddings, each
encoder layer, pooler, head) and for the whole tree. Trees are nested flax dicts or flat dicts
keyed by '/'-joined paths (``encoder/layer_3/attention/query/kernel``); both give the same paths.

Design:
  * One pass per leaf: a variadic ``lax.reduce`` over the last axis yields every statistic in
    :class:`Stats` per row, in float32 whatever the parameter dtype (bf16 is upcast element-wise);
    ``jnp.sum``/``max`` then reduce the rows (relative error ~1e-7 on BERT-sized leaves).
    ``optax.tree.norm``/``vdot`` would read each leaf once per statistic (7x slower on CPU in our
    measurement), so they only back :func:`global_l2`, the cheap number for ``train_step``.
  * Groups and the total sum their leaves' statistics before deriving measures, so they are
    exact, not averages of per-leaf ratios.
  * Under jit there are only reductions with scalar results: sharded leaves are reduced where they
    live and only partial sums cross devices. Called eagerly, the public functions return NumPy
    float32 scalars fetched in one transfer; under jit, traced scalars.

Measures (d = finetuned - pretrained):
  l1, l2, linf: norms of d; norm_pretrained, norm_finetuned: L2 norms of the trees.
  rel_l1 = l1 / ||pre||_1, rel_l2 = l2 / ||pre||_2: 0 when d == 0, +inf when the pretrained norm
    is 0 but d is not (e.g. a zero-initialised classifier bias).
  cosine = <pre, ft> / (||pre|| ||ft||), clipped to [-1, 1].
  angle: radians in [0, pi] from the triangle with sides ||pre||, ||ft||, ||d|| (Kahan's formula
    for needle-like triangles). ||d|| is summed directly, so small angles stay accurate where
    arccos of a float32 cosine near 1 is not, and identical trees give exactly 0. Vectors that
    are parallel but scaled differently may show up to ~1e-3 rad (float32 sums limit any method).
  Zero vectors: two zero vectors have angle 0 and cosine 1; a zero and a non-zero vector are
    taken as orthogonal (angle pi/2, cosine 0).
  frac_changed: share of entries with |d| > atol + rtol * |pre| (the negation of
    ``numpy.isclose``); the default tolerance 0 counts every entry that changed at all. Counts
    are int32: fewer than 2**31 entries per group.

Grouping: ordered ``(regex, name)`` rules; the first rule whose regex fully matches a path wins and
``name`` may use backreferences (``layer_\\1``). A leaf that matches no rule raises ``ValueError``;
the default rule lists end with a catch-all ``other`` rule, so they never raise (``other`` only
appears for leaves that are not BERT/DistilBERT parameters). Groups come in model order (see
:func:`group_sort_key`), then ``'total'``; ``jax.jit`` sorts dict keys and :func:`sort_groups`
undoes that.

New leaves: the fine-tuned tree may hold leaves the pretrained tree lacks when their paths fully
match the ``new`` regex (default :data:`NEW_LEAVES`: any path with an ``adapter`` component, the
bottleneck adapters of ``fft.models``; ``new=None`` demands identical structure). Shared leaves
are measured exactly as without them. New leaves have no reference: :func:`per_leaf` gives each
its own row and :func:`grouped` puts them into groups ``'new/<group>'`` (the rules' group name with
the prefix :data:`NEW_PREFIX`, e.g. ``new/layer_3``), ordered after the shared groups. In those rows
``norm_finetuned`` is the L2 norm of the new leaves and every other measure is NaN; they never
enter ``'total'``, which covers the shared leaves only. :func:`leaf_stats` reports a new leaf
against an all-zero reference (``ft_l1``, ``ft_sq`` and ``size`` are its norms and entry count).
Leaves present only in the pretrained tree, and extra leaves that do not match ``new``, still
raise :class:`TreeMismatchError`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from fft import errors, tree_paths

Rules = Sequence[tuple[str, str]]
Table = dict[str, dict[str, jax.Array]]

TOTAL = "total"
MEASURES = ("l1", "l2", "linf", "rel_l1", "rel_l2", "cosine", "angle", "frac_changed")
MEASURES += ("norm_pretrained", "norm_finetuned")
_HEAD = (r"(?:pre_classifier|classifier)/.*", "head")
DEFAULT_LAYER_GROUPS: Rules = (
    (r"embeddings/.*", "embeddings"),
    (r"encoder/layer_(\d+)/.*", r"layer_\1"),
    (r"pooler/.*", "pooler"),
    _HEAD,
    (r".*", "other"),
)
DEFAULT_SUBLAYER_GROUPS: Rules = (
    (r"embeddings/.*", "embeddings"),
    (r"encoder/layer_(\d+)/attention/.*", r"layer_\1/attention"),
    (r"encoder/layer_(\d+)/(?:intermediate|output)/.*", r"layer_\1/ffn"),
    (r"encoder/layer_(\d+)/.*", r"layer_\1/other"),
    (r"pooler/.*", "pooler"),
    _HEAD,
    (r".*", "other"),
)
DEFAULT_GROUPS = DEFAULT_LAYER_GROUPS
_BACKREF = r"\\\d+|\\g<\w+>"
# Paths of leaves that may exist only in the fine-tuned tree: an `adapter` module's parameters.
NEW_LEAVES = r"(?:.+/)?adapter/.+"
NEW_PREFIX = "new/"  # Group names of new leaves: NEW_PREFIX + the rules' group name.


class TreeMismatchError(errors.FftError, ValueError):
    """Two trees differ in paths, shapes or dtypes; ``path`` is the first differing path."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


class Tol(NamedTuple):
    """An entry counts as changed when ``|ft - pre| > atol + rtol * |pre|``."""

    atol: float = 0.0
    rtol: float = 0.0


class Stats(NamedTuple):
    """Sufficient statistics of a leaf, a group or a tree; every field is a scalar."""

    l1: jax.Array  # sum |d|  (float32, like every field up to dot)
    sq_l2: jax.Array  # sum d**2
    linf: jax.Array  # max |d|
    pre_l1: jax.Array  # sum |pre|
    pre_sq: jax.Array  # sum pre**2
    ft_l1: jax.Array  # sum |ft|
    ft_sq: jax.Array  # sum ft**2
    dot: jax.Array  # sum pre * ft
    n_changed: jax.Array  # int32: entries with |d| > atol + rtol * |pre|
    size: jax.Array  # int32: number of entries


def flatten(tree: chex.ArrayTree) -> dict[str, Any]:
    """Returns ``{'/'-joined path: leaf}`` in natural path order (layer_2 before layer_10)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return tree_paths.natural_order({tree_paths.path_str(path): x for path, x in leaves})


def _spec(x: Any) -> str | None:
    if x is None:
        return None
    dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
    return f"shape {tuple(np.shape(x))} dtype {np.dtype(dtype).name}"


def check_same_structure(a: chex.ArrayTree, b: chex.ArrayTree, new: str | None = None) -> None:
    """Checks that two trees have the same paths, shapes and dtypes (reads shapes only).

    Args:
      a: the pretrained tree.
      b: the fine-tuned tree.
      new: optional regex; leaves of ``b`` absent from ``a`` whose paths fully match it are
        allowed (e.g. :data:`NEW_LEAVES`). None: none are.

    Raises:
      TreeMismatchError: naming the first differing path (natural path order) and both sides.
    """
    fa, fb = flatten(a), flatten(b)
    is_new = re.compile(new).fullmatch if new is not None else lambda _: False
    for path in sorted(fa.keys() | fb.keys(), key=tree_paths.natural_key):
        sa, sb = _spec(fa.get(path)), _spec(fb.get(path))
        if sa == sb or (sa is None and is_new(path)):
            continue
        if sa is None or sb is None:
            what = "leaf missing from finetuned" if sb is None else "extra leaf in finetuned"
        else:
            same_shape = np.shape(fa[path]) == np.shape(fb[path])
            what = "dtype mismatch" if same_shape else "shape mismatch"
        msg = (
            f"{what} at '{path}': pretrained has {sa or 'nothing'}, finetuned has {sb or 'nothing'}"
        )
        raise TreeMismatchError(path, msg)


def _as_tol(tol: Tol | float) -> Tol:
    return tol if isinstance(tol, Tol) else Tol(atol=float(tol))


def _merge(xs: Sequence[jax.Array], ys: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
    """Combines two partial statistics field by field: max for linf, sum for the rest."""
    return tuple(
        lax.max(x, y) if field == "linf" else lax.add(x, y)
        for field, x, y in zip(Stats._fields, xs, ys)
    )


def _one_leaf(pre: jax.Array | None, ft: jax.Array, tol: Tol) -> Stats:
    """Statistics of one leaf of any shape, in one pass, accumulated in float32 (``pre`` None: a
    new leaf, measured against zeros)."""
    f = jnp.asarray(ft).astype(jnp.float32)
    p = jnp.zeros_like(f) if pre is None else jnp.asarray(pre).astype(jnp.float32)
    if p.ndim == 0:
        p, f = p[None], f[None]
    d = f - p
    ad = jnp.abs(d)
    changed = (ad > tol.atol + tol.rtol * jnp.abs(p)).astype(jnp.int32)
    terms = (ad, d * d, ad, jnp.abs(p), p * p, jnp.abs(f), f * f, p * f, changed)
    init = tuple(jnp.zeros((), t.dtype) for t in terms)
    rows = lax.reduce(terms, init, _merge, (p.ndim - 1,))  # one pass over the leaf
    sums = [jnp.max(r) if i == 2 else jnp.sum(r) for i, r in enumerate(rows)]  # [rows] -> []
    return Stats(*sums, size=jnp.asarray(p.size, jnp.int32))


@functools.partial(jax.jit, static_argnums=2)
def _stacked_stats(pre: Sequence[Any], ft: Sequence[Any], tol: Tol) -> Stats:
    """Statistics of paired leaves, stacked: every field has shape [num_leaves] (a None in
    ``pre`` marks a new leaf)."""
    per_leaf = [_one_leaf(p, f, tol) for p, f in zip(pre, ft)]
    return Stats(*(jnp.stack(field) for field in zip(*per_leaf)))


def _stats_of(
    pre: chex.ArrayTree, ft: chex.ArrayTree, tol: Tol | float, new: str | None
) -> tuple[list[str], frozenset[str], Stats]:
    """(paths of ``ft`` in natural order, the new ones among them, stacked statistics)."""
    check_same_structure(pre, ft, new)
    fp, ff = flatten(pre), flatten(ft)
    if not fp:
        raise ValueError("the trees have no leaves")
    paired = tuple(fp.get(p) for p in ff)  # None for a new leaf
    stacked = _stacked_stats(paired, tuple(ff.values()), _as_tol(tol))
    return list(ff), frozenset(ff.keys() - fp.keys()), stacked


def _unstack(columns: Mapping[str, jax.Array], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Splits [len(names)] columns into ``{name: {column: scalar}}``.

    Under a trace each scalar is a masked sum (XLA:CPU compiles hundreds of those far faster than
    hundreds of slices); eagerly the columns come to the host in one transfer.
    """
    if not any(isinstance(v, jax.core.Tracer) for v in columns.values()):
        host = jax.device_get(dict(columns))
        return {n: {k: host[k][i] for k in columns} for i, n in enumerate(names)}
    positions = np.arange(len(names))
    pick = lambda v, i: jnp.sum(jnp.where(positions == i, v, jnp.zeros((), v.dtype)))
    return {n: {k: pick(v, i) for k, v in columns.items()} for i, n in enumerate(names)}


def leaf_stats(
    pre: chex.ArrayTree,
    ft: chex.ArrayTree,
    tol: Tol | float = 0.0,
    new: str | None = NEW_LEAVES,
) -> dict[str, Stats]:
    """Per-leaf sufficient statistics (jit-able; the structure check reads shapes only).

    Args:
      pre: pretrained tree; leaves of any shape and float dtype.
      ft: fine-tuned tree with the same paths, shapes and dtypes, plus any new leaves.
      tol: change tolerance, a :class:`Tol` or a float taken as ``atol``.
      new: regex of the paths of leaves ``ft`` may have and ``pre`` lacks (see the module doc);
        such a leaf is measured against an all-zero reference.

    Returns:
      ``{path: Stats}`` in natural path order; scalar fields (NumPy when called eagerly).

    Raises:
      TreeMismatchError: if the trees differ in structure (beyond new leaves).
    """
    paths, _, stacked = _stats_of(pre, ft, tol, new)
    rows = _unstack(stacked._asdict(), paths)
    return {p: Stats(**row) for p, row in rows.items()}


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    quotient = num / jnp.where(den > 0, den, 1.0)
    return jnp.where(den > 0, quotient, jnp.where(num > 0, jnp.inf, 0.0))


def _angle(n_pre: jax.Array, n_ft: jax.Array, n_diff: jax.Array) -> jax.Array:
    """Triangle angle between sides a >= b, opposite side c.

    W. Kahan, 'Miscalculating Area and Angles of a Needle-like Triangle' (2014). Rounding that
    breaks the triangle inequality clips the angle to 0 or pi.
    """
    a, b, c = jnp.maximum(n_pre, n_ft), jnp.minimum(n_pre, n_ft), n_diff
    mu = jnp.where(b >= c, c - (a - b), b - (a - c))
    num = jnp.maximum(((a - b) + c) * mu, 0.0)
    den = jnp.maximum((a + (b + c)) * ((a - c) + b), 0.0)
    theta = jnp.clip(2.0 * jnp.arctan2(jnp.sqrt(num), jnp.sqrt(den)), 0.0, math.pi)
    return jnp.where(b > 0, theta, jnp.where(a > 0, math.pi / 2, 0.0))


def measures(s: Stats) -> dict[str, jax.Array]:
    """Derives every measure in ``MEASURES`` from statistics (definitions in the module doc).

    Args:
      s: statistics of a leaf, a group or a tree; fields of any common shape, e.g. [num_groups].

    Returns:
      ``{measure: float32 array of that shape}`` in ``MEASURES`` order.
    """
    l2, n_pre, n_ft = jnp.sqrt(s.sq_l2), jnp.sqrt(s.pre_sq), jnp.sqrt(s.ft_sq)
    both = (n_pre > 0) & (n_ft > 0)
    cosine = jnp.clip(s.dot / jnp.where(both, n_pre * n_ft, 1.0), -1.0, 1.0)
    out = {
        "l1": s.l1,
        "l2": l2,
        "linf": s.linf,
        "rel_l1": _ratio(s.l1, s.pre_l1),
        "rel_l2": _ratio(l2, n_pre),
        "cosine": jnp.where(both, cosine, jnp.where((n_pre > 0) | (n_ft > 0), 0.0, 1.0)),
        "angle": _angle(n_pre, n_ft, l2),
        "frac_changed": s.n_changed / jnp.maximum(s.size, 1),
        "norm_pretrained": n_pre,
        "norm_finetuned": n_ft,
    }
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _columns(
    stacked: Stats, ids: tuple[int, ...], num: int, new_groups: frozenset[int] = frozenset()
) -> dict[str, jax.Array]:
    """Measures of ``num`` segments of leaves (leaf i in segment ``ids[i]``), then of the total:
    every column has shape [num + 1]. Segments take the max of linf and sum the other fields.

    Segments in ``new_groups`` hold new leaves: they stay out of the total, and every measure but
    ``norm_finetuned`` is NaN for them."""
    to_total = [num + 1 if i in new_groups else num for i in ids]  # num + 1: dropped below
    idx = jnp.asarray((*ids, *to_total), jnp.int32)
    both = Stats(*(jnp.concatenate([x, x]) for x in stacked))  # each leaf also feeds the total
    ops = {f: jax.ops.segment_max if f == "linf" else jax.ops.segment_sum for f in Stats._fields}
    sums = Stats(*(ops[f](x, idx, num + 2)[: num + 1] for f, x in zip(Stats._fields, both)))
    out = measures(sums)
    if not new_groups:
        return out
    no_reference = np.isin(np.arange(num + 1), sorted(new_groups))
    nan = jnp.asarray(jnp.nan, jnp.float32)
    keep = ("norm_finetuned",)
    return {k: v if k in keep else jnp.where(no_reference, nan, v) for k, v in out.items()}


def _table(
    stacked: Stats,
    paths: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    new_groups: Iterable[str] = (),
) -> Table:
    index = {p: i for i, members in enumerate(groups.values()) for p in members}
    new_groups = set(new_groups)
    new_ids = frozenset(i for i, g in enumerate(groups) if g in new_groups)
    columns = _columns(stacked, tuple(index[p] for p in paths), len(groups), new_ids)
    return _unstack({m: columns[m] for m in MEASURES}, [*groups, TOTAL])


def per_leaf(
    pre: chex.ArrayTree,
    ft: chex.ArrayTree,
    tol: Tol | float = 0.0,
    new: str | None = NEW_LEAVES,
) -> Table:
    """All measures for every leaf and for the whole tree (jit-able).

    Args:
      pre: pretrained tree.
      ft: fine-tuned tree of the same structure, plus any new leaves.
      tol: change tolerance for ``frac_changed``.
      new: regex of the paths of leaves ``ft`` may have and ``pre`` lacks (see the module doc).

    Returns:
      ``{path: {measure: scalar}}`` in natural path order, then ``'total'`` (over the shared
      leaves); NumPy float32 scalars fetched in one transfer when called eagerly, traced scalars
      under jit. A new leaf's row has its L2 norm as ``norm_finetuned``, NaN elsewhere.

    Raises:
      TreeMismatchError: if the trees differ in structure (beyond new leaves).
    """
    paths, new_paths, stacked = _stats_of(pre, ft, tol, new)
    return _table(stacked, paths, {p: [p] for p in paths}, new_paths)


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(".+".join(re.escape(p) for p in re.split(_BACKREF, template)))


def group_sort_key(name: str, rules: Rules) -> tuple[int, tuple[int, ...], int, str]:
    """Model order of a group name under ``rules``.

    Groups follow the first rule that can produce their name. Rules whose names share the text
    before the first backreference (``layer_\\1/attention``, ``layer_\\1/ffn``) form one family,
    ordered by the numbers in the name, then by rule. E.g. embeddings, layer_0, layer_1, ...,
    layer_10, pooler, head, other; names no rule can produce, then the groups of new leaves
    (``new/embeddings``, ``new/layer_0``, ..., in the same order), then ``'total'`` come last.
    """
    if name == TOTAL:
        return (len(rules) + 2, (), 0, "")
    if name.startswith(NEW_PREFIX):  # New leaves' groups: after the shared ones, in their order.
        family, numbers, idx, _ = group_sort_key(name.removeprefix(NEW_PREFIX), rules)
        return (len(rules) + 1, (family, *numbers), idx, name)
    idx = next((i for i, (_, t) in enumerate(rules) if _template_regex(t).fullmatch(name)), None)
    if idx is None:
        return (len(rules), (), 0, name)
    prefixes = [re.split(_BACKREF, t)[0] for _, t in rules]
    family = prefixes.index(prefixes[idx])
    return (family, tuple(int(n) for n in re.findall(r"\d+", name)), idx, name)


def sort_groups(table: Mapping[str, Any], rules: Rules = DEFAULT_GROUPS) -> dict[str, Any]:
    """Returns ``table`` with its keys in model order (e.g. after ``jax.jit`` sorted them)."""
    return {k: table[k] for k in sorted(table, key=lambda n: group_sort_key(n, rules))}


def assign_groups(paths: Iterable[str], rules: Rules = DEFAULT_GROUPS) -> dict[str, list[str]]:
    """Puts each path into the group of the first rule whose regex fully matches it.

    Args:
      paths: '/'-joined leaf paths.
      rules: ordered ``(regex, group name)`` pairs; names may use backreferences.

    Returns:
      ``{group: [paths]}`` in model order, without ``'total'``.

    Raises:
      ValueError: if a path matches no rule or a rule names a group ``'total'``.
    """
    compiled = [(re.compile(r), t) for r, t in rules]
    groups: dict[str, list[str]] = {}
    for path in paths:
        name = next((m.expand(t) for r, t in compiled if (m := r.fullmatch(path))), None)
        if name is None or name == TOTAL:
            raise ValueError(f"leaf '{path}' matches no grouping rule or is named '{TOTAL}'")
        groups.setdefault(name, []).append(path)
    return sort_groups(groups, rules)


def grouped(
    pre: chex.ArrayTree,
    ft: chex.ArrayTree,
    rules: Rules = DEFAULT_GROUPS,
    tol: Tol | float = 0.0,
    new: str | None = NEW_LEAVES,
) -> Table:
    """All measures per group of leaves and for the whole tree.

    Args:
      pre: pretrained tree.
      ft: fine-tuned tree of the same structure, plus any new leaves.
      rules: ordered ``(regex, group name)`` rules, e.g. ``DEFAULT_SUBLAYER_GROUPS``.
      tol: change tolerance for ``frac_changed``.
      new: regex of the paths of leaves ``ft`` may have and ``pre`` lacks (see the module doc).

    Returns:
      ``{group: {measure: scalar}}`` in model order, then the groups of new leaves
      (``'new/<group>'``: ``norm_finetuned`` is their L2 norm, every other measure NaN), then
      ``'total'`` over the shared leaves (under an outer ``jax.jit`` the key order becomes
      sorted; see :func:`sort_groups`).

    Raises:
      TreeMismatchError: if the trees differ in structure (beyond new leaves).
      ValueError: if a leaf matches no rule.
    """
    paths, new_paths, stacked = _stats_of(pre, ft, tol, new)
    groups = assign_groups([p for p in paths if p not in new_paths], rules)
    if new_paths:
        fresh = assign_groups([p for p in paths if p in new_paths], rules)
        fresh = {NEW_PREFIX + name: members for name, members in fresh.items()}
        clash = sorted(groups.keys() & fresh.keys())
        if clash:
            raise ValueError(f"groups {clash} hold both shared and new leaves; rename the rules")
        groups = sort_groups({**groups, **fresh}, rules)
        return _table(stacked, paths, groups, fresh)
    return _table(stacked, paths, groups)


def make_distance_fn(
    rules: Rules = DEFAULT_GROUPS, tol: Tol | float = 0.0, new: str | None = NEW_LEAVES
) -> Callable[[chex.ArrayTree, chex.ArrayTree], Table]:
    """Returns one jitted ``fn(pre, ft) -> {group: {measure: scalar}}`` for eval-cadence reports.

    ``fn`` logs nothing and moves nothing to the host; it compiles once per tree structure and
    accepts sharded inputs. Its result has JAX's sorted key order: ``sort_groups(table, rules)``
    gives model order. ``new`` is as in :func:`grouped`.
    """
    rules, tol = tuple(rules), _as_tol(tol)
    return jax.jit(lambda pre, ft: grouped(pre, ft, rules, tol, new))


def global_l2(pre: optax.Params, ft: optax.Params) -> jax.Array:
    """``||ft - pre||_2`` over the whole tree in float32; cheap enough for ``train_step``."""
    f32 = functools.partial(optax.tree.cast, dtype=jnp.float32)
    return optax.tree.norm(optax.tree.sub(f32(ft), f32(pre)))


def rank_layers(
    grouped_result: Mapping[str, Mapping[str, Any]],
    measure: str = "rel_l1",
    descending: bool = True,
    include: str | None = None,
) -> list[dict[str, Any]]:
    """Ranks groups by one measure (runs on the host; fetches the scalars).

    Args:
      grouped_result: output of :func:`grouped`, or its :func:`to_jsonable` copy.
      measure: the measure to sort by.
      descending: most-moved first when True. Ties keep model order; NaN/None come last.
      include: optional regex; only groups that fully match it are ranked. ``'total'`` never is.

    Returns:
      ``[{'group': name, 'rank': 1, <measure>: float, ...}, ...]``, ranks counting from 1.
    """
    names = [g for g in grouped_result if g != TOTAL and (not include or re.fullmatch(include, g))]
    values = jax.device_get([dict(grouped_result[g]) for g in names])
    nan_if_none = lambda x: math.nan if x is None else float(x)
    rows = [{m: nan_if_none(v[m]) for m in grouped_result[g]} for g, v in zip(names, values)]
    sign = -1.0 if descending else 1.0
    order = sorted(
        range(len(rows)),
        key=lambda i: (math.isnan(x := rows[i][measure]), 0.0 if math.isnan(x) else sign * x),
    )
    return [{"group": names[i], "rank": r + 1, **rows[i]} for r, i in enumerate(order)]


def critical_layers(
    ranking: Sequence[Mapping[str, Any]], k: int, pattern: str = r"layer_\d+"
) -> list[str]:
    """The first ``k`` ranked groups whose names fully match ``pattern``, e.g. ``['layer_4']``.

    Raises:
      ValueError: if ``k`` is negative or fewer than ``k`` groups match.
    """
    names = [r["group"] for r in ranking if re.fullmatch(pattern, r["group"])]
    if not 0 <= k <= len(names):
        raise ValueError(f"asked for {k} critical layers; the ranking has {names}")
    return names[:k]


def to_jsonable(obj: Any) -> Any:
    """Turns tables, rankings and :class:`Stats` into plain JSON types.

    Scalar arrays become Python floats (ints for integer dtypes), other arrays nested lists, and
    non-finite floats ``None``, so that strict JSON (``allow_nan=False``) accepts the result.
    """
    if isinstance(obj, Stats):
        obj = obj._asdict()
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(jax.device_get(obj))
        return to_jsonable(arr.tolist() if arr.ndim else arr.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
