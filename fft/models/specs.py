"""What an encoder is made of, as frozen dataclasses: activations, bottleneck adapters
(`AdapterSpec`, `adapter_apply`), learner FFN nodes (`LearnerSpec`) and `EncoderSpec`, which BERT
and DistilBERT configs both build for `fft.models.encoder.Encoder`."""

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp


def gelu_erf(x: jax.Array) -> jax.Array:
    """Exact GELU, x * (1 + erf(x / sqrt(2))) / 2: the formula torch and HF 'gelu' use.

    `jax.nn.gelu(approximate=False)` computes the same function through erfc, which XLA:CPU
    expands into exp and select branches; erf is one rational polynomial and several times
    cheaper. The two agree to ~1e-6 (tests/models_test.py)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(2**-0.5, x.dtype)))


ACTIVATIONS: Mapping[str, Callable[[jax.Array], jax.Array]] = types.MappingProxyType(
    {
        # HF 'gelu' is the exact erf form; 'gelu_new' and 'gelu_pytorch_tanh' the tanh approximation.
        "gelu": gelu_erf,
        "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
        "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
        "swish": jax.nn.silu,
    }
)


def check_activation(name: str) -> None:
    """Raises ValueError unless `name` is a key of `ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}.")


# Where adapters can sit: the attention output block and the FFN output block of every layer.
ADAPTER_SITES = ("attention", "ffn")
ADAPTER_INIT_STD = 0.02  # N(0, 0.02) down-projection kernel; the other adapter leaves start at 0.


@dataclasses.dataclass(frozen=True)
class AdapterSpec:
    """Bottleneck adapters in every encoder layer (Houlsby et al. 2019; Pfeiffer et al. 2020).

    Each adapter maps y to y + up(act(down(y))) right after the dense projection (and its dropout)
    of an output block, before the residual add and the layer norm. `up` starts at zero, so a
    freshly initialised adapter is the identity.

    Attributes:
      size: bottleneck width (1 <= size <= the model's hidden size).
      sites: where adapters sit: 'attention' (`encoder/layer_{i}/attention/output/adapter`) and/or
        'ffn' (`encoder/layer_{i}/output/adapter`). Houlsby: both (the default); Pfeiffer: ('ffn',).
      activation: a key of `ACTIVATIONS`, applied in the bottleneck.
    """

    size: int
    sites: tuple[str, ...] = ADAPTER_SITES
    activation: str = "relu"

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"AdapterSpec.size must be an int >= 1, got {self.size!r}.")
        sites = (self.sites,) if isinstance(self.sites, str) else tuple(self.sites)
        unknown = [s for s in sites if s not in ADAPTER_SITES]
        if not sites or unknown or len(set(sites)) != len(sites):
            raise ValueError(
                f"AdapterSpec.sites must be a non-empty subset of {ADAPTER_SITES} without "
                f"repeats, got {self.sites!r}."
            )
        object.__setattr__(self, "sites", sites)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"AdapterSpec.activation {self.activation!r} is not supported; "
                f"supported: {sorted(ACTIVATIONS)}."
            )


def check_adapter(adapter: "AdapterSpec | None", hidden_size: int) -> None:
    """Raises TypeError/ValueError unless `adapter` is None or an `AdapterSpec` that fits."""
    if adapter is None:
        return
    if not isinstance(adapter, AdapterSpec):
        raise TypeError(f"adapter must be an AdapterSpec or None, got {type(adapter).__name__}.")
    if adapter.size > hidden_size:
        raise ValueError(
            f"AdapterSpec.size {adapter.size} exceeds the model's hidden_size {hidden_size}."
        )


def adapter_apply(params: Mapping[str, Any], y: jax.Array, activation: str = "relu") -> jax.Array:
    """The adapter's math: y + up(act(down(y))), in y's dtype (parameters are cast to it).

    Args:
      params: {'down': {'kernel': [hidden, size], 'bias': [size]},
               'up': {'kernel': [size, hidden], 'bias': [hidden]}}; or per-example weights with
        a leading batch axis ([batch, hidden, size], [batch, size], ...), where example b's
        weights act on y[b].
      y: [batch, ..., hidden].
      activation: a key of `ACTIVATIONS`.

    Returns:
      Array of y's shape and dtype.
    """
    act = ACTIVATIONS[activation]

    def project(x: jax.Array, p: Mapping[str, Any]) -> jax.Array:
        kernel, bias = jnp.asarray(p["kernel"], y.dtype), jnp.asarray(p["bias"], y.dtype)
        if kernel.ndim == 2:
            return jnp.matmul(x, kernel) + bias
        if kernel.ndim != 3 or bias.ndim != 2:
            raise ValueError(
                f"adapter kernel {kernel.shape} / bias {bias.shape}: expected [in, out] / [out] "
                "or per-example [batch, in, out] / [batch, out]."
            )
        out = jnp.einsum("b...i,bio->b...o", x, kernel)
        return out + bias.reshape(bias.shape[0], *[1] * (x.ndim - 2), bias.shape[1])

    return y + project(act(project(y, params["down"])), params["up"])

@dataclasses.dataclass(frozen=True)
class LearnerSpec:
    """Learner nodes in every encoder layer's FFN (fft.methods.learners; FAR, arXiv 2205.01541).

    Layer i's FFN keeps its `intermediate_size` F nodes but holds them as two slices, applied as
    separate matmuls: the other F - k_i nodes (`intermediate/dense` [hidden, F - k_i] + bias,
    `output/dense` [F - k_i, hidden] + the output bias) and the k_i learner nodes
    (`intermediate/learner` [hidden, k_i] + bias, `output/learner` [k_i, hidden], no bias).
    FFN(x) = act(x W1d + b1d) W2d + act(x W1l + b1l) W2l + b2 is the plain FFN with its nodes
    reordered; training only the learner slice never forms a gradient of the other kernels.

    Attributes:
      num_nodes: k_i per encoder layer (1 <= k_i <= intermediate_size).
    """

    num_nodes: tuple[int, ...]

    def __post_init__(self):
        nodes = tuple(self.num_nodes)
        if not nodes or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in nodes):
            raise ValueError(
                f"LearnerSpec.num_nodes must be ints >= 1, one per layer, got {self.num_nodes!r}."
            )
        object.__setattr__(self, "num_nodes", nodes)


def check_learners(learners: "LearnerSpec | None", num_layers: int, intermediate_size: int) -> None:
    """Raises TypeError/ValueError unless `learners` is None or a `LearnerSpec` that fits."""
    if learners is None:
        return
    if not isinstance(learners, LearnerSpec):
        raise TypeError(f"learners must be a LearnerSpec or None, got {type(learners).__name__}.")
    if len(learners.num_nodes) != num_layers:
        raise ValueError(
            f"LearnerSpec has {len(learners.num_nodes)} layers; the model has {num_layers}."
        )
    if max(learners.num_nodes) > intermediate_size:
        raise ValueError(
            f"LearnerSpec.num_nodes {learners.num_nodes} exceeds intermediate_size {intermediate_size}."
        )


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What `Encoder` needs from a model config; BERT and DistilBERT both build one."""

    num_layers: int
    num_heads: int
    intermediate_size: int
    hidden_act: str
    hidden_dropout: float
    attention_dropout: float
    layer_norm_eps: float
    # DistilBERT has no dropout after the attention output projection.
    attention_output_dropout: bool = True
    adapter: AdapterSpec | None = None  # None: no adapters (the plain model).
    learners: LearnerSpec | None = None  # None: plain FFNs.

    def learners_at(self, layer: int) -> int:
        """Learner nodes in layer `layer`'s FFN (0: a plain FFN)."""
        return 0 if self.learners is None else self.learners.num_nodes[layer]

    def adapter_at(self, site: str) -> AdapterSpec | None:
        """The adapter of `site` ('attention' or 'ffn'), or None where there is none."""
        return self.adapter if self.adapter is not None and site in self.adapter.sites else None
