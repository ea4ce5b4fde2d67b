"""The method interface: what every fine-tuning method gives the training loop.

A method is a :class:`Method` record of pure functions, built by its module's ``create(options,
config, model)`` from the run's config and the (pretrained) model. The loop, the steps, the
distances, analysis, export and serving call these functions and never branch on a method's name:

  init(params, rng)            -> (trainable, frozen): host trees; new parameters (LoRA factors,
                                  adapters, mask scores) are drawn from ``rng`` here.
  assemble(trainable, frozen)  -> the parameters ``model`` applies; runs inside the loss and the
                                  eval step, so only ``trainable`` is ever differentiated.
  merge(trainable, frozen)     -> the task model as plain parameters of the model (LoRA folded into
                                  its kernels, masks applied): distances, analysis and serving
                                  compare against it. Equal to ``assemble`` for most methods.
  optimizer(trainable, steps)  -> :class:`Optimizer`: an optax transformation over ``trainable``
                                  (per-group learning rates via ``optax.partition``) and each
                                  group's schedule. The loop adds global-norm clipping once, for
                                  every method.
  metrics(trainable)           -> extra scalars logged at evaluation (e.g. mask sparsity); jittable.
  export(trainable, dir, meta) -> writes the task (only what it trained) and returns a report with
                                  ``stored_bytes``.
  import_task(dir, params)     -> the task model's parameters from an exported task and the run's
                                  step-0 parameters ``params``.
  serving                      -> :class:`Serving`, or None: how several tasks share one backbone
                                  in one batch (fft.multitask).
  cache_start(trainable)       -> the lowest encoder layer the method changes: the frozen-prefix
                                  feature cache may run layers below it once per dataset (0: not
                                  legal, the embeddings change).

A method module may also register a priming factory, ``priming(options, config) -> Priming |
None``: a first phase, another method's ordinary run, before the method's own (fft.priming runs
both; the loop still never learns a method's name).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import ml_collections
import optax

from fft import errors, optim, tree_paths
from fft.steps import merge_trees

Tree = Any


class MethodError(errors.FftError, ValueError):
    """A method's options are invalid for the run's model or config; the message names the field."""


class Serving(NamedTuple):
    """How a method's tasks are served several at once on one frozen backbone (fft.multitask).

    ``assemble(trainable, frozen)`` must accept trainable leaves with a leading batch axis (one
    task per example) and ``model`` must apply them; ``prepare(trainable)`` turns one task's
    trained tree into the form that is stacked (e.g. LoRA folds its scale into B)."""

    model: Any
    assemble: Callable[[Tree, Tree], Tree]
    prepare: Callable[[Tree], Tree]


class Optimizer(NamedTuple):
    """A method's optimizer: the transformation and each parameter group's learning-rate schedule."""

    tx: optax.GradientTransformation
    schedules: Mapping[str, optax.Schedule]  # group label -> lr(step); logged per step.


class Priming(NamedTuple):
    """A first training phase before a method's own run (fft.priming).

    ``config`` is phase 1's run config (another method, e.g. full fine-tuning; fft.priming sets
    its length to ``fraction`` of the run: of its epochs, of its steps, or of its time budget).
    ``finish(primed, step0, key, workdir)`` gets phase 1's final parameters and the step-0
    parameters (both dense trees of the plain model) and the method's key, and returns phase 2's
    config (e.g. with the nodes phase 1 picked, written under ``workdir``); phase 2's trained
    leaves start from phase 1's values, its frozen ones stay the step-0 ones."""

    fraction: float
    config: ml_collections.ConfigDict
    finish: Callable[[Tree, Tree, jax.Array, pathlib.Path], ml_collections.ConfigDict]


@dataclasses.dataclass(frozen=True)
class Method:
    """One fine-tuning method, as the training loop sees it (see the module docstring)."""

    name: str
    model: Any  # What the steps apply: the base model, or a variant (adapters, LoRA beside it).
    init: Callable[[Tree, jax.Array], tuple[Tree, Tree]]
    assemble: Callable[[Tree, Tree], Tree]
    optimizer: Callable[[Tree, int], Optimizer]
    export: Callable[[Tree, pathlib.Path, Mapping[str, str]], dict[str, Any]]
    import_task: Callable[[pathlib.Path, Tree], Tree]
    cache_start: Callable[[Tree], int]
    merge: Callable[[Tree, Tree], Tree] | None = None
    metrics: Callable[[Tree], dict[str, jax.Array]] | None = None
    serving: Serving | None = None  # None: no per-example multi-task serving for this method.
    description: str = ""

    def merged(self, trainable: Tree, frozen: Tree) -> Tree:
        """The task model's plain parameters (``merge`` if the method has one, else ``assemble``)."""
        return (self.merge or self.assemble)(trainable, frozen)


# ---------------------------------------------------------------------------------------------
# The model's head: one definition.


def head_keys(model: Any) -> tuple[str, ...]:
    """Top-level parameter subtrees that form the model's task head (its class's ``head_names``:
    BERT ``classifier``; DistilBERT ``pre_classifier``, ``classifier``)."""
    return tuple(model.head_names)


def head_regex(model: Any) -> str:
    """A regex that fully matches the paths of the head's leaves."""
    return "(?:" + "|".join(head_keys(model)) + ")/.*"


def num_layers(model: Any) -> int:
    return model.config.encoder_spec.num_layers


# ---------------------------------------------------------------------------------------------
# Shared pieces


_LAYER = re.compile(r"(?:^|.*/)encoder/layer_(\d+)/")


def lowest_layer(paths, num: int) -> int:
    """The lowest encoder layer any of ``paths`` lies in (``num`` if none); 0 if a path is in the
    embeddings. Paths may carry a prefix (``lora/encoder/layer_3/...``)."""
    lowest = num
    for path in paths:
        if "embeddings" in path.split("/")[:2]:
            return 0
        if m := _LAYER.match(path):
            lowest = min(lowest, int(m.group(1)))
    return lowest


def group_adamw(
    labels: Tree, lrs: Mapping[str, float], config: ml_collections.ConfigDict, total_steps: int
) -> Optimizer:
    """AdamW per label of ``labels`` (a tree shaped like the trainable parameters), each with its
    own peak learning rate ``lrs[label]`` and the run's warmup/decay (``config`` = ``optim``)."""
    used = sorted(set(jax.tree.leaves(labels)))
    missing = [label for label in used if label not in lrs]
    if missing:
        raise MethodError(f"no learning rate for parameter group(s) {missing}; given {sorted(lrs)}")
    schedules = {label: optim.schedule(lrs[label], config, total_steps) for label in used}
    txs = {label: optim.adamw_with(schedules[label], config) for label in used}
    return Optimizer(optax.partition(txs, labels), schedules)


def split_paths(params: Tree, trains: Callable[[str], bool]) -> tuple[Tree, Tree]:
    """(trainable, frozen): the leaves whose path ``trains``, and the rest (nested dicts)."""
    flat = tree_paths.flatten(params)
    trainable = {p: v for p, v in flat.items() if trains(p)}
    frozen = {p: v for p, v in flat.items() if not trains(p)}
    return tree_paths.unflatten(trainable), tree_paths.unflatten(frozen)


def merge(trainable: Tree, frozen: Tree) -> Tree:
    """The one tree merge (``fft.steps.merge_trees``): disjoint leaves into one tree."""
    return merge_trees(trainable, frozen)


def check_options(name: str, options: ml_collections.ConfigDict, defaults: Mapping[str, Any]) -> None:
    """Raises MethodError naming an option the method does not have."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise MethodError(
            f"config.{name}: unknown option(s) {unknown}; {name} takes {sorted(defaults)}"
        )
