"""LoRA tasks to and from Hugging Face PEFT (`adapter_config.json` + `adapter_model.safetensors`).

    task = peft_io.read("adapter_dir")                 # PEFT factors in fft layout, nothing merged
    model, params = peft_io.load("adapter_dir")        # fft model + merged dense params
    logits = model.apply({"params": params}, ids, mask, types, deterministic=True)
    peft_io.save("out_dir", lora={"encoder/layer_0/attention/query": (A, B)}, rank=4, alpha=8,
                 modules_to_save={"classifier/kernel": k, "classifier/bias": b},
                 base_model_name_or_path="sentence-transformers/all-MiniLM-L6-v2")

fft's LoRA layout: a LoRA-adapted Dense at module path P (kernel `P/kernel`, [in, out]) has factors
A float32 [in, r] and B float32 [r, out]; its effective kernel is `kernel + scale * A @ B` with
scale = alpha / r (alpha / sqrt(r) under PEFT's `use_rslora`). PEFT stores `lora_A.weight` = A.T
[r, in] and `lora_B.weight` = B.T [out, r] under the torch module name, e.g.
`base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight`; modules that train in
full (`modules_to_save`: the classifier, the pooler, ...) are stored under their plain names
(`base_model.model.classifier.weight`). Names are mapped with the BERT registry entry's HF rules
(`fft.models.MODEL_TYPES['bert']`), inverted for writing. Only BERT sequence classifiers
(`BertForSequenceClassification`, PEFT task_type SEQ_CLS) are supported.

Needs neither torch nor peft (a legacy `adapter_model.bin` is read only when torch is installed).
"""

import dataclasses
import json
import math
import os
import pathlib
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import numpy as safetensors_numpy

from fft import errors, models
from fft.models import loading

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."  # PeftModel -> base model -> its modules.
MODEL_TYPE = "bert"

_ENTRY = models.MODEL_TYPES[MODEL_TYPE]
_HEAD = "classifier"  # BertForSequenceClassification's head: the same name in HF and fft.
# HF leaf name -> fft leaf name, per kind of module (`gamma`/`beta`: legacy layer-norm names).
_LEAVES = {
    "dense": {"weight": "kernel", "bias": "bias"},
    "norm": {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"},
    "embed": {"weight": "embedding"},
}
_WRITE_LEAVES = {
    kind: {ours: theirs for theirs, ours in reversed(leaves.items())}
    for kind, leaves in _LEAVES.items()
}
_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<factor>[AB])\.(?P<leaf>weight|bias)")
# Config fields whose truthy values change what the factors mean; fft cannot honour them.
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora=true)",
    "use_qalora": "QALoRA (use_qalora=true)",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "arrow_config": "Arrow routing (arrow_config)",
    "layer_replication": "layer_replication",
    "trainable_token_indices": "trainable_token_indices",
    "target_parameters": "target_parameters (LoRA on nn.Parameter)",
}
# `init_lora_weights` values that rewrite the base weights: the factors need a changed base model.
_MUTATING_INITS = ("pissa", "olora", "corda", "loftq")
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


class AdapterError(errors.FftError, ValueError):
    """A PEFT adapter that fft cannot read: wrong method, architecture, names or shapes."""


class AdapterNotFoundError(errors.FftError, FileNotFoundError):
    """The adapter folder, its adapter_config.json or its weights file is missing."""


@dataclasses.dataclass(frozen=True)
class PeftTask:
    """A PEFT LoRA adapter in fft layout, nothing merged (see `read`).

    Attributes:
      config: adapter_config.json as a dict.
      lora: fft module path (e.g. 'encoder/layer_0/attention/query') -> (A [in, r], B [r, out]).
      scale: fft module path -> the factor of A @ B (alpha / r, or alpha / sqrt(r) with rsLoRA;
        `rank_pattern` / `alpha_pattern` applied).
      modules_to_save: fft param path (e.g. 'classifier/kernel') -> array, for modules stored
        whole (PEFT's modules_to_save, and weights saved outside any LoRA layer).
      biases: fft param path -> array, for bias tensors stored under the adapter's `bias` setting
        ('all' or 'lora_only') that belong to no module in `modules_to_save`.
      lora_bias: fft module path -> bias of lora_B [out] (PEFT's `lora_bias=True`), added to the
        module's bias times its scale.
      sources: fft path -> the PEFT tensor name it came from (for lora factors the keys are
        'P/lora_A', 'P/lora_B', 'P/lora_bias'); used in error messages.
    """

    config: Mapping[str, Any]
    lora: Mapping[str, tuple[np.ndarray, np.ndarray]]
    scale: Mapping[str, float]
    modules_to_save: Mapping[str, np.ndarray]
    biases: Mapping[str, np.ndarray]
    lora_bias: Mapping[str, np.ndarray]
    sources: Mapping[str, str]

    @property
    def num_labels(self) -> int:
        """Number of logits of the stored classifier."""
        for path in (f"{_HEAD}/bias", f"{_HEAD}/kernel"):
            value = self.modules_to_save.get(path)
            if value is not None:
                return int(np.shape(value)[-1])
        raise AdapterError(
            "The adapter stores no classifier (base_model.model.classifier.weight/bias): it is not "
            "a BertForSequenceClassification (task_type SEQ_CLS) adapter, so num_labels is unknown."
        )


# --- Names --------------------------------------------------------------------------------------

_GROUP = re.compile(r"\(([^()?][^()]*)\)")  # a plain capture group, no nesting.
_BACKREF = re.compile(r"\\(\d+)")


def _invert_rule(pattern: str, template: str) -> tuple[re.Pattern, str]:
    """(regex on the HF module name, fft template) -> (regex on the fft path, HF template)."""
    parts = _GROUP.split(pattern)
    literals, groups = parts[0::2], parts[1::2]
    if any(re.search(r"(?<!\\)[][(){}.*+?^$|]", lit) for lit in literals):
        raise ValueError(f"HF rule {pattern!r} is not invertible (regex syntax outside groups).")
    plain = [re.sub(r"\\(.)", r"\1", lit) for lit in literals]
    hf_template = plain[0] + "".join(f"\\g<g{i + 1}>{lit}" for i, lit in enumerate(plain[1:]))
    regex, seen = "", set()
    for i, piece in enumerate(_BACKREF.split(template)):
        if i % 2 == 0:
            regex += re.escape(piece)
        else:
            n = int(piece)
            regex += f"(?P=g{n})" if n in seen else f"(?P<g{n}>{groups[n - 1]})"
            seen.add(n)
    if seen != set(range(1, len(groups) + 1)):
        raise ValueError(f"HF rule {pattern!r} -> {template!r} drops a group; not invertible.")
    return re.compile(regex), hf_template


_INVERSE_RULES = tuple(
    (*_invert_rule(pattern, template), kind) for pattern, template, kind in _ENTRY.hf_rules
)


def hf_to_fft_module(name: str) -> tuple[str, str] | None:
    """HF module name relative to the task model ('bert.encoder.layer.0.attention.self.query',
    'classifier') -> (fft module path, kind 'dense' | 'norm' | 'embed'), or None if no BERT
    module has that name. The `bert.` prefix may be missing (a BertModel-based adapter)."""
    if name == _HEAD:
        return _HEAD, "dense"
    short = name.removeprefix(_ENTRY.hf_prefix + ".")
    for pattern, template, kind in _ENTRY.hf_rules:
        match = re.fullmatch(pattern, short)
        if match:
            return match.expand(template), kind
    return None


def fft_to_hf_module(path: str) -> tuple[str, str]:
    """fft module path -> (HF module name relative to BertForSequenceClassification, kind).

    Raises:
      AdapterError: no BERT module has that path.
    """
    if path == _HEAD:
        return _HEAD, "dense"
    for regex, hf_template, kind in _INVERSE_RULES:
        match = regex.fullmatch(path)
        if match:
            name = f"{_ENTRY.hf_prefix}.{match.expand(hf_template)}"
            if hf_to_fft_module(name) == (path, kind):
                return name, kind
    raise AdapterError(f"{path!r} is not the path of a BERT module (see docs/CONTRACT.md).")


# --- Reading ------------------------------------------------------------------------------------


def read(adapter_dir: str | os.PathLike) -> PeftTask:
    """Reads a LoRA adapter folder written by PEFT into fft layout, without a base model.

    Args:
      adapter_dir: folder with adapter_config.json and adapter_model.safetensors (or a legacy
        adapter_model.bin, which needs torch).

    Returns:
      A `PeftTask`.

    Raises:
      AdapterNotFoundError: the folder, adapter_config.json or the weights file is missing.
      AdapterError: peft_type is not LORA, an unsupported LoRA variant, tensors that name no BERT
        module (an adapter for another architecture), or A/B factors whose ranks disagree with
        each other or with the config (`r`, `rank_pattern`).
    """
    adapter_dir = pathlib.Path(adapter_dir)
    config = read_config(adapter_dir)
    state = _read_weights(adapter_dir)
    lora_parts: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
    plain: dict[str, tuple[str, np.ndarray, bool]] = {}  # fft param -> (key, value, alternate)
    for key in sorted(state):
        value = state[key]
        name = key.removeprefix(PEFT_PREFIX)
        match = _LORA_KEY.fullmatch(name)
        if match:
            module = match["module"]
            _known_module(module, key, lora=True)
            part = f"lora_{match['factor']}" if match["leaf"] == "weight" else "lora_bias"
            if part == "lora_bias" and match["factor"] == "A":
                raise AdapterError(f"Adapter tensor {key!r}: lora_A has no bias in PEFT's LoRA.")
            lora_parts.setdefault(module, {})[part] = (key, value)
            continue
        if ".lora_" in name or "lora_magnitude_vector" in name:
            raise AdapterError(
                f"Adapter tensor {key!r} is not a plain LoRA factor (embedding LoRA, DoRA or "
                "another variant); fft reads LoRA on Linear layers only."
            )
        segments = name.split(".")
        if "original_module" in segments:
            continue  # PEFT's untouched copy of a module in modules_to_save; never used.
        alternate = "modules_to_save" in segments  # a second copy saved under bias='all'.
        segments = [s for s in segments if s not in ("modules_to_save", "base_layer")]
        module, leaf = ".".join(segments[:-1]), segments[-1]
        fft_module, kind = _known_module(module, key, lora=False)
        if leaf not in _LEAVES[kind]:
            raise AdapterError(f"Adapter tensor {key!r}: {module!r} has no parameter {leaf!r}.")
        path = f"{fft_module}/{_LEAVES[kind][leaf]}"
        array = np.ascontiguousarray(value.T) if path.endswith("/kernel") else value
        if path in plain and not (plain[path][2] or alternate):
            raise AdapterError(f"Adapter tensors {plain[path][0]!r} and {key!r} both set {path}.")
        if path not in plain or plain[path][2]:
            plain[path] = (key, array, alternate)

    lora, scale, lora_bias, sources = {}, {}, {}, {}
    for module, parts in sorted(lora_parts.items()):
        fft_module, _ = hf_to_fft_module(module)
        for part in ("lora_A", "lora_B"):
            if part not in parts:
                raise AdapterError(
                    f"Adapter tensor {PEFT_PREFIX}{module}.{part}.weight is missing "
                    f"(the other factor is stored)."
                )
        (key_a, a), (key_b, b) = parts["lora_A"], parts["lora_B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise AdapterError(
                f"Rank mismatch: {key_a} has shape {tuple(a.shape)} ([r, in]) but {key_b} has "
                f"shape {tuple(b.shape)} ([out, r])."
            )
        rank = a.shape[0]
        configured = _pattern_value(config.get("rank_pattern"), module, config.get("r", rank))
        if int(configured) != rank:
            raise AdapterError(
                f"Rank mismatch: {key_a} has rank {rank} but adapter_config.json gives "
                f"r={configured} for {module} (r / rank_pattern)."
            )
        alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
        lora[fft_module] = (np.ascontiguousarray(a.T), np.ascontiguousarray(b.T))
        scale[fft_module] = float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)
        sources[f"{fft_module}/lora_A"], sources[f"{fft_module}/lora_B"] = key_a, key_b
        if "lora_bias" in parts:
            key, value = parts["lora_bias"]
            lora_bias[fft_module] = value
            sources[f"{fft_module}/lora_bias"] = key

    saved_modules = {p.rpartition("/")[0] for p in plain if not p.endswith("/bias")}
    configured = config.get("modules_to_save") or []
    modules_to_save, biases = {}, {}
    for path, (key, value, _) in sorted(plain.items()):
        module = path.rpartition("/")[0]
        hf_module = _hf_module_of(key)
        whole = module in saved_modules or any(hf_module.endswith(m) for m in configured)
        (modules_to_save if whole else biases)[path] = value
        sources[path] = key
    overlap = sorted(set(lora) & {p.rpartition("/")[0] for p in modules_to_save})
    if overlap:
        raise AdapterError(f"Modules both LoRA-adapted and saved whole: {overlap}.")
    return PeftTask(config, lora, scale, modules_to_save, biases, lora_bias, sources)


def read_config(adapter_dir: str | os.PathLike) -> dict[str, Any]:
    """adapter_config.json of a PEFT LoRA adapter, checked for what fft supports.

    Raises:
      AdapterNotFoundError: the folder or its adapter_config.json is missing.
      AdapterError: invalid JSON, peft_type other than LORA, a task type other than SEQ_CLS, or an
        unsupported LoRA variant.
    """
    adapter_dir = pathlib.Path(adapter_dir)
    path = adapter_dir / CONFIG_NAME
    config = loading.read_folder_json(
        adapter_dir, CONFIG_NAME, "Adapter", "a PEFT adapter folder",
        missing=AdapterNotFoundError, invalid=AdapterError,
    )
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a JSON object.")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise AdapterError(
            f"{path}: peft_type {peft_type!r} is not supported; fft reads LoRA adapters "
            "(peft_type 'LORA') only."
        )
    task_type = config.get("task_type")
    if task_type not in (None, "SEQ_CLS"):
        raise AdapterError(
            f"{path}: task_type {task_type!r} is not supported; fft reads adapters for "
            "BertForSequenceClassification (task_type 'SEQ_CLS')."
        )
    for field, what in _UNSUPPORTED.items():
        if config.get(field):
            raise AdapterError(f"{path}: {field}={config[field]!r}: {what} is not supported.")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_MUTATING_INITS):
        raise AdapterError(
            f"{path}: init_lora_weights={init!r} changes the base weights, so this adapter needs "
            "its modified base model; convert it to plain LoRA with PEFT first "
            "(save_pretrained(path_initial_model_for_weight_conversion=...))."
        )
    if config.get("bias", "none") not in ("none", "all", "lora_only"):
        raise AdapterError(
            f"{path}: bias={config['bias']!r}; expected 'none', 'all' or 'lora_only'."
        )
    return config


def _read_weights(adapter_dir: pathlib.Path) -> dict[str, np.ndarray]:
    path = adapter_dir / WEIGHTS_NAME
    if path.is_file():
        return _read_safetensors(path)
    legacy = adapter_dir / LEGACY_WEIGHTS_NAME
    if not legacy.is_file():
        raise AdapterNotFoundError(f"{path} is missing (no adapter weights in {adapter_dir}).")
    return loading.read_torch_state(legacy, path, AdapterNotFoundError)


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    """name -> float32 array; reads F64/F32/F16 and BF16 (which numpy's safetensors cannot)."""
    data = path.read_bytes()
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
    except (struct.error, ValueError) as e:
        raise AdapterError(f"{path}: not a safetensors file ({e}).") from e
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = (8 + size + offset for offset in info["data_offsets"])
        raw, dtype = data[start:stop], info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, _SAFETENSORS_DTYPES[dtype])
        else:
            raise AdapterError(f"{path}: tensor {name!r} has unsupported dtype {dtype}.")
        out[name] = array.reshape(info["shape"]).astype(np.float32)
    return out


def _hf_module_of(key: str) -> str:
    """Module name (relative to the task model) of a stored tensor, PEFT wrappers removed."""
    segments = key.removeprefix(PEFT_PREFIX).split(".")[:-1]
    return ".".join(s for s in segments if s not in ("modules_to_save", "base_layer"))


def _known_module(module: str, key: str, *, lora: bool) -> tuple[str, str]:
    found = hf_to_fft_module(module)
    if found is None:
        raise AdapterError(
            f"Adapter tensor {key!r} names module {module!r}, which is not a "
            "BertForSequenceClassification module: the adapter is for another architecture."
        )
    if lora and found[1] != "dense":
        raise AdapterError(
            f"Adapter tensor {key!r}: LoRA on {module!r} (a {found[1]} module) is not supported; "
            "fft reads LoRA on Linear layers only."
        )
    return found


def _pattern_value(patterns: Mapping[str, Any] | None, module: str, default: Any) -> Any:
    """PEFT's `get_pattern_key`: the first pattern p with re.match(r'(.*\\.)?(p)$', module)."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


# --- Merging and loading ------------------------------------------------------------------------


def merge(params: Mapping[str, Any], task: PeftTask) -> dict[str, Any]:
    """The dense params with the task applied: kernels + scale * A @ B, saved modules and biases
    replaced, lora_B biases added.

    Args:
      params: nested dict (fft param tree of a BERT classifier with `task.num_labels` logits).
      task: from `read`.

    Returns:
      A new nested dict of float32 numpy arrays.

    Raises:
      AdapterError: a stored tensor names a module the model lacks, or its shape does not fit the
        model's layer (the message names the tensor and both shapes).
    """
    flat = {
        p: np.asarray(jax.device_get(v), np.float32)
        for p, v in traverse_util.flatten_dict(dict(params), sep="/").items()
    }
    src = task.sources
    for path, value in {**task.biases, **task.modules_to_save}.items():
        _check_shape(flat, path, np.shape(value), src[path])
        flat[path] = np.asarray(value, np.float32)
    for module, (a, b) in task.lora.items():
        kernel = f"{module}/kernel"
        _check_shape(flat, kernel, None, src[f"{module}/lora_A"])
        fan_in, fan_out = flat[kernel].shape
        rank = a.shape[1]
        for key, got, want in (
            (src[f"{module}/lora_A"], a.T.shape, (rank, fan_in)),
            (src[f"{module}/lora_B"], b.T.shape, (fan_out, rank)),
        ):
            if tuple(got) != want:
                raise AdapterError(
                    f"Shape mismatch: adapter tensor {key} has shape {tuple(got)}, but the base "
                    f"model's layer {module} (kernel [in, out] = {list(flat[kernel].shape)}) needs "
                    f"{want}."
                )
        delta = (a.astype(np.float64) @ b.astype(np.float64)) * task.scale[module]
        flat[kernel] = (flat[kernel] + delta).astype(np.float32)
        if module in task.lora_bias:
            bias = f"{module}/bias"
            _check_shape(flat, bias, np.shape(task.lora_bias[module]), src[f"{module}/lora_bias"])
            flat[bias] = (flat[bias] + task.scale[module] * task.lora_bias[module]).astype(
                np.float32
            )
    return traverse_util.unflatten_dict(flat, sep="/")


def _check_shape(flat: Mapping[str, np.ndarray], path: str, shape, key: str) -> None:
    if path not in flat:
        raise AdapterError(
            f"Adapter tensor {key} targets {path}, which the base model does not have."
        )
    if shape is not None and tuple(shape) != tuple(flat[path].shape):
        raise AdapterError(
            f"Shape mismatch: adapter tensor {key} gives {path} shape {tuple(shape)}, but the base "
            f"model's parameter has shape {tuple(flat[path].shape)}."
        )


def load(
    adapter_dir: str | os.PathLike, model: str | os.PathLike | loading.Pretrained | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """An fft model and merged params that compute the PEFT adapter's logits.

    Args:
      adapter_dir: a PEFT LoRA adapter folder (see `read`).
      model: the base model: a name or folder for `loading.resolve_model_dir` ('minilm',
        'sentence-transformers/all-MiniLM-L6-v2', a local folder, a cached hub name), or an
        already loaded `loading.Pretrained`; None: the adapter's `base_model_name_or_path`.

    Returns:
      (flax model from `models.create_model('bert', ..., num_labels)`, nested dict of merged float32
      params); `flax_model.apply({'params': params}, input_ids, attention_mask, token_type_ids,
      deterministic=True)` gives PEFT's logits.

    Raises:
      AdapterNotFoundError / AdapterError: as `read` and `merge`; also a base model that is not
        BERT.
      loading.ModelNotFoundError / loading.CheckpointError: the base model cannot be read.
    """
    task = read(adapter_dir)
    if isinstance(model, loading.Pretrained):
        pretrained = model
        where = str(model.model_dir)
    else:
        name = task.config.get("base_model_name_or_path") if model is None else model
        if not name:
            raise AdapterError(
                f"{pathlib.Path(adapter_dir) / CONFIG_NAME}: base_model_name_or_path is empty; "
                "pass the base model explicitly (load(adapter_dir, model=...))."
            )
        model_dir = loading.resolve_model_dir(name)
        where = f"{name} ({model_dir})" if os.fspath(name) != str(model_dir) else str(model_dir)
        model_type = _model_type(model_dir)
        if model_type != MODEL_TYPE:
            raise AdapterError(
                f"Adapter {adapter_dir} is for base model {where}, whose model_type is "
                f"{model_type!r}; fft.peft_io supports BERT ('{MODEL_TYPE}') only."
            )
        pretrained = loading.load_pretrained(model_dir)
    if pretrained.model_type != MODEL_TYPE:
        raise AdapterError(
            f"Base model {where} has model_type {pretrained.model_type!r}; fft.peft_io supports "
            f"BERT ('{MODEL_TYPE}') only."
        )
    flax_model = models.create_model(MODEL_TYPE, pretrained.model_config, task.num_labels)
    params = loading.init_params(flax_model, jax.random.key(0), pretrained.params)
    return flax_model, merge(params, task)


def _model_type(model_dir: pathlib.Path) -> Any:
    try:
        return json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise loading.ModelNotFoundError(f"{model_dir / 'config.json'}: cannot read ({e}).") from e


# --- Writing ------------------------------------------------------------------------------------


def save(
    out_dir: str | os.PathLike,
    *,
    lora: Mapping[str, tuple[Any, Any]],
    rank: int,
    alpha: float,
    modules_to_save: Mapping[str, Any] | None = None,
    base_model_name_or_path: str,
    dropout: float = 0.0,
    target_modules: Iterable[str] | str | None = None,
) -> int:
    """Writes an fft LoRA task as a PEFT adapter folder for BertForSequenceClassification.

    Loads with `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base,
    num_labels=N), out_dir)`.

    Args:
      out_dir: folder to write adapter_config.json and adapter_model.safetensors into (created).
      lora: fft module path -> (A [in, rank], B [rank, out]); scale alpha / rank.
      rank: the LoRA rank r of every factor.
      alpha: lora_alpha.
      modules_to_save: fft param path -> array, for modules trained in full; must hold the
        classifier (`classifier/kernel`, `classifier/bias`); e.g. also `pooler/dense/*`.
      base_model_name_or_path: recorded in the config (a hub name or folder).
      dropout: lora_dropout recorded in the config.
      target_modules: PEFT's target_modules; None derives it from `lora`: the shortest module-name
        suffixes that select exactly these layers of the base model (when its config can be read;
        else the full module names).

    Returns:
      Bytes written.

    Raises:
      AdapterError: an unknown path, a factor of the wrong shape (against `rank` and, when the base
        model's config can be read, against its layers), no classifier, or a module both
        LoRA-adapted and saved whole.
    """
    modules_to_save = dict(modules_to_save or {})
    missing = [p for p in (f"{_HEAD}/kernel", f"{_HEAD}/bias") if p not in modules_to_save]
    if missing:
        raise AdapterError(f"modules_to_save must hold the classifier; missing {missing}.")
    shapes = _base_shapes(base_model_name_or_path)  # fft param path -> shape, or None.
    tensors, targets = {}, set()
    for module in sorted(lora):
        a, b = (np.asarray(jax.device_get(x), np.float32) for x in lora[module])
        hf_module, kind = fft_to_hf_module(module)
        if kind != "dense" or module == _HEAD:
            raise AdapterError(f"LoRA on {module!r} is not supported (Linear body layers only).")
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != rank or b.shape[0] != rank:
            raise AdapterError(
                f"LoRA factors of {module}: A {a.shape} and B {b.shape} are not [in, {rank}] and "
                f"[{rank}, out] (rank={rank})."
            )
        kernel = f"{module}/kernel"
        if shapes is not None and kernel in shapes and (a.shape[0], b.shape[1]) != shapes[kernel]:
            raise AdapterError(
                f"Shape mismatch: LoRA factors of {module} give a [{a.shape[0]}, {b.shape[1]}] "
                f"update, but the base model's {kernel} has shape {shapes[kernel]}."
            )
        if shapes is not None and kernel not in shapes:
            raise AdapterError(f"LoRA on {module}: the base model has no {kernel}.")
        tensors[f"{PEFT_PREFIX}{hf_module}.lora_A.weight"] = np.ascontiguousarray(a.T)
        tensors[f"{PEFT_PREFIX}{hf_module}.lora_B.weight"] = np.ascontiguousarray(b.T)
        targets.add(hf_module)
    saved = set()
    for path in sorted(modules_to_save):
        value = np.asarray(jax.device_get(modules_to_save[path]), np.float32)
        module, _, leaf = path.rpartition("/")
        hf_module, kind = fft_to_hf_module(module)
        if leaf not in _WRITE_LEAVES[kind]:
            raise AdapterError(f"modules_to_save: {path!r} is not a parameter of a {kind} module.")
        if module in lora:
            raise AdapterError(f"{module} is both LoRA-adapted and in modules_to_save.")
        expected = None if shapes is None or module == _HEAD else shapes.get(path)
        if shapes is not None and module != _HEAD and expected is None:
            raise AdapterError(f"modules_to_save: the base model has no {path}.")
        if expected is not None and value.shape != expected:
            raise AdapterError(
                f"Shape mismatch: modules_to_save[{path!r}] has shape {value.shape}, the base "
                f"model's parameter {expected}."
            )
        key = f"{PEFT_PREFIX}{hf_module}.{_WRITE_LEAVES[kind][leaf]}"
        tensors[key] = np.ascontiguousarray(value.T) if leaf == "kernel" else value
        saved.add(hf_module)
    if target_modules is None:
        universe = None if shapes is None else _dense_modules(shapes)
        target_modules = _suffixes(targets, universe)
    elif not isinstance(target_modules, str):
        target_modules = sorted(target_modules)
    # `endswith` matching (PEFT's modules_to_save): full names except for the head.
    saved_names = sorted(saved - {_HEAD}, key=lambda n: (n.count("."), n))
    config = {
        "alpha_pattern": {},
        "base_model_name_or_path": base_model_name_or_path,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else float(alpha),
        "lora_dropout": dropout,
        "modules_to_save": [_HEAD, *saved_names],
        "peft_type": "LORA",
        "r": rank,
        "rank_pattern": {},
        "revision": None,
        "target_modules": target_modules,
        "task_type": "SEQ_CLS",
        "use_dora": False,
        "use_rslora": False,
    }
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    (out_dir / CONFIG_NAME).write_text(text)
    blob = safetensors_numpy.save(tensors, metadata={"format": "pt"})
    (out_dir / WEIGHTS_NAME).write_bytes(blob)
    return len(text.encode()) + len(blob)


def _base_shapes(name: str) -> dict[str, tuple[int, ...]] | None:
    """fft param path -> shape of the base model's body, or None if its config cannot be read."""
    try:
        model_dir = loading.resolve_model_dir(name)
        hf_config = json.loads((model_dir / "config.json").read_text())
    except (loading.ModelNotFoundError, OSError, ValueError):
        return None
    if hf_config.get("model_type") != MODEL_TYPE:
        raise AdapterError(
            f"base_model_name_or_path {name!r} has model_type {hf_config.get('model_type')!r}; "
            f"fft.peft_io writes adapters for BERT ('{MODEL_TYPE}') only."
        )
    model_config = _ENTRY.config_class.from_hf_dict(hf_config)
    model = models.create_model(MODEL_TYPE, model_config, num_labels=1)

    def init() -> Any:
        ids = jnp.zeros((1, 1), jnp.int32)
        return model.init(jax.random.key(0), ids, ids, ids, deterministic=True)["params"]

    flat = traverse_util.flatten_dict(jax.eval_shape(init), sep="/")
    return {p: tuple(s.shape) for p, s in flat.items() if not p.startswith(f"{_HEAD}/")}


def _dense_modules(shapes: Mapping[str, tuple[int, ...]]) -> set[str]:
    out = {_HEAD}
    for path in shapes:
        if path.endswith("/kernel"):
            out.add(fft_to_hf_module(path.rpartition("/")[0])[0])
    return out


def _suffixes(targets: set[str], universe: set[str] | None) -> list[str]:
    """Shortest dotted suffixes that select exactly `targets` under PEFT's list matching
    (`name == t or name.endswith('.' + t)`) among the `universe` of Linear module names."""
    if universe is None:
        return sorted(targets)
    chosen = set()
    for name in sorted(targets):
        parts = name.split(".")
        for i in range(len(parts) - 1, -1, -1):
            if parts[i].isdigit():
                continue  # 'layer.0.output.dense', not '0.output.dense'.
            suffix = ".".join(parts[i:])
            matched = {u for u in universe if u == suffix or u.endswith("." + suffix)}
            if matched <= targets:
                chosen.add(suffix)
                break
    return sorted(chosen)
