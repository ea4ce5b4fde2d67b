"""Supermask method: binary masks over the frozen pretrained weights (:mod:`fft.supermask`).

Trainable tree ``{'scores': <float32 score per masked entry>, 'head': <head subtrees>}``; the
pretrained weights are frozen and ``assemble`` applies the straight-through masks. Scores train with
Adam at ``score_lr`` (optional L1 pull towards ``target_sparsity``), the head with AdamW at
``optim.lr``. The task is stored as packed bits plus the float32 head (:mod:`fft.mask_store`).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections
from absl import logging

from fft import mask_store, optim, partition, tree_paths
from fft import supermask as sm
from fft.methods import base

MASK_DIR = "task_mask"

OPTIONS = {
    "rules": "",  # ';'-separated path regexes; '' = attention + FFN kernels of every layer.
    "extra_rules": "",  # e.g. 'embeddings/word_embeddings/embedding;pooler/dense/kernel'.
    # Top-level subtrees that train normally (AdamW at optim.lr), stored in float32 with the masks;
    # ';'-separated, '' = the model's head. 'pooler;classifier' also trains BERT's pooler.
    "head_keys": "",
    "mode": "threshold",  # 'threshold' (score > threshold) or 'topk' (keep_fraction per tensor).
    "threshold": 0.0,
    "keep_fraction": 0.95,
    "init": "uniform",  # 'constant' | 'uniform' | 'magnitude' | 'rank' (fft.supermask docstring).
    "initial_sparsity": 0.05,
    "init_scale": 0.05,
    "score_lr": 1e-3,  # The head trains with optim.lr.
    "l1": 0.0,  # Pull kept scores down while a tensor is below target_sparsity.
    "target_sparsity": 0.0,
}


def _split(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(";") if r.strip())


def mask_config(options: ml_collections.ConfigDict, seed: int) -> sm.MaskConfig:
    """The :class:`fft.supermask.MaskConfig` of a ``supermask`` options block."""
    try:
        return sm.MaskConfig(
            rules=_split(options.rules) or (sm.ENCODER_RULE,), extra_rules=_split(options.extra_rules),
            mode=options.mode, threshold=options.threshold, keep_fraction=options.keep_fraction,
            init=options.init, initial_sparsity=options.initial_sparsity,
            init_scale=options.init_scale, seed=seed,
        )
    except ValueError as e:
        raise base.MethodError(f"config.supermask: {e}") from None


def head_keys(options: ml_collections.ConfigDict, model, params) -> tuple[str, ...]:
    """Top-level subtrees that train normally: ``head_keys`` or the model's head."""
    keys = _split(options.head_keys) or base.head_keys(model)
    unknown = [k for k in keys if k not in params]
    if unknown:
        raise ValueError(
            f"config.supermask.head_keys={options.head_keys!r}: {unknown} are not top-level "
            f"parameter subtrees of the model ({sorted(params)})"
        )
    return keys


def create(options: ml_collections.ConfigDict, config: ml_collections.ConfigDict, model) -> base.Method:
    mcfg = mask_config(options, config.seed)
    assemble = sm.make_assemble(mcfg)
    num = base.num_layers(model)

    def init(params, rng):
        del rng  # Scores are drawn from the config's seed (fold_in per path), as they always were.
        trainable, frozen = sm.init_trainable(None, params, mcfg, head_keys=head_keys(options, model, params))
        trainable = jax.device_get(trainable)
        logging.info(
            "Supermask: %d masked tensors (%d entries), initial sparsity %.3f, head %s",
            len(tree_paths.flatten(trainable["scores"])), partition.count_params(trainable["scores"]),
            options.initial_sparsity, sorted(trainable["head"]),
        )
        return trainable, frozen

    def optimizer(trainable, total_steps):
        o = config.optim
        tx = sm.make_optimizer(
            options.score_lr, o.lr, total_steps, config=mcfg, warmup_fraction=o.warmup_fraction,
            head_weight_decay=o.weight_decay, l1=options.l1,
            target_sparsity=options.target_sparsity or None, b1=o.b1, b2=o.b2, eps=o.eps,
        )
        schedules = {
            "scores": optim.schedule(options.score_lr, o, total_steps),
            "head": optim.schedule(o.lr, o, total_steps),
        }
        return base.Optimizer(tx, schedules)

    def metrics(trainable):
        sparsity = sm.sparsity(trainable["scores"], mcfg)
        return {f"mask/sparsity/{k}": v for k, v in sparsity.items()}

    def export(trainable, directory, metadata):
        trainable = jax.device_get(trainable)
        report = mask_store.export_task(
            pathlib.Path(directory) / MASK_DIR, trainable["scores"], trainable["head"], mcfg, dict(metadata)
        )
        sparsity = jax.device_get(sm.sparsity(trainable["scores"], mcfg))
        return {**report, "sparsity": {k: float(v) for k, v in sparsity.items()},
                "stored_bytes": report["packed_bytes"], "file": MASK_DIR}

    def import_task(directory, params):
        _, pretrained = sm.split_head(params, head_keys(options, model, params))
        return mask_store.import_task(pathlib.Path(directory) / MASK_DIR, pretrained)

    def cache_start(trainable):
        paths = [*tree_paths.flatten(trainable["scores"]), *tree_paths.flatten(trainable["head"])]
        return base.lowest_layer(paths, num)

    return base.Method(
        name="supermask", model=model, init=init, assemble=assemble, optimizer=optimizer,
        export=export, import_task=import_task, cache_start=cache_start,
        merge=functools.partial(_merge, assemble), metrics=metrics,
        description=f"supermask {mcfg.mode} init={mcfg.init}@{mcfg.initial_sparsity:g}",
    )


def _merge(assemble, trainable, frozen):
    return jax.lax.stop_gradient(assemble(trainable, frozen))


ENTRY = (OPTIONS, create)
