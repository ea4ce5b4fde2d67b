"""Methods that train a subset of the model's own parameters: full fine-tuning, the head only
(linear probing), BitFit, LayerNorm-only, chosen layers, the critical layers, or any rules.

Each is a list of ``(regex, label)`` rules over parameter paths (:mod:`fft.partition`): label
``frozen`` leaves go to the frozen tree and are never differentiated; every other label is an
optimizer group (AdamW at ``optim.lr``; the ``head`` group at ``head_lr`` when set). The task is
stored as the trained leaves (``task_delta.safetensors``, :mod:`fft.delta`).

  full       everything trains.
  head       only the head trains.
  bitfit     every bias and the head (Ben Zaken et al., 2022).
  layernorm  every LayerNorm scale and bias and the head.
  layers     ``select`` encoder layers (``top2``, ``4-5``, ``0,3``) and the head; the pooler
             trains with the top layer.
  critical   the ``k`` layers that moved most in a full fine-tuning run (``distances_file``).
  rules      ``rules``: ``'regex=label;regex=label'`` in order, first match wins.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
from absl import logging

from fft import delta, partition, tree_paths
from fft.methods import base

DELTA_FILE = "task_delta.safetensors"
HEAD_LR = {"head_lr": 0.0}  # The head group's peak learning rate; 0 uses optim.lr.


def parse_rules(text: str, field: str = "rules.rules") -> list[partition.Rule]:
    """``'regex=label;regex=label'`` -> ``[(regex, label), ...]``."""
    rules = []
    for item in text.split(";"):
        regex, sep, label = item.rpartition("=")
        if not sep or not regex or not label:
            raise partition.PartitionError(
                f"config.{field} item {item!r}: expected 'regex=label' (items separated by ';')"
            )
        rules.append((regex.strip(), label.strip()))
    return rules


def _preset(spec: str):
    def rules(options, config, model) -> list[partition.Rule]:
        return partition.preset_rules(spec, base.num_layers(model), head=base.head_regex(model))

    return rules


def _layers(options, config, model) -> list[partition.Rule]:
    return partition.preset_rules(
        f"layers:{options.select}", base.num_layers(model), head=base.head_regex(model)
    )


def _critical(options, config, model) -> list[partition.Rule]:
    return partition.preset_rules(
        f"critical:{options.k}", base.num_layers(model), head=base.head_regex(model),
        distances_file=options.distances_file or None,
    )


def _rules(options, config, model) -> list[partition.Rule]:
    if not options.rules:
        raise partition.PartitionError("config.rules.rules is empty: give 'regex=label;...'")
    return parse_rules(options.rules)


def _description(name: str, options: ml_collections.ConfigDict) -> str:
    detail = {"layers": "select", "critical": "k", "rules": "rules"}.get(name)
    return f"{name}:{options[detail]}" if detail else name


def make(name: str, rules_fn) -> Any:
    """The ``create(options, config, model)`` of a rules-based method."""

    def create(options: ml_collections.ConfigDict, config: ml_collections.ConfigDict, model) -> base.Method:
        rules = rules_fn(options, config, model)
        lr, head_lr = config.optim.lr, options.head_lr or config.optim.lr
        num = base.num_layers(model)
        description = _description(name, options)

        def init(params, rng):
            del rng  # Nothing new to draw: the head was drawn with the model.
            label_tree = partition.labels(params, rules)
            logging.info("Partition (%s):\n%s", description, partition.summary(params, label_tree, rules))
            return partition.split(params, label_tree)

        def optimizer(trainable, total_steps):
            labels = partition.labels(trainable, rules, every_rule=False)
            used = set(jax.tree.leaves(labels))
            lrs = {label: head_lr if label == "head" else lr for label in used}
            return base.group_adamw(labels, lrs, config.optim, total_steps)

        def export(trainable, directory: pathlib.Path, metadata):
            path = pathlib.Path(directory) / DELTA_FILE
            size = delta.export_delta(trainable, path, {**metadata, "partition": description})
            return {"stored_bytes": size, "file": DELTA_FILE}

        def import_task(directory: pathlib.Path, params):
            trained, _ = delta.load_delta(pathlib.Path(directory) / DELTA_FILE)
            return delta.apply_delta(params, trained)

        def cache_start(trainable):
            return base.lowest_layer(tree_paths.flatten(trainable), num)

        return base.Method(
            name=name, model=model, init=init, assemble=base.merge, optimizer=optimizer,
            export=export, import_task=import_task, cache_start=cache_start,
            serving=base.Serving(model, base.merge, lambda trainable: trainable),
            description=description,
        )

    return create


def plain(name: str, **extra: Any) -> tuple[dict[str, Any], Any]:
    """(options, create) of the presets without options of their own."""
    return {**HEAD_LR, **extra}, make(name, _preset(name))


FULL = plain("full")
HEAD = plain("head")
BITFIT = plain("bitfit")
LAYERNORM = plain("layernorm")
LAYERS = ({"select": "top2", **HEAD_LR}, make("layers", _layers))
CRITICAL = ({"k": 2, "distances_file": "", **HEAD_LR}, make("critical", _critical))
RULES = ({"rules": "", **HEAD_LR}, make("rules", _rules))
