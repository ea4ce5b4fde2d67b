"""Which parameters train, and how: a parameter partition as data.

A partition is an ordered list of rules ``(regex, label)``. Each regex is fully matched against a
leaf's '/'-joined path (``encoder/layer_3/attention/query/kernel``, see docs/CONTRACT.md); the
first rule that matches gives the leaf its label. Every leaf must match some rule and every rule
must catch at least one leaf, so a typo in a rule fails loudly instead of silently freezing (or
training) the wrong weights.

Labels: ``"frozen"`` means the leaf does not train; any other label (``"train"``, ``"head"``, ...)
trains and names an optimizer group, i.e. a key of the ``transforms`` given to
:func:`make_optimizer`. :func:`split` cuts a tree into its trainable and frozen halves;
``fft.steps.merge_trees(trainable, frozen)`` puts them back together. The optimizer only ever sees
the trainable half, so frozen leaves carry no optimizer state.

Presets (:func:`preset_rules`):
  full          everything trains; the head is its own group ``"head"``, the rest ``"train"``.
  head          only the head trains (linear probing).
  bitfit        every bias, plus the head (BitFit: Ben Zaken, Ravfogel & Goldberg, 2022).
  layernorm     every layer-norm scale and bias, plus the head.
  layers:<sel>  the selected encoder layers plus the head, e.g. ``layers:4,5``, ``layers:4-5``,
                ``layers:0,3-5``, ``layers:top2`` (the top 2 layers). The pooler (BERT only) sits
                on top of the last encoder layer and reads nothing else, so it trains whenever the
                top encoder layer trains, and stays frozen otherwise.
  critical:<k>  the k encoder layers that moved most in an earlier full fine-tuning run, read from
                a distances JSON written by ``python -m fft.analyze`` (see :func:`ranked_layers`);
                then as ``layers:``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from fft import distances, errors, models, tree_paths

Rule = tuple[str, str]
FROZEN = "frozen"
DEFAULT_HEAD = "(" + "|".join(models.ALL_HEAD_NAMES) + ")/.*"  # Any registered model's head.
PRESETS = ("full", "head", "bitfit", "layernorm", "layers:<sel>", "critical:<k>")
_LAYER = re.compile(r"encoder/layer_(\d+)/.*")
_LAYER_GROUP = r"layer_\d+"


class PartitionError(errors.FftError, ValueError):
    """A partition rule, preset or label tree is invalid for the given parameters."""


def layer_index(path: str) -> int | None:
    """The encoder layer a path belongs to (``encoder/layer_3/...`` -> 3), else None."""
    m = _LAYER.fullmatch(path)
    return int(m.group(1)) if m else None


def count_params(tree: Any) -> int:
    """Number of scalar parameters in a tree (reads shapes only; abstract leaves work too)."""
    return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------------------------
# Rules -> labels


def _compile(rules: Sequence[Rule]) -> list[re.Pattern[str]]:
    if not rules:
        raise PartitionError("no partition rules given")
    compiled = []
    for i, rule in enumerate(rules):
        if len(rule) != 2 or not all(isinstance(s, str) for s in rule) or not rule[1]:
            raise PartitionError(f"rule {i} must be a (regex, non-empty label) pair; got {rule!r}")
        try:
            compiled.append(re.compile(rule[0]))
        except re.error as e:
            raise PartitionError(f"rule {i} has an invalid regex {rule[0]!r}: {e}") from None
    return compiled


def _format_rules(rules: Sequence[Rule]) -> str:
    return "\n".join(f"  {i}: {r!r} -> {lab!r}" for i, (r, lab) in enumerate(rules))


def assign_rules(paths: Sequence[str], rules: Sequence[Rule], *, every_rule: bool = True) -> list[int]:
    """The index of the rule that catches each path (first full match wins).

    Raises:
      PartitionError: a path matches no rule, a rule catches no path (unless ``every_rule`` is
        False), or a regex is invalid.
    """
    compiled = _compile(rules)
    caught = []
    for path in paths:
        idx = next((i for i, r in enumerate(compiled) if r.fullmatch(path)), None)
        if idx is None:
            raise PartitionError(f"leaf '{path}' matches no partition rule; rules:\n"
                                 + _format_rules(rules))
        caught.append(idx)
    hit = set(caught)
    dead = [i for i in range(len(rules)) if i not in hit]
    if dead and every_rule:
        i = dead[0]  # the first one; fixing it may reveal the next
        raise PartitionError(
            f"rule {i} {rules[i]!r} catches no leaf (no path matches it, or earlier rules caught "
            f"them all); rules:\n" + _format_rules(rules)
        )
    return caught


def labels(params: Any, rules: Sequence[Rule], *, every_rule: bool = True) -> Any:
    """A tree shaped like ``params`` whose leaves are the label strings of the rules.

    Args:
      params: a parameter tree (nested dicts of arrays, or abstract shapes).
      rules: ordered ``(regex, label)`` pairs; the first regex that fully matches a path wins.
      every_rule: require every rule to catch a leaf (off to label a part of a tree).

    Raises:
      PartitionError: a leaf matches no rule, a rule catches no leaf, or a regex is invalid.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    caught = assign_rules([tree_paths.path_str(p) for p, _ in leaves], rules, every_rule=every_rule)
    return jax.tree.unflatten(treedef, [rules[i][1] for i in caught])


def summary(params: Any, label_tree: Any, rules: Sequence[Rule]) -> str:
    """A text table: per rule its label, leaves and parameters caught; then totals per label.

    Percentages are of all parameters in ``params``.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    label_leaves = _label_leaves(treedef, label_tree)
    caught = assign_rules([tree_paths.path_str(p) for p, _ in leaves], rules)
    sizes = [math.prod(np.shape(x)) for _, x in leaves]
    total = max(sum(sizes), 1)
    rows = [("rule", "label", "leaves", "params", "%")]
    for i, (regex, label) in enumerate(rules):
        n = [s for s, c in zip(sizes, caught) if c == i]
        rows.append((regex, label, str(len(n)), f"{sum(n):,}", f"{100 * sum(n) / total:.2f}"))
    rows.append(("", "", "", "", ""))
    per_label: dict[str, list[int]] = {label: [] for _, label in rules}  # rule order
    for s, label in zip(sizes, label_leaves):
        per_label.setdefault(label, []).append(s)
    trainable = [s for s, label in zip(sizes, label_leaves) if label != FROZEN]
    for name, n in [*per_label.items(), ("(trainable)", trainable), ("(all)", sizes)]:
        rows.append(("total", name, str(len(n)), f"{sum(n):,}", f"{100 * sum(n) / total:.2f}"))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]

    def fmt(row: tuple[str, ...]) -> str:
        cells = (v.ljust(w) if c < 2 else v.rjust(w) for c, (v, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    return "\n".join(fmt(r) for r in rows)


def _label_leaves(treedef: Any, label_tree: Any) -> list[str]:
    got_leaves, got_def = jax.tree.flatten(label_tree)
    if got_def != treedef:
        raise PartitionError("the label tree does not have the structure of the parameter tree")
    return got_leaves


# ---------------------------------------------------------------------------------------------
# Splitting


_NOTHING = object()


def _split(params: Any, label_tree: Any, path: str) -> tuple[Any, Any]:
    if isinstance(params, Mapping):
        if not isinstance(label_tree, Mapping) or set(label_tree) != set(params):
            raise PartitionError(f"label tree and parameters differ at '{path or '/'}'")
        trainable, frozen = {}, {}
        for key, value in params.items():
            t, f = _split(value, label_tree[key], f"{path}/{key}" if path else str(key))
            if t is not _NOTHING:
                trainable[key] = t
            if f is not _NOTHING:
                frozen[key] = f
        return trainable or _NOTHING, frozen or _NOTHING
    if not isinstance(label_tree, str):
        raise PartitionError(f"expected a label string at '{path}', got {type(label_tree)}")
    return (_NOTHING, params) if label_tree == FROZEN else (params, _NOTHING)


def split(params: Any, label_tree: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cuts ``params`` into (trainable, frozen) nested dicts with disjoint leaves.

    Each half keeps only its own leaves; dicts left empty are dropped, so
    ``fft.steps.merge_trees(trainable, frozen)`` equals ``params`` (nested dicts of leaves).
    Leaves are shared, not copied.

    Raises:
      PartitionError: if ``label_tree`` is not shaped like ``params``.
    """
    trainable, frozen = _split(params, label_tree, "")
    return (
        {} if trainable is _NOTHING else trainable,
        {} if frozen is _NOTHING else frozen,
    )


def trainable_labels(label_tree: Any) -> dict[str, Any]:
    """The label tree restricted to trainable leaves (same structure as ``split(...)[0]``)."""
    return split(label_tree, label_tree)[0]


# ---------------------------------------------------------------------------------------------
# Optimizer


def make_optimizer(
    label_tree_trainable: Any, transforms: Mapping[str, optax.GradientTransformation]
) -> optax.GradientTransformation:
    """One optimizer over the trainable tree, with one transformation per label.

    Args:
      label_tree_trainable: :func:`trainable_labels` of the full label tree; shaped like the
        trainable parameters the optimizer will be initialised with.
      transforms: ``{label: transformation}``; labels that no leaf has are ignored.

    Returns:
      ``optax.partition(...)``: leaf ``x`` with label ``l`` is updated by ``transforms[l]``.

    Raises:
      PartitionError: a label has no transformation, the tree holds frozen leaves, or is empty.
    """
    used = sorted(set(jax.tree.leaves(label_tree_trainable)))
    if not used:
        raise PartitionError("no trainable parameters: every leaf is frozen")
    if FROZEN in used:
        raise PartitionError(
            f"the label tree has '{FROZEN}' leaves; pass trainable_labels(label_tree) instead"
        )
    missing = [label for label in used if label not in transforms]
    if missing:
        raise PartitionError(
            f"no optimizer transformation for label(s) {missing}; given {sorted(transforms)}"
        )
    return optax.partition({k: transforms[k] for k in used}, label_tree_trainable)


# ---------------------------------------------------------------------------------------------
# Presets


def _parse_layers(sel: str, num_layers: int) -> list[int]:
    """'4,5' | '4-5' | '0,3-5' | 'top2' -> sorted unique layer indices, all in range."""
    top = re.fullmatch(r"top(\d+)", sel)
    if top:
        k = int(top.group(1))
        if not 1 <= k <= num_layers:
            raise PartitionError(f"layers:{sel}: k must be in 1..{num_layers}")
        return list(range(num_layers - k, num_layers))
    found: set[int] = set()
    for part in sel.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise PartitionError(
                f"layers:{sel}: cannot parse {part!r}; use e.g. layers:4,5  layers:4-5  layers:top2"
            )
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi:
            raise PartitionError(f"layers:{sel}: empty range {part!r}")
        found.update(range(lo, hi + 1))
    bad = sorted(i for i in found if i >= num_layers)
    if bad:
        raise PartitionError(
            f"layers:{sel}: layer(s) {bad} out of range; the model has layers 0..{num_layers - 1}"
        )
    return sorted(found)


def layer_rules(layers: Sequence[int], num_layers: int, head: str = DEFAULT_HEAD) -> list[Rule]:
    """Rules training the given encoder layers and the head (and the pooler with the top layer).

    The pooler shares one rule with the layers, so models without a pooler (DistilBERT) get no
    rule that catches nothing.
    """
    ids = sorted(set(layers))
    if not ids or ids[0] < 0 or ids[-1] >= num_layers:
        raise PartitionError(f"layers {ids} must be a non-empty subset of 0..{num_layers - 1}")
    trained = r"encoder/layer_(?:" + "|".join(map(str, ids)) + ")"
    if ids[-1] == num_layers - 1:
        trained = f"(?:{trained}|pooler)"
    return [(head, "head"), (trained + "/.*", "train"), (".*", FROZEN)]


def _as_ranking(data: Any) -> list[str]:
    """Group names, most-moved first, from any of the accepted distances JSON layouts."""
    if isinstance(data, Mapping) and isinstance(data.get("ranking"), list):
        data = data["ranking"]
    elif isinstance(data, Mapping) and isinstance(data.get("groups"), Mapping):
        data = data["groups"]
    if isinstance(data, list) and all(isinstance(r, Mapping) and "group" in r for r in data):
        return [str(r["group"]) for r in data]
    if isinstance(data, Mapping) and data and all(isinstance(v, Mapping) for v in data.values()):
        return [r["group"] for r in distances.rank_layers(data, "rel_l1", include=_LAYER_GROUP)]
    raise PartitionError(
        "unrecognised distances JSON: expected fft.analyze's distances.json (a 'ranking' or "
        "'groups' entry), a to_jsonable(rank_layers(...)) list or a to_jsonable(grouped(...)) table"
    )


def ranked_layers(distances_file: str | os.PathLike) -> list[int]:
    """Encoder layer indices, most-moved first, from a distances JSON file.

    Accepted layouts (all plain JSON, as written by ``fft.distances.to_jsonable``):
      * ``fft.analyze``'s ``distances.json``: ``{"ranking": [{"group": "layer_7", "rank": 1,
        "rel_l1": ..., ...}, ...], "groups": {...}, ...}``; the ``ranking`` order is used as is.
      * a dict with only ``"groups": {"layer_0": {"rel_l1": ..., ...}, ...}``, ranked by rel_l1.
      * a bare ranking list (``rank_layers`` output) or a bare grouped table (``grouped`` output).
      * a run's workdir (a folder holding config.json and checkpoints): the distances of its
        latest checkpoint from its step-0 weights are computed here (``fft.analyze.run_params``),
        so a grid can rank layers by the full fine-tuning run it made first.
    Groups other than ``layer_<i>`` (embeddings, pooler, head, total) are skipped.

    Raises:
      PartitionError: the file is missing, is not JSON, or lists no encoder-layer group.
    """
    if os.path.isdir(distances_file):
        return _ranked_from_run(distances_file)
    if not os.path.isfile(distances_file):
        raise PartitionError(
            f"distances file {distances_file} not found; write one with "
            "`python -m fft.analyze --run=<full fine-tuning workdir> --out_dir=<dir>`"
        )
    try:
        with open(distances_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise PartitionError(f"distances file {distances_file} is not valid JSON: {e}") from None
    names = [g for g in _as_ranking(data) if re.fullmatch(_LAYER_GROUP, g)]
    if not names:
        raise PartitionError(f"distances file {distances_file} has no encoder-layer groups")
    return [int(g.removeprefix("layer_")) for g in names]


def _ranked_from_run(workdir: str | os.PathLike) -> list[int]:
    """Encoder layers of a run's workdir, most-moved first (rel_l1 of its latest checkpoint)."""
    from fft import analyze  # Reading a run loads its model: only when asked.

    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise PartitionError(f"distances_file {workdir} is a folder but not a run's workdir (no config.json)")
    initial, final, _ = analyze.run_params(workdir)
    table = distances.to_jsonable(distances.grouped(initial, final, distances.DEFAULT_LAYER_GROUPS))
    names = [g for g in _as_ranking({"groups": table}) if re.fullmatch(_LAYER_GROUP, g)]
    return [int(g.removeprefix("layer_")) for g in names]


def preset_rules(
    spec: str,
    num_layers: int,
    *,
    distances_file: str | os.PathLike | None = None,
    head: str = DEFAULT_HEAD,
) -> list[Rule]:
    """The rules of a named preset (see the module docstring).

    Args:
      spec: ``full``, ``head``, ``bitfit``, ``layernorm``, ``layers:<sel>`` or ``critical:<k>``.
      num_layers: number of encoder layers of the model.
      distances_file: the distances JSON that ``critical:<k>`` ranks layers by.
      head: regex of the task-head paths (``head_names`` of the model class, ``<name>/.*``).

    Raises:
      PartitionError: unknown preset, bad layer selection, or a missing/unusable distances file.
    """
    spec = spec.strip()
    if spec == "full":
        return [(head, "head"), (".*", "train")]
    if spec == "head":
        return [(head, "head"), (".*", FROZEN)]
    if spec == "bitfit":
        return [(head, "head"), (r".*/bias", "train"), (".*", FROZEN)]
    if spec == "layernorm":
        return [(head, "head"), (r"(?:.*/)?layer_norm/(?:scale|bias)", "train"), (".*", FROZEN)]
    if spec.startswith("layers:"):
        layers = _parse_layers(spec.removeprefix("layers:"), num_layers)
        return layer_rules(layers, num_layers, head)
    if spec.startswith("critical:"):
        k_str = spec.removeprefix("critical:")
        if not k_str.isdigit() or int(k_str) < 1:
            raise PartitionError(f"{spec}: k must be a positive integer, e.g. critical:2")
        if distances_file is None:
            raise PartitionError(
                f"{spec} ranks layers by how far they moved: pass distances_file=<distances.json "
                "written by `python -m fft.analyze`>"
            )
        ranked = ranked_layers(distances_file)
        k = int(k_str)
        if k > len(ranked):
            raise PartitionError(f"{spec}: {distances_file} ranks only {len(ranked)} layers")
        chosen = ranked[:k]
        if max(chosen) >= num_layers:
            raise PartitionError(
                f"{spec}: {distances_file} names layer {max(chosen)} but the model has "
                f"{num_layers} layers; was it written for another model?"
            )
        return layer_rules(chosen, num_layers, head)
    raise PartitionError(f"unknown partition preset {spec!r}; presets: {', '.join(PRESETS)}")
