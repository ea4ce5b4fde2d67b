"""BERT encoder and sequence classifier (Flax linen), and how Hugging Face names its weights.

Parameter paths follow docs/CONTRACT.md, e.g. `encoder/layer_3/attention/query/kernel`. Parameters are
always stored in float32; `dtype` is only the compute dtype of the matmuls. Layer norms, the attention
softmax, the pooler, mean pooling and the logits are computed in float32.

The encoder pieces (`Encoder` and below) take an `EncoderSpec` rather than a `BertConfig`, so
`distilbert.py` reuses them with its own embeddings and head.
"""

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fft.models import dropout as hashed_dropout

# Added to attention scores of padding keys. Finite, so an all-padding row gives a uniform softmax, not NaN.
_MASK_VALUE = -1e9
_INIT_STD = 0.02  # HF `initializer_range`: N(0, 0.02) kernels and embeddings, zero biases.


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


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT encoder (names follow ours, `from_hf_dict` reads HF's)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    classifier_dropout: float | None = None  # None: use hidden_dropout, as HF does.
    adapter: AdapterSpec | None = None  # Bottleneck adapters (see `AdapterSpec`); None: none.
    learners: LearnerSpec | None = None  # FFNs split into frozen and learner nodes; None: plain.

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of {self.num_heads} heads."
            )
        check_activation(self.hidden_act)
        check_adapter(self.adapter, self.hidden_size)
        check_learners(self.learners, self.num_layers, self.intermediate_size)

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
        """Builds the config from the keys of a Hugging Face BERT `config.json`."""
        position_type = d.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise NotImplementedError(
                f"position_embedding_type={position_type!r} is not supported."
            )
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            num_layers=d["num_hidden_layers"],
            num_heads=d["num_attention_heads"],
            intermediate_size=d["intermediate_size"],
            max_position_embeddings=d.get("max_position_embeddings", 512),
            type_vocab_size=d.get("type_vocab_size", 2),
            layer_norm_eps=d.get("layer_norm_eps", 1e-12),
            hidden_dropout=d.get("hidden_dropout_prob", 0.1),
            attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
            hidden_act=d.get("hidden_act", "gelu"),
            pad_token_id=d.get("pad_token_id") or 0,
            classifier_dropout=d.get("classifier_dropout"),
        )

    @property
    def encoder_spec(self) -> EncoderSpec:
        """The `EncoderSpec` of this config."""
        return EncoderSpec(
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_eps=self.layer_norm_eps,
            adapter=self.adapter,
            learners=self.learners,
        )


def dense(features: int, dtype: jnp.dtype, name: str) -> nn.Dense:
    """A Dense layer with float32 parameters, HF initialisation and compute dtype `dtype`."""
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(_INIT_STD),
        name=name,
    )


def embed(num: int, features: int, name: str, init: Callable | None = None) -> nn.Embed:
    """A float32 embedding table (lookups stay float32; the caller casts after the layer norm)."""
    return nn.Embed(
        num,
        features,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        embedding_init=init or nn.initializers.normal(_INIT_STD),
        name=name,
    )


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    """A float32 layer norm with the exact (two-pass) variance, as torch computes it."""
    return nn.LayerNorm(
        epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32, use_fast_variance=False, name=name
    )


class Packing(NamedTuple):
    """Several examples per row of a batch ("packed" rows, built by `fft.data.packing`).

    Row r holds up to `slots` examples one after another; each attends only to itself, has its
    own positions 0, 1, ..., and is classified from its own first token. With the same weights,
    an example's logits are those of the example alone in an unpadded row (tests/packing_test.py).

    Attributes:
      segment_ids: int [rows, seq]: s + 1 for the tokens of the row's example in slot s, 0 for
        padding.
      position_ids: int [rows, seq]: each token's position within its example.
      cls_positions: int [rows, slots]: the column of each slot's first token (any column for an
        empty slot, whose logits the caller ignores).
    """

    segment_ids: jax.Array
    position_ids: jax.Array
    cls_positions: jax.Array

    def attention_mask(self) -> jax.Array:
        """[rows, seq_q, seq_k] bool: a query sees the keys of its own example."""
        seg = self.segment_ids
        return (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)

    def first_tokens(self, hidden: jax.Array) -> jax.Array:
        """Each slot's first-token hidden state: [rows, seq, hidden] -> [rows * slots, hidden]."""
        picked = jnp.take_along_axis(hidden, self.cls_positions[:, :, None], axis=1)
        return picked.reshape(-1, hidden.shape[-1])


def attention_bias(attention_mask: jax.Array | None, seq_len: int) -> jax.Array:
    """An additive float32 attention bias from a 0/1 key mask [batch, seq] (-> [batch, 1, 1, seq])
    or a query-key mask [batch, seq, seq] (-> [batch, 1, seq, seq]; packed rows)."""
    if attention_mask is None:
        return jnp.zeros((1, 1, 1, seq_len), jnp.float32)
    if attention_mask.ndim == 3:
        return jnp.where(attention_mask[:, None] > 0, 0.0, _MASK_VALUE).astype(jnp.float32)
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, _MASK_VALUE).astype(jnp.float32)


def position_ids(seq_len: int, max_positions: int) -> jax.Array:
    """[seq] positions 0..seq-1; raises ValueError if the sequence is longer than the table."""
    if seq_len > max_positions:
        raise ValueError(
            f"Sequence length {seq_len} exceeds max_position_embeddings {max_positions}."
        )
    return jnp.arange(seq_len)


def packed_inputs(attention_mask, packing: Packing | None, seq_len: int, max_positions: int):
    """(attention mask, positions) of a batch: packed rows' own, or the key mask and 0..seq-1."""
    if packing is None:
        return attention_mask, position_ids(seq_len, max_positions)
    if attention_mask is not None:
        raise ValueError("Packed rows take their attention mask from packing.segment_ids; pass None")
    position_ids(seq_len, max_positions)  # Checks the length.
    return packing.attention_mask(), packing.position_ids


def first_tokens(hidden: jax.Array, packing: Packing | None) -> jax.Array:
    """Hidden states of the tokens that classify: [batch, hidden] (packed: [rows * slots, hidden])."""
    return hidden[:, 0] if packing is None else packing.first_tokens(hidden)


# How a classifier turns an example's hidden states into one vector (its `pooling` attribute):
#   cls   the first ([CLS]) token; BERT then applies its pretrained `pooler` (dense + tanh).
#   mean  the float32 mean over the example's real tokens, as sentence-transformers pools
#         (all-MiniLM-L6-v2 was trained so); BERT then has no `pooler` parameters.
POOLINGS = ("cls", "mean")


def check_pooling(pooling: str) -> None:
    """Raises ValueError unless `pooling` is one of `POOLINGS`."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}.")


def mean_tokens(
    hidden: jax.Array, attention_mask: jax.Array | None, packing: Packing | None
) -> jax.Array:
    """Each example's mean hidden state over its own real tokens, in float32.

    Args:
      hidden: [batch, seq, hidden] (packed: [rows, seq, hidden]).
      attention_mask: 0/1 [batch, seq] (1: a real token); None: every token is real. Must be None
        for packed rows, whose slot s owns the tokens where `packing.segment_ids == s + 1`.
      packing: packed rows, or None.

    Returns:
      float32 [batch, hidden] (packed: [rows * slots, hidden]); sum(hidden * mask) / sum(mask),
      with an example that has no tokens (an all-padding row, an empty slot) giving zeros.
    """
    h = hidden.astype(jnp.float32)
    if packing is not None:
        slots = jnp.arange(1, packing.cls_positions.shape[1] + 1, dtype=packing.segment_ids.dtype)
        weights = packing.segment_ids[:, None, :] == slots[None, :, None]  # [rows, slots, seq]
    elif attention_mask is not None:
        weights = (attention_mask > 0)[:, None, :]  # [batch, 1, seq]
    else:
        weights = jnp.ones((h.shape[0], 1, h.shape[1]), bool)
    weights = weights.astype(jnp.float32)
    # HIGHEST: a plain float32 sum on accelerators too (no reduced-precision matmul passes).
    total = jnp.matmul(weights, h, precision=jax.lax.Precision.HIGHEST)  # [b, slots, hidden]
    count = jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1.0)
    return (total / count).reshape(-1, h.shape[-1])


def pool_tokens(
    hidden: jax.Array, attention_mask: jax.Array | None, packing: Packing | None, pooling: str
) -> jax.Array:
    """The vector each example is classified from, before any pooler: its first token's hidden
    state (`pooling='cls'`, in hidden's dtype) or `mean_tokens` ('mean', float32).
    [batch, seq, hidden] -> [batch, hidden] (packed: [rows * slots, hidden])."""
    check_pooling(pooling)
    if pooling == "mean":
        return mean_tokens(hidden, attention_mask, packing)
    return first_tokens(hidden, packing)


class _Projection(nn.Module):
    """Declares a Dense layer's float32 `kernel` [features_in, features] and `bias` [features]."""

    features_in: int
    features: int
    kernel_std: float  # 0: a zero kernel.

    @nn.compact
    def __call__(self) -> dict[str, jax.Array]:
        std = self.kernel_std
        kernel_init = nn.initializers.normal(std) if std else nn.initializers.zeros_init()
        shape = (self.features_in, self.features)
        return {
            "kernel": self.param("kernel", kernel_init, shape, jnp.float32),
            "bias": self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32),
        }


class Adapter(nn.Module):
    """Bottleneck adapter `down` -> activation -> `up`, plus the identity (`adapter_apply`).

    Initialised near the identity: `down` kernel N(0, ADAPTER_INIT_STD), every other leaf 0, so
    y + up(...) == y exactly until `up` is trained."""

    spec: AdapterSpec
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        """Maps [batch, seq, hidden] to the same shape, computed in `dtype`."""
        hidden, size = y.shape[-1], self.spec.size
        params = {
            "down": _Projection(hidden, size, ADAPTER_INIT_STD, name="down")(),
            "up": _Projection(size, hidden, 0.0, name="up")(),
        }
        return adapter_apply(params, y.astype(self.dtype), self.spec.activation)


class ResidualOutput(nn.Module):
    """`dense` -> dropout -> [`adapter`] -> add the residual -> `layer_norm` (float32); HF's
    *Output blocks, with an optional bottleneck adapter before the residual add. Given `learner`
    activations, their own bias-free projection `learner` is added to `dense`'s output."""

    dropout_rate: float
    layer_norm_eps: float
    dtype: jnp.dtype
    adapter: AdapterSpec | None = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        residual: jax.Array,
        *,
        deterministic: bool,
        learner: jax.Array | None = None,
    ) -> jax.Array:
        """Maps x [batch, seq, any] (and learner [batch, seq, k]) and residual [batch, seq, hidden]
        to [batch, seq, hidden]."""
        y = dense(residual.shape[-1], self.dtype, "dense")(x)
        if learner is not None:
            y = y + nn.Dense(
                residual.shape[-1], use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                kernel_init=nn.initializers.normal(_INIT_STD), name="learner",
            )(learner)
        y = hashed_dropout.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        if self.adapter is not None:
            y = Adapter(self.adapter, self.dtype, name="adapter")(y)
        y = layer_norm(self.layer_norm_eps, "layer_norm")(y.astype(jnp.float32) + residual)
        return y.astype(self.dtype)


def _normalize_after(scores: jax.Array, bias: jax.Array, value: jax.Array) -> jax.Array:
    """softmax(scores + bias) @ value with the softmax's division moved after the matmul.

    Divides the [.., seq_q, head_dim] context instead of the [.., seq_q, seq_k] probabilities,
    one pass less over the largest tensor of the layer: ~10% faster inference at seq 128 on
    XLA:CPU (benchmarks/train_bench.py). Training keeps `jax.nn.softmax`, whose backward is
    cheaper. The two agree to float rounding (tests/models_test.py)."""
    shifted = scores.astype(jnp.float32) + bias
    weights = jnp.exp(shifted - jnp.max(shifted, axis=-1, keepdims=True))
    total = jnp.sum(weights, axis=-1, keepdims=True)
    context = jnp.matmul(weights.astype(value.dtype), value).astype(jnp.float32) / total
    return context.astype(value.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with post-layer-norm residual output (`query`/`key`/`value`/`output`)."""

    num_heads: int
    attention_dropout: float
    output_dropout: float
    layer_norm_eps: float
    dtype: jnp.dtype
    adapter: AdapterSpec | None = None  # An adapter in the `output` block.

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, *, deterministic: bool) -> jax.Array:
        """Attends x [batch, seq, hidden] with bias [batch, 1, 1 or seq, seq]; returns [batch, seq, hidden]."""
        batch, seq, hidden = x.shape
        head_dim = hidden // self.num_heads

        def heads(name: str, order: tuple[int, ...]) -> jax.Array:
            y = dense(hidden, self.dtype, name)(x).reshape(batch, seq, self.num_heads, head_dim)
            return y.transpose(order)

        # Heads-major operands: XLA:CPU runs these batched matmuls ~1.6x faster than an einsum over
        # the [batch, seq, heads, head_dim] layout (measured on MiniLM shapes).
        query = heads("query", (0, 2, 1, 3)) * jnp.asarray(
            head_dim**-0.5, self.dtype
        )  # [b, h, q, d]
        key_t = heads("key", (0, 2, 3, 1))  # [batch, heads, head_dim, seq]
        value = heads("value", (0, 2, 1, 3))  # [batch, heads, seq, head_dim]
        scores = jnp.matmul(query, key_t)  # [batch, heads, seq_q, seq_k]
        if deterministic:
            context = _normalize_after(scores, bias, value)
        else:
            probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(self.dtype)
            probs = hashed_dropout.Dropout(self.attention_dropout)(probs, deterministic=deterministic)
            context = jnp.matmul(probs, value)
        context = context.transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        output = ResidualOutput(
            self.output_dropout, self.layer_norm_eps, self.dtype, self.adapter, name="output"
        )
        return output(context, x, deterministic=deterministic)


class Intermediate(nn.Module):
    """`dense` up-projection followed by the activation."""

    features: int
    hidden_act: str
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [batch, seq, hidden] to [batch, seq, features]."""
        return ACTIVATIONS[self.hidden_act](dense(self.features, self.dtype, "dense")(x))


class LearnerIntermediate(nn.Module):
    """The up-projection as two matmuls (`LearnerSpec`): `dense` over the features - learners
    other nodes and `learner` over the learner nodes, each followed by the activation."""

    features: int
    learners: int
    hidden_act: str
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps [batch, seq, hidden] to ([batch, seq, features - learners], [batch, seq, learners])."""
        act = ACTIVATIONS[self.hidden_act]
        rest = act(dense(self.features - self.learners, self.dtype, "dense")(x))
        return rest, act(dense(self.learners, self.dtype, "learner")(x))


class Layer(nn.Module):
    """One post-layer-norm transformer block: `attention`, `intermediate`, `output`."""

    spec: EncoderSpec
    dtype: jnp.dtype
    learners: int = 0  # Learner nodes of the FFN (`LearnerSpec`); 0: the plain FFN.

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, *, deterministic: bool) -> jax.Array:
        """Maps x [batch, seq, hidden] with bias [batch, 1, 1 or seq, seq] to [batch, seq, hidden]."""
        s = self.spec
        attention_output_dropout = s.hidden_dropout if s.attention_output_dropout else 0.0
        x = Attention(
            s.num_heads,
            s.attention_dropout,
            attention_output_dropout,
            s.layer_norm_eps,
            self.dtype,
            s.adapter_at("attention"),
            name="attention",
        )(x, bias, deterministic=deterministic)
        if self.learners:
            h, learner = LearnerIntermediate(
                s.intermediate_size, self.learners, s.hidden_act, self.dtype, name="intermediate"
            )(x)
        else:
            h = Intermediate(s.intermediate_size, s.hidden_act, self.dtype, name="intermediate")(x)
            learner = None
        output = ResidualOutput(
            s.hidden_dropout, s.layer_norm_eps, self.dtype, s.adapter_at("ffn"), name="output"
        )
        return output(h, x, deterministic=deterministic, learner=learner)


class Encoder(nn.Module):
    """A stack of `layer_{i}` blocks."""

    spec: EncoderSpec
    dtype: jnp.dtype

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        attention_mask: jax.Array | None,
        *,
        deterministic: bool,
        start: int = 0,
        stop: int | None = None,
    ) -> jax.Array:
        """Maps x [batch, seq, hidden] and a 0/1 mask ([batch, seq] keys, or [batch, seq, seq]) to [batch, seq, hidden].

        `start`/`stop` run only layers start..stop-1 (a frozen prefix, or the rest above it)."""
        bias = attention_bias(attention_mask, x.shape[1])
        stop = self.spec.num_layers if stop is None else stop
        if not 0 <= start <= stop <= self.spec.num_layers:
            raise ValueError(f"layers {start}..{stop} outside 0..{self.spec.num_layers}")
        for i in range(start, stop):
            x = Layer(self.spec, self.dtype, self.spec.learners_at(i), name=f"layer_{i}")(
                x, bias, deterministic=deterministic
            )
        return x


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, float32 layer norm, dropout."""

    config: BertConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array | None,
        *,
        deterministic: bool,
        positions: jax.Array | None = None,
    ) -> jax.Array:
        """Maps ids [batch, seq] (and token types [batch, seq]) to [batch, seq, hidden].

        `positions` ([seq] or [batch, seq]) defaults to 0..seq-1."""
        c = self.config
        if positions is None:
            positions = position_ids(input_ids.shape[1], c.max_position_embeddings)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = embed(c.vocab_size, c.hidden_size, "word_embeddings")(input_ids)
        x += embed(c.type_vocab_size, c.hidden_size, "token_type_embeddings")(token_type_ids)
        x += embed(c.max_position_embeddings, c.hidden_size, "position_embeddings")(positions)
        x = layer_norm(c.layer_norm_eps, "layer_norm")(x)
        return hashed_dropout.Dropout(c.hidden_dropout)(x, deterministic=deterministic).astype(self.dtype)


class Pooler(nn.Module):
    """tanh(`dense`(first token)), in float32."""

    @nn.compact
    def __call__(self, hidden: jax.Array, packing: Packing | None = None) -> jax.Array:
        """Maps [batch, seq, hidden] to [batch, hidden] float32 (packed: [rows * slots, hidden])."""
        first = first_tokens(hidden, packing).astype(jnp.float32)
        return jnp.tanh(dense(first.shape[-1], jnp.float32, "dense")(first))


class BertForSequenceClassification(nn.Module):
    """BERT encoder -> pooling -> dropout -> `classifier`.

    Pooling 'cls': first token -> `pooler` (dense + tanh); 'mean': the float32 mean of each
    example's real tokens (`mean_tokens`), and the model has no `pooler` parameters.

    Attributes:
      config: the encoder hyper-parameters.
      num_labels: number of logits (1 for regression).
      dtype: compute dtype of the encoder matmuls (float32 or bfloat16); parameters stay float32.
      pooling: one of `POOLINGS` ('cls' or 'mean').
    """

    config: BertConfig
    num_labels: int
    dtype: jnp.dtype = jnp.float32
    pooling: str = "cls"

    head_names: ClassVar[tuple[str, ...]] = ("classifier",)

    @property
    def unused_pretrained(self) -> tuple[str, ...]:
        """Top-level subtrees of a pretrained BERT checkpoint this model has no parameters for
        (`loading.init_params` drops them): the pooler, with mean pooling."""
        return ("pooler",) if self.pooling == "mean" else ()

    def setup(self):
        c = self.config
        check_pooling(self.pooling)
        self.embeddings = BertEmbeddings(c, self.dtype)
        self.encoder = Encoder(c.encoder_spec, self.dtype)
        if self.pooling == "cls":
            self.pooler = Pooler()
        dropout = c.hidden_dropout if c.classifier_dropout is None else c.classifier_dropout
        self.head_dropout = hashed_dropout.Dropout(dropout)
        self.classifier = dense(self.num_labels, jnp.float32, "classifier")

    def encode(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool,
        packing: Packing | None = None,
    ) -> jax.Array:
        """Last hidden states [batch, seq, hidden] in the compute dtype.

        Args:
          input_ids: int [batch, seq].
          attention_mask: 0/1 [batch, seq]; 0 marks padding keys. None means no padding.
          token_type_ids: int [batch, seq]; None means all zeros.
          deterministic: if False, applies dropout (needs a 'dropout' rng).
          packing: rows that hold several examples (then `attention_mask` must be None).
        """
        mask, positions = packed_inputs(
            attention_mask, packing, input_ids.shape[1], self.config.max_position_embeddings
        )
        x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic, positions=positions)
        return self.encoder(x, mask, deterministic=deterministic)

    def pool(
        self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool, packing=None
    ):
        """What the head classifies, [batch, hidden] float32 (same arguments as `encode`; packed
        rows give [rows * slots, hidden]): the pooler output ('cls') or the mean of the real
        tokens' last hidden states ('mean', the sentence-transformers embedding)."""
        hidden = self.encode(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic, packing=packing
        )
        return self._pooled(hidden, attention_mask, packing)

    def _pooled(self, hidden, attention_mask, packing=None):
        if self.pooling == "cls":
            return self.pooler(hidden, packing)
        return pool_tokens(hidden, attention_mask, packing, self.pooling)

    def prefix(self, input_ids, attention_mask=None, token_type_ids=None, *, num_layers: int):
        """Hidden states after the embeddings and encoder layers 0..num_layers-1, dropout off.

        With those layers frozen this is a fixed function of the input: `fft.feature_cache`
        computes it once per dataset and trains `from_prefix` on the result."""
        x = self.embeddings(input_ids, token_type_ids, deterministic=True)
        return self.encoder(x, attention_mask, deterministic=True, stop=num_layers)

    def from_prefix(self, hidden, attention_mask=None, *, start: int, deterministic: bool):
        """Logits from the hidden states entering layer `start` (the output of `prefix`)."""
        hidden = self.encoder(hidden, attention_mask, deterministic=deterministic, start=start)
        pooled = self._pooled(hidden, attention_mask)
        return self.classifier(self.head_dropout(pooled, deterministic=deterministic))

    def __call__(
        self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool, packing=None
    ):
        """Logits [batch, num_labels] float32 (same arguments as `encode`; packed rows give
        [rows * slots, num_labels], one per slot)."""
        pooled = self.pool(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic, packing=packing
        )
        return self.classifier(self.head_dropout(pooled, deterministic=deterministic))


# --- Hugging Face weight names (used by `loading.convert_hf_state_dict`) ---

# Checkpoint names carry this prefix in task checkpoints (BertForSequenceClassification), not in BertModel.
HF_PREFIX = "bert"
_L, _P = r"encoder\.layer\.(\d+)\.", r"encoder/layer_\1/"  # HF layer prefix -> ours.
# (regex on the HF module name, our module path template, kind of module: 'dense', 'norm' or 'embed').
HF_RULES: tuple[tuple[str, str, str], ...] = (
    (r"embeddings\.(word|position|token_type)_embeddings", r"embeddings/\1_embeddings", "embed"),
    (r"embeddings\.LayerNorm", "embeddings/layer_norm", "norm"),
    (_L + r"attention\.self\.(query|key|value)", _P + r"attention/\2", "dense"),
    (_L + r"attention\.output\.dense", _P + "attention/output/dense", "dense"),
    (_L + r"attention\.output\.LayerNorm", _P + "attention/output/layer_norm", "norm"),
    (_L + r"intermediate\.dense", _P + "intermediate/dense", "dense"),
    (_L + r"output\.dense", _P + "output/dense", "dense"),
    (_L + r"output\.LayerNorm", _P + "output/layer_norm", "norm"),
    (r"pooler\.dense", "pooler/dense", "dense"),
)
