"""Learners (Vucetic et al., 2022; after FAR, "Freeze and Reconfigure", arXiv 2205.01541): train a
few nodes of every feed-forward network and keep the rest of each FFN frozen.

In each encoder layer, ``k = max(1, round(fraction * F))`` of the F intermediate nodes are
learners: their columns of the up-projection kernel and bias and their rows of the
down-projection kernel train. The model is the variant :func:`fft.models.with_learners`
(:class:`fft.models.bert.LearnerSpec`), which holds each FFN as two slices and applies them as
separate matmuls, ``act(x W1d + b1d) W2d + act(x W1l + b1l) W2l + b2``, so the backward pass
never forms a gradient of the frozen kernels ``W1d`` [H, F - k] and ``W2d`` [F - k, H] (no mask
multiply, no scatter into a dense kernel inside the loss). Paths (docs/CONTRACT.md):
  encoder/layer_i/intermediate/dense/{kernel,bias}  the other F - k nodes (frozen kernel)
  encoder/layer_i/intermediate/learner/{kernel,bias} the learner nodes [H, k], [k]
  encoder/layer_i/output/dense/{kernel,bias}        [F - k, H] (frozen), b2 [H]
  encoder/layer_i/output/learner/kernel             [k, H]
``init`` slices these out of the dense pretrained tree, ``merge`` puts them back (exactly: the
frozen entries are the pretrained bits). With ``train_biases`` every Dense bias trains too, with
``train_layer_norms`` every LayerNorm, with ``train_attention`` the attention projections; the
head always trains.

Which nodes (``select``, per layer): ``magnitude`` the largest ``||W1[:, j]||_2 * ||W2[j, :]||_2``
of the pretrained weights; ``random`` drawn from the run's method key; ``movement`` the nodes
that moved most during a priming phase (:func:`node_scores`), which the loop writes to
``nodes_file`` ({"layer_0": [sorted node indices], ...}); a ``nodes_file`` always wins. The chosen
nodes are a function of (options, step-0 parameters, key), recorded by ``init``: ``merge`` and
``export`` need ``init`` to have run on this method. The task is stored as the trained leaves
plus each layer's node indices (``task_learners.safetensors``, ``learner_nodes/layer_i``).
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fft import delta, models, partition, tree_paths
from fft.methods import base

TASK_FILE = "task_learners.safetensors"
NODES_KEY = "learner_nodes"  # learner_nodes/layer_i: int32 [k] node indices in the task file.
SELECTIONS = ("magnitude", "random", "movement")
W1, B1, W2 = "intermediate/dense/kernel", "intermediate/dense/bias", "output/dense/kernel"
L_W1, L_B1 = "intermediate/learner/kernel", "intermediate/learner/bias"
L_W2 = "output/learner/kernel"
LAYER_NORM = r"(?:.*/)?layer_norm/(?:scale|bias)"
ATTENTION = r"encoder/layer_\d+/attention/(?:query|key|value|output/dense)/(?:kernel|bias)"
_FFN = re.compile(r"encoder/(layer_\d+)/intermediate/dense/kernel")

OPTIONS = {
    "fraction": 0.1,  # Learner nodes per FFN: k = max(1, round(fraction * F)).
    "select": "magnitude",  # 'magnitude' | 'random' | 'movement' (needs nodes_file).
    "nodes_file": "",  # JSON {"layer_0": [node indices], ...}: these nodes (priming writes it).
    "train_biases": True,  # Every Dense bias trains (b2, the other nodes' b1, attention, pooler).
    "train_layer_norms": True,  # Every LayerNorm scale and bias trains.
    "train_attention": False,  # The attention projections (query/key/value/output) train in full.
    "head_lr": 0.0,  # Peak learning rate of the head; 0 uses optim.lr.
    # Priming (fft.priming): this share of the run (epochs, steps or time budget), in [0, 1), first
    # trains with `priming_method` (default options); then `select` picks the nodes ('movement':
    # those that moved most in it) and the learners, head, biases and LayerNorms continue from
    # their primed values while every other weight is the pretrained one. 0: no priming.
    "priming": 0.0,
    "priming_method": "full",
    "priming_lr": 5e-5,  # Peak learning rate of the priming run (full fine-tuning's usual); 0: optim.lr.
}
NODES_FILE = "learner_nodes.json"  # Written into the run's workdir at the end of priming.


def num_learners(width: int, fraction: float) -> int:
    """k = max(1, round(fraction * width)) learner nodes of a ``width``-node FFN."""
    return max(1, round(fraction * width))


def check_fraction(fraction: Any, field: str = "config.learners.fraction") -> float:
    """`fraction` as a float; MethodError naming `field` unless it is a number in (0, 1]."""
    number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not number or not 0 < fraction <= 1:
        raise base.MethodError(f"{field}={fraction!r}: must be in (0, 1]")
    return float(fraction)


def _layers(flat: Mapping[str, Any]) -> dict[str, str]:
    """{layer name: 'encoder/layer_i/'} of the plain FFNs in a flat parameter tree."""
    found = {m.group(1): f"encoder/{m.group(1)}/" for p in flat if (m := _FFN.fullmatch(p))}
    if not found:
        raise base.MethodError(f"learners: no FFN kernel 'encoder/layer_i/{W1}' in the parameters")
    return dict(sorted(found.items(), key=lambda kv: tree_paths.natural_key(kv[0])))


def node_scores(
    params, how: str, *, reference=None, key: jax.Array | None = None
) -> dict[str, np.ndarray]:
    """A score per FFN node and layer; the top-k of each layer become learners.

    Args:
      params: the plain model's parameters (nested dict).
      how: 'magnitude': ``||W1[:, j]||_2 * ||W2[j, :]||_2``; 'random': uniform draws from
        ``fold_in(key, layer index)``; 'movement': ``sum|dW1[:, j]| + sum|dW2[j, :]| + |db1[j]|``,
        the L1 movement of node j from ``reference`` (the step-0 weights) to ``params`` (primed).
        (fft.distances measures whole leaves; per-node sums are these few lines.)
      reference: the step-0 parameters, for 'movement'.
      key: a PRNG key, for 'random'.

    Returns:
      {'layer_i': float32 [F]}.
    """
    flat = tree_paths.flatten(params)
    ref = tree_paths.flatten(reference) if reference is not None else None
    if how not in SELECTIONS:
        raise base.MethodError(f"learners: unknown score {how!r}; valid: {', '.join(SELECTIONS)}")
    if how == "movement" and ref is None:
        raise base.MethodError("learners: 'movement' scores need the step-0 `reference` parameters")
    if how == "random" and key is None:
        raise base.MethodError("learners: 'random' scores need a `key`")
    scores = {}
    for i, (layer, prefix) in enumerate(_layers(flat).items()):
        w1, w2 = (np.asarray(flat[prefix + p], np.float32) for p in (W1, W2))
        if how == "magnitude":
            s = np.linalg.norm(w1, axis=0) * np.linalg.norm(w2, axis=1)
        elif how == "random":
            s = np.asarray(jax.random.uniform(jax.random.fold_in(key, i), (w1.shape[1],)))
        else:
            d = {p: np.abs(np.asarray(flat[prefix + p], np.float32) - np.asarray(ref[prefix + p]))
                 for p in (W1, B1, W2)}
            s = d[W1].sum(axis=0) + d[W2].sum(axis=1) + d[B1]
        scores[layer] = s.astype(np.float32)
    return scores


def choose_nodes(scores: Mapping[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """{layer: sorted int64 [k]}: each layer's k = max(1, round(fraction * F)) highest-scoring
    nodes (ties: the lower index)."""
    fraction = check_fraction(fraction, "fraction")
    out = {}
    for layer, s in scores.items():
        k = num_learners(len(s), fraction)
        out[layer] = np.sort(np.argsort(-np.asarray(s), kind="stable")[:k]).astype(np.int64)
    return out


def write_nodes_file(path: str | pathlib.Path, nodes: Mapping[str, Any]) -> None:
    """Writes ``{"layer_0": [sorted node indices], ...}`` as JSON (the priming phase's output),
    atomically (a temporary file renamed over it)."""
    body = {layer: sorted(int(j) for j in np.asarray(n).ravel()) for layer, n in nodes.items()}
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    tmp.replace(path)


def read_nodes_file(path: str | pathlib.Path, *, widths: Mapping[str, int] | None = None,
                    fraction: float | None = None) -> dict[str, np.ndarray]:
    """The nodes of a nodes file ({layer: sorted int64 [k]}), checked against the model's layer
    ``widths`` ({'layer_i': F}) and the count ``fraction`` implies, when given.

    Raises:
      MethodError: one line naming the file and the problem (missing, bad JSON, wrong layers,
        an index out of range or listed twice, a wrong count).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise base.MethodError(f"{path}: learners nodes file not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise base.MethodError(f"{path}: not valid JSON ({e})") from None
    shape = '{"layer_0": [node indices], ...}'
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and all(isinstance(j, int) and not isinstance(j, bool) for j in v)
        for v in raw.values()
    ):
        raise base.MethodError(f"{path}: expected a JSON object {shape} of integer lists")
    if widths is not None and set(raw) != set(widths):
        missing, unknown = sorted(set(widths) - set(raw)), sorted(set(raw) - set(widths))
        raise base.MethodError(
            f"{path}: layers do not match the model's: missing {missing}, unknown {unknown}"
        )
    out = {}
    for layer in sorted(raw, key=tree_paths.natural_key):
        n = np.asarray(raw[layer], np.int64)
        width = None if widths is None else widths[layer]
        if n.size == 0:
            raise base.MethodError(f"{path}: {layer} lists no nodes")
        if n.min() < 0:
            raise base.MethodError(f"{path}: {layer} has a negative node index {int(n.min())}")
        if width is not None and n.max() >= width:
            raise base.MethodError(f"{path}: {layer} has node {int(n.max())} outside 0..{width - 1}")
        values, counts = np.unique(n, return_counts=True)
        if counts.max() > 1:
            raise base.MethodError(f"{path}: {layer} lists node {int(values[counts > 1][0])} twice")
        if width is not None and fraction is not None and n.size != num_learners(width, fraction):
            raise base.MethodError(f"{path}: {layer} has {n.size} nodes; fraction={fraction} of "
                                   f"{width} needs {num_learners(width, fraction)}")
        out[layer] = values
    return out


def split_nodes(params, nodes: Mapping[str, np.ndarray]) -> dict:
    """The learner model's parameters from the plain model's (on the host): each layer's FFN
    sliced into its other nodes (``dense``) and its ``nodes`` (``learner``)."""
    flat = dict(tree_paths.flatten(params))
    for layer, prefix in _layers(flat).items():
        n = np.asarray(nodes[layer])
        rest = np.setdiff1d(np.arange(np.shape(flat[prefix + W1])[1]), n)
        w1, b1, w2 = (np.asarray(flat[prefix + p]) for p in (W1, B1, W2))
        flat.update({prefix + W1: w1[:, rest], prefix + B1: b1[rest], prefix + W2: w2[rest],
                     prefix + L_W1: w1[:, n], prefix + L_B1: b1[n], prefix + L_W2: w2[n]})
    return tree_paths.unflatten(flat)


def join_nodes(params, nodes: Mapping[str, np.ndarray]) -> dict:
    """The plain model's parameters from the learner model's (jittable; a gather by the inverse
    node permutation, so every entry is copied bit for bit)."""
    flat = dict(tree_paths.flatten(params))
    for layer, n in nodes.items():
        prefix = f"encoder/{layer}/"
        k, other = len(n), np.shape(flat[prefix + W1])[1]
        order = np.argsort(np.concatenate([np.setdiff1d(np.arange(other + k), n), n]))
        for dense, learner, axis in ((W1, L_W1, 1), (B1, L_B1, 0), (W2, L_W2, 0)):
            both = jnp.concatenate([flat[prefix + dense], flat.pop(prefix + learner)], axis=axis)
            flat[prefix + dense] = jnp.take(both, order, axis=axis)
    return tree_paths.unflatten(flat)


def create(
    options: ml_collections.ConfigDict, config: ml_collections.ConfigDict, model
) -> base.Method:
    fraction = check_fraction(options.fraction)
    if options.select not in SELECTIONS:
        raise base.MethodError(
            f"config.learners.select={options.select!r}; valid: {', '.join(SELECTIONS)}"
        )
    if options.select == "movement" and not options.nodes_file:
        raise base.MethodError(
            "config.learners.select='movement' needs the nodes a priming phase chose: set "
            "config.learners.priming (a share of the run in (0, 1)) or config.learners.nodes_file"
        )
    num, width = base.num_layers(model), model.config.intermediate_size
    widths = {f"layer_{i}": width for i in range(num)}
    given = None
    if options.nodes_file:
        given = read_nodes_file(options.nodes_file, widths=widths, fraction=fraction)
    try:
        spec = models.bert.LearnerSpec((num_learners(width, fraction),) * num)
        variant = models.with_learners(model, spec)
    except (TypeError, ValueError) as e:
        raise base.MethodError(f"config.learners: {e}") from None
    head = base.head_regex(model)
    chosen: dict[str, np.ndarray] = {}  # Set by init: the run's nodes (merge and export need them).

    def label(path: str) -> str | None:
        if "/learner/" in path:
            return "learners"
        if re.fullmatch(head, path):
            return "head"
        norm = re.fullmatch(LAYER_NORM, path) is not None
        if ((options.train_layer_norms and norm)
                or (options.train_biases and path.endswith("/bias") and not norm)
                or (options.train_attention and re.fullmatch(ATTENTION, path))):
            return "train"
        return None

    def init(params, rng):
        if given is not None:
            nodes = given
        else:
            nodes = choose_nodes(node_scores(params, options.select, key=rng), fraction)
        chosen.clear()
        chosen.update(nodes)
        sliced = split_nodes(params, nodes)
        trainable, frozen = base.split_paths(sliced, lambda p: label(p) is not None)
        logging.info("Learners: %d of %d nodes per FFN (%s), %d trainable parameters",
                     num_learners(width, fraction), width, description, partition.count_params(trainable))
        return trainable, frozen

    def nodes_of_run() -> dict[str, np.ndarray]:
        if not chosen:
            raise base.MethodError("learners: init(params, rng) chooses the nodes; call it first")
        return chosen

    def merge(trainable, frozen):
        return join_nodes(base.merge(trainable, frozen), nodes_of_run())

    def optimizer(trainable, total_steps):
        labels = tree_paths.unflatten({p: label(p) for p in tree_paths.flatten(trainable)})
        lr = config.optim.lr
        lrs = {"learners": lr, "train": lr, "head": options.head_lr or lr}
        return base.group_adamw(labels, lrs, config.optim, total_steps)

    def export(trainable, directory, metadata):
        flat = dict(tree_paths.flatten(jax.device_get(trainable)))
        nodes = nodes_of_run()
        flat.update({f"{NODES_KEY}/{layer}": n.astype(np.int32) for layer, n in nodes.items()})
        meta = {**metadata, "learners_fraction": repr(fraction), "learners_select": options.select}
        path = pathlib.Path(directory) / TASK_FILE
        size = delta.export_delta(tree_paths.unflatten(flat), path, meta)
        return {"stored_bytes": size, "file": TASK_FILE, "learner_nodes": sum(map(len, nodes.values()))}

    def import_task(directory, params):
        trained, _ = delta.load_delta(pathlib.Path(directory) / TASK_FILE)
        nodes = {layer: np.asarray(n, np.int64) for layer, n in trained.pop(NODES_KEY).items()}
        sliced = delta.apply_delta(split_nodes(params, nodes), trained)
        return jax.device_get(join_nodes(sliced, nodes))

    def cache_start(trainable):
        return base.lowest_layer(tree_paths.flatten(trainable), num)

    source = f"nodes_file={options.nodes_file}" if given is not None else f"select={options.select}"
    description = f"learners fraction={fraction:g} {source}"
    if options.train_attention:
        description += " +attention"
    return base.Method(
        name="learners", model=variant, init=init, assemble=base.merge, optimizer=optimizer,
        export=export, import_task=import_task, cache_start=cache_start, merge=merge,
        description=description,
    )


def priming(options: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> base.Priming | None:
    """The priming phase of a learners run (None when `options.priming` is 0 or a nodes file is
    given: its nodes are already chosen)."""
    share = options.get("priming", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
        raise base.MethodError(
            f"config.learners.priming={share!r}: must be in [0, 1), the share of the run that "
            "primes (0: none); priming as long as the run or longer leaves no run"
        )
    if not share or options.nodes_file:
        return None
    check_fraction(options.fraction)
    if options.select not in SELECTIONS:
        raise base.MethodError(f"config.learners.select={options.select!r}; valid: {', '.join(SELECTIONS)}")
    from fft import methods  # The registry imports this module.

    name = options.priming_method
    methods.entry(name)  # An unknown method fails here, naming the valid ones.
    first = ml_collections.ConfigDict(config.to_dict())
    del first["learners"]
    first.method = name
    first[name] = methods.default_options(name)
    first.optim.lr = options.get("priming_lr", 0.0) or config.optim.lr

    def finish(primed, step0, key, workdir: pathlib.Path) -> ml_collections.ConfigDict:
        path = pathlib.Path(workdir) / NODES_FILE
        if not path.is_file():  # Chosen once; a resumed run reads the same file.
            if options.select == "movement":
                scores = node_scores(primed, "movement", reference=step0)
            else:
                scores = node_scores(step0, options.select, key=key)
            write_nodes_file(path, choose_nodes(scores, options.fraction))
        second = ml_collections.ConfigDict(config.to_dict())
        second.learners.nodes_file = str(path)
        return second

    return base.Priming(fraction=float(share), config=first, finish=finish)


ENTRY = (OPTIONS, create, priming)
