"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021) over a frozen encoder.

Each adapter is ``y + up(act(down(y)))`` with a ``size``-wide bottleneck, inserted after a
sublayer's output projection (and its dropout), before the residual add and LayerNorm
(:class:`fft.models.bert.Adapter`, ``encoder/layer_i/{attention/output,output}/adapter/...``):
  houlsby   after the attention output and after the FFN output (two per layer)
  pfeiffer  after the FFN output only
The up-projection starts at zero, so step 0 is the pretrained model. The adapters, the head and
(``train_layer_norms``) every LayerNorm train, plus the leaves ``train`` selects; the rest is
frozen. The adapter parameters are new: they are drawn from the run's key when the pretrained
model lacks them. The task is stored as the trained leaves (``task_delta.safetensors``).
"""

from __future__ import annotations

import pathlib
import re

import jax
import ml_collections
from absl import logging

from fft import delta, models, partition, tree_paths
from fft.methods import base
from fft.models import bert, loading

DELTA_FILE = "task_delta.safetensors"
PLACEMENTS = {"houlsby": ("attention", "ffn"), "pfeiffer": ("ffn",)}
LAYER_NORM = r"(?:.*/)?layer_norm/(?:scale|bias)"

OPTIONS = {
    "size": 64,  # Bottleneck width.
    "placement": "houlsby",  # 'houlsby' (attention + FFN outputs) or 'pfeiffer' (FFN output only).
    "activation": "relu",  # Bottleneck nonlinearity (fft.models.bert.ACTIVATIONS).
    "train_layer_norms": True,  # Every LayerNorm trains too (as Houlsby et al. did).
    "train": "",  # ';'-separated regexes of extra leaves that train in full.
    "head_lr": 0.0,  # Peak learning rate of the head; 0 uses optim.lr.
}


def create(options: ml_collections.ConfigDict, config: ml_collections.ConfigDict, model) -> base.Method:
    if options.placement not in PLACEMENTS:
        raise base.MethodError(
            f"config.adapters.placement={options.placement!r}; valid: {', '.join(PLACEMENTS)}"
        )
    if not isinstance(options.size, int) or options.size < 1:
        raise base.MethodError(f"config.adapters.size={options.size!r} must be an integer >= 1")
    try:
        spec = bert.AdapterSpec(int(options.size), PLACEMENTS[options.placement], options.activation)
        adapted = models.with_adapters(model, spec)
    except (ValueError, TypeError) as e:
        raise base.MethodError(f"config.adapters: {e}") from None
    extra = [r.strip() for r in options.train.split(";") if r.strip()]
    head = base.head_regex(model)
    num = base.num_layers(model)

    def trains(path: str) -> bool:
        return (
            loading.is_new_param(path)
            or re.fullmatch(head, path) is not None
            or (options.train_layer_norms and re.fullmatch(LAYER_NORM, path) is not None)
            or any(re.fullmatch(r, path) for r in extra)
        )

    def label(path: str) -> str:
        if loading.is_new_param(path):
            return "adapters"
        return "head" if re.fullmatch(head, path) else "train"

    def init(params, rng):
        for r in extra:
            if not any(re.fullmatch(r, p) for p in tree_paths.flatten(params)):
                raise base.MethodError(f"config.adapters.train rule {r!r} matches no parameter")
        # The adapted model's tree: the given weights and head, new adapter leaves from `rng`.
        full = tree_paths.flatten(jax.device_get(loading.init_params(adapted, rng, params)))
        full.update(tree_paths.flatten(params))
        trainable, frozen = base.split_paths(tree_paths.unflatten(full), trains)
        new = [p for p in tree_paths.flatten(trainable) if loading.is_new_param(p)]
        logging.info(
            "Adapters (%s, size %d): %d new leaves, %d trainable parameters",
            options.placement, options.size, len(new), partition.count_params(trainable),
        )
        return trainable, frozen

    def optimizer(trainable, total_steps):
        flat = tree_paths.flatten(trainable)
        labels = tree_paths.unflatten({p: label(p) for p in flat})
        lrs = {"adapters": config.optim.lr, "train": config.optim.lr,
               "head": options.head_lr or config.optim.lr}
        return base.group_adamw(labels, lrs, config.optim, total_steps)

    def export(trainable, directory, metadata):
        meta = {**metadata, "adapter_size": str(options.size), "adapter_placement": options.placement}
        size = delta.export_delta(trainable, pathlib.Path(directory) / DELTA_FILE, meta)
        return {"stored_bytes": size, "file": DELTA_FILE}

    def import_task(directory, params):
        trained, _ = delta.load_delta(pathlib.Path(directory) / DELTA_FILE)
        flat = tree_paths.flatten(params)
        flat.update(tree_paths.flatten(trained))
        return tree_paths.unflatten(flat)

    def cache_start(trainable):
        return base.lowest_layer(tree_paths.flatten(trainable), num)

    return base.Method(
        name="adapters", model=adapted, init=init, assemble=base.merge, optimizer=optimizer,
        export=export, import_task=import_task, cache_start=cache_start,
        serving=base.Serving(adapted, base.merge, lambda trainable: trainable),
        description=f"adapters {options.placement} size={options.size} act={options.activation}",
    )


ENTRY = (OPTIONS, create)
