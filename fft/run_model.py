"""A run's model and parameters: the classifier a config names (`load_model`), the config a
workdir was started with (`load_run_config`), the task model of a trained tree (`task_params`),
its export (`export_run`) and a priming phase's parameters cut for the next phase
(`trainable_from_run`). `fft.train` re-exports these names."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fft import checkpoint, errors, methods, models, tree_paths
from fft.data import glue
from fft.models import loading


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A model, its pretrained (or random) parameters on the host, and its tokenizer folder."""

    model: Any  # flax.linen.Module
    params: Any  # nested dict of numpy arrays, head included
    tokenizer_dir: pathlib.Path
    description: str


def load_model(config: ml_collections.ConfigDict, num_labels: int) -> ModelBundle:
    """Builds the classifier: pretrained weights from `config.model.name`, fresh head from the seed."""
    dtype = jnp.dtype(config.model.dtype)
    rng = jax.random.key(config.seed)
    pooling = config.model.get("pooling", "cls")  # Runs from before the field pooled by 'cls'.
    rand = config.model.random_init
    if rand.enabled:
        pooling = loading.resolve_pooling(pooling, None)
        fields = {k: v for k, v in rand.items() if k not in ("enabled", "tokenizer")}
        model_config = models.bert.BertConfig(**fields)
        model = models.create_model("bert", model_config, num_labels, dtype, pooling)
        params = jax.device_get(jax.jit(functools.partial(_random_init, model))(rng))
        tokenizer_dir = loading.resolve_model_dir(rand.tokenizer)
        shape = (f"{fields['num_layers']} layers, hidden {fields['hidden_size']}, {fields['num_heads']} heads, "
                 f"ffn {fields['intermediate_size']}")
        return ModelBundle(model, params, tokenizer_dir, f"random-init bert ({shape})")
    model_dir = loading.resolve_model_dir(config.model.name)
    pooling = loading.resolve_pooling(pooling, model_dir)
    pretrained = loading.load_pretrained(model_dir)
    model = models.create_model(
        pretrained.model_type, pretrained.model_config, num_labels, dtype, pooling
    )
    params = loading.init_params(model, rng, pretrained.params)
    pooled = "" if pooling == "cls" else f", {pooling} pooling"
    return ModelBundle(model, params, model_dir, f"{pretrained.model_type} from {model_dir}{pooled}")


def _random_init(model, rng: jax.Array):
    ids = jnp.ones((1, 8), jnp.int32)
    return model.init(rng, ids, ids, jnp.zeros_like(ids), deterministic=True)["params"]


def with_concrete_pooling(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config with `model.pooling='auto'` replaced by what it means for this model (a copy;
    `loading.resolve_pooling`), so the run's config.json, its export and its analysis name the
    pooling the run used."""
    if config.model.get("pooling") != loading.POOLING_AUTO:
        return config
    config = copy.deepcopy(config)
    config.model.pooling = loading.config_pooling(config.model)
    logging.info("model.pooling=auto: %s for %s", config.model.pooling, config.model.name)
    return config


def load_run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The config a run was started with (its workdir's config.json), in today's layout: configs
    written before methods were parts (see `methods.upgrade_config`) name the same method."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise errors.RunError(f"{path}: missing; is {workdir} a run's workdir?")
    return methods.upgrade_config(ml_collections.ConfigDict(json.loads(path.read_text())))


def method_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The key a method draws the parameters it adds from (low-rank factors, bottleneck layers)."""
    return jax.random.fold_in(jax.random.key(config.seed), 0x6D657468)


def task_params(config: ml_collections.ConfigDict, trained: Any) -> tuple[Any, Any]:
    """(step-0 parameters, task model) of a run whose trainable tree is `trained`: the task model
    is the method's `merged` parameters (LoRA folded in, masks applied), on the host."""
    bundle = load_model(config, glue.get_task(config.task).num_labels)
    method = methods.create(config, bundle.model)
    _, frozen = method.init(bundle.params, method_key(config))
    return bundle.params, jax.device_get(method.merged(trained, frozen))


def export_run(workdir: str | pathlib.Path, *, out_dir: str | pathlib.Path | None = None,
               step: int | None = None) -> dict[str, Any]:
    """Writes a run's task as its method's export stores it from a
    checkpoint (default the latest) into `out_dir` (default the workdir), e.g. after training
    with `export_delta=False`, or from an earlier step. Returns the method's export report with
    the written `file` path and the `step`."""
    workdir = pathlib.Path(workdir)
    config = load_run_config(workdir)
    state, step = checkpoint.load_state_dict(workdir, step)
    bundle = load_model(config, glue.get_task(config.task).num_labels)
    method = methods.create(config, bundle.model)
    method.init(bundle.params, method_key(config))  # Methods that choose what trains (e.g. nodes) choose it here.
    out = pathlib.Path(out_dir) if out_dir else workdir
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"task": config.task, "model": bundle.description, "method": method.description, "step": str(step)}
    report = method.export(state["params"], out, metadata)
    return {**report, "file": str(out / report["file"]), "step": step}


def trainable_from_run(config, method, source: str, fresh: Any) -> Any:
    """The trainable leaves of `method` cut from the final parameters of the run in `source` (a
    priming phase): its task model goes through `method.init` like the pretrained weights do."""
    source_config = load_run_config(source)
    state, _ = checkpoint.load_state_dict(source)
    _, primed = task_params(source_config, state["params"])
    trainable, _ = method.init(primed, method_key(config))
    trainable = jax.device_get(trainable)
    want = {p: np.shape(v) for p, v in tree_paths.flatten(fresh).items()}
    got = {p: np.shape(v) for p, v in tree_paths.flatten(trainable).items()}
    if want != got:
        raise errors.RunError(f"config.init_trainable_from={source}: its parameters do not fit this "
                              f"run's trainable tree ({sorted(set(want) ^ set(got))[:3] or 'shapes differ'})")
    return trainable
