"""BERT-family encoders with a sequence-classification head, and a read-only registry of them.

`MODEL_TYPES` maps a Hugging Face `config.json` `model_type` to what `fft` needs to build the model and
to read its checkpoints; `create_model` builds a classifier from a registry key, pooling its hidden
states by the first token ('cls') or by the mean of the real tokens ('mean'). Load weights with
`fft.models.loading` (`load_pretrained`, then `init_params`). `with_adapters` adds bottleneck
adapters (`bert.AdapterSpec`) to a model; `init_params` initialises them when the pretrained tree
lacks them. `with_learners` splits every FFN into frozen and learner nodes (`bert.LearnerSpec`;
its parameters come from `fft.methods.learners`, which slices them out of the plain model's).
"""

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from fft import errors
from fft.models import bert, distilbert

POOLINGS = bert.POOLINGS  # The `pooling` values of create_model (config.model.pooling).


class ModelType(NamedTuple):
    """One registry entry.

    Attributes:
      config_class: frozen dataclass with a `from_hf_dict(config_json_dict)` classmethod.
      classifier_class: Flax module `(config, num_labels, dtype, pooling)`; its `head_names` class
        attribute lists the top-level parameter collections that form the task head, and its
        `unused_pretrained` attribute the top-level checkpoint subtrees it has no parameters for
        (BERT's `pooler` with mean pooling).
      hf_prefix: prefix of the base model in HF task checkpoints ('bert' in `bert.encoder...`).
      hf_rules: the converter from an HF state dict: (regex on the HF module name, our path template,
        kind of module 'dense' | 'norm' | 'embed'), applied by `loading.convert_hf_state_dict`.
    """

    config_class: type
    classifier_class: type[nn.Module]
    hf_prefix: str
    hf_rules: tuple[tuple[str, str, str], ...]


MODEL_TYPES: Mapping[str, ModelType] = types.MappingProxyType(
    {
        "bert": ModelType(
            bert.BertConfig, bert.BertForSequenceClassification, bert.HF_PREFIX, bert.HF_RULES
        ),
        "distilbert": ModelType(
            distilbert.DistilBertConfig,
            distilbert.DistilBertForSequenceClassification,
            distilbert.HF_PREFIX,
            distilbert.HF_RULES,
        ),
    }
)


# Every registered classifier's head subtrees (BERT: classifier; DistilBERT: pre_classifier,
# classifier): the model-agnostic default of functions that take no model. With a model, ask it:
# `fft.methods.head_keys(model)`.
ALL_HEAD_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(n for entry in MODEL_TYPES.values() for n in entry.classifier_class.head_names)
)


class ModelConfigError(errors.FftError, ValueError):
    """A model option that fft does not know (e.g. `config.model.pooling`)."""


def create_model(
    model_type: str,
    model_config: Any,
    num_labels: int,
    dtype: jnp.dtype = jnp.float32,
    pooling: str = "cls",
) -> nn.Module:
    """Builds the sequence classifier registered under `model_type`.

    Args:
      model_type: a key of `MODEL_TYPES` ('bert', 'distilbert').
      model_config: an instance of that entry's `config_class`.
      num_labels: number of logits (1 for regression).
      dtype: compute dtype (jnp.float32 or jnp.bfloat16); parameters are always float32.
      pooling: how an example's hidden states become the vector the head classifies (one of
        `POOLINGS`): 'cls', the first token (BERT: then its pretrained pooler, dense + tanh);
        'mean', the float32 mean over the example's real tokens (BERT: no pooler parameters;
        `loading.init_params` drops the checkpoint's).

    Returns:
      An unbound Flax module; `model.apply({'params': p}, input_ids, attention_mask, token_type_ids,
      deterministic=...)` gives float32 logits [batch, num_labels]; `method=model.pool` gives the
      pooled vectors [batch, hidden] float32.

    Raises:
      ModelConfigError: unknown `pooling` (a ValueError).
      ValueError: unknown `model_type` or num_labels < 1.
      TypeError: `model_config` is not the entry's `config_class`.
    """
    if pooling not in POOLINGS:
        raise ModelConfigError(
            f"config.model.pooling={pooling!r} is not a pooling; valid: "
            f"{', '.join(repr(p) for p in POOLINGS)}.",
            hint="'cls' pools the first token (BERT: through its pooler), 'mean' the mean of the "
            "real tokens (how sentence-transformers models such as minilm were trained).",
        )
    if model_type not in MODEL_TYPES:
        raise ValueError(f"Unknown model type {model_type!r}; known: {sorted(MODEL_TYPES)}.")
    entry = MODEL_TYPES[model_type]
    if not isinstance(model_config, entry.config_class):
        raise TypeError(
            f"Model type {model_type!r} needs a {entry.config_class.__name__}, "
            f"got {type(model_config).__name__}."
        )
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
    return entry.classifier_class(model_config, num_labels, dtype, pooling)


def with_adapters(model: nn.Module, spec: bert.AdapterSpec | None) -> nn.Module:
    """The same classifier with bottleneck adapters `spec` in every encoder layer (None: without).

    Parameter paths gain `encoder/layer_{i}/attention/output/adapter/{down,up}/{kernel,bias}`
    (site 'attention') and `encoder/layer_{i}/output/adapter/...` (site 'ffn'); all others stay.
    Adapters start as the identity (zero `up`), so at init the logits equal the model's without.

    Raises:
      TypeError: `spec` is not a `bert.AdapterSpec` (or None), or the model has no config with an
        `adapter` field.
      ValueError: `spec.size` exceeds the model's hidden_size.
    """
    config = getattr(model, "config", None)
    fields = (
        {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else ()
    )
    if "adapter" not in fields:
        raise TypeError(f"{type(model).__name__} has no config with an `adapter` field.")
    bert.check_adapter(spec, config.hidden_size)
    return model.clone(config=dataclasses.replace(config, adapter=spec))


def with_learners(model: nn.Module, spec: bert.LearnerSpec | None) -> nn.Module:
    """The same classifier with each layer's FFN split into learner and other nodes (`spec`;
    None: the plain FFN). See `bert.LearnerSpec` for the function and the parameters.

    Parameter paths gain `encoder/layer_{i}/intermediate/learner/{kernel,bias}` ([hidden, k_i],
    [k_i]) and `encoder/layer_{i}/output/learner/kernel` ([k_i, hidden]); `intermediate/dense`
    and `output/dense` keep their paths but hold only the other F - k_i nodes.

    Raises:
      TypeError: `spec` is not a `bert.LearnerSpec` (or None), or the model has no config with a
        `learners` field.
      ValueError: `spec` does not fit the model (layer count, intermediate size).
    """
    config = getattr(model, "config", None)
    fields = (
        {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else ()
    )
    if "learners" not in fields:
        raise TypeError(f"{type(model).__name__} has no config with a `learners` field.")
    bert.check_learners(spec, config.num_layers, config.intermediate_size)
    return model.clone(config=dataclasses.replace(config, learners=spec))
