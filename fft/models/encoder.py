"""The transformer blocks BERT and DistilBERT share (Flax linen), and `Classifier`, the
surface of a sequence classifier built on them.

The blocks take an `EncoderSpec` (fft.models.specs) rather than a model config. Parameters are
always float32; `dtype` is only the compute dtype of the matmuls. Layer norms and the attention
softmax are computed in float32.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fft.models import dropout as hashed_dropout
from fft.models.rows import Packing, attention_bias, packed_inputs
from fft.models.specs import ACTIVATIONS, ADAPTER_INIT_STD, AdapterSpec, EncoderSpec, adapter_apply

INIT_STD = 0.02  # HF `initializer_range`: N(0, 0.02) kernels and embeddings, zero biases.


def dense(features: int, dtype: jnp.dtype, name: str) -> nn.Dense:
    """A Dense layer with float32 parameters, HF initialisation and compute dtype `dtype`."""
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(INIT_STD),
        name=name,
    )


def embed(num: int, features: int, name: str, init: Callable | None = None) -> nn.Embed:
    """A float32 embedding table (lookups stay float32; the caller casts after the layer norm)."""
    return nn.Embed(
        num,
        features,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        embedding_init=init or nn.initializers.normal(INIT_STD),
        name=name,
    )


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    """A float32 layer norm with the exact (two-pass) variance, as torch computes it."""
    return nn.LayerNorm(
        epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32, use_fast_variance=False, name=name
    )


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
                kernel_init=nn.initializers.normal(INIT_STD), name="learner",
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


class Classifier(nn.Module):
    """What BERT and DistilBERT sequence classifiers share: embeddings -> `encoder` -> pooling ->
    head. A subclass has fields `config` (with `max_position_embeddings`) and `pooling`, sets
    `self.embeddings` and `self.encoder` in `setup`, and defines `_pooled` and `_logits`.

    Every method takes input_ids int [batch, seq]; attention_mask 0/1 [batch, seq] (0 marks
    padding keys; None: no padding); token_type_ids int [batch, seq] (None: zeros; models without
    token types ignore them); deterministic (False applies dropout and needs a 'dropout' rng); and
    packing, rows that hold several examples (then `attention_mask` must be None, and per-example
    outputs have rows * slots entries, one per slot)."""

    def _embed(self, input_ids, token_type_ids, *, deterministic: bool, positions=None):
        """[batch, seq, hidden] embeddings in the compute dtype."""
        return self.embeddings(
            input_ids, token_type_ids, deterministic=deterministic, positions=positions
        )

    def _pooled(self, hidden, attention_mask, packing: Packing | None = None) -> jax.Array:
        """What `pool` returns: one float32 vector per example from the last hidden states."""
        raise NotImplementedError

    def _logits(self, pooled: jax.Array, *, deterministic: bool) -> jax.Array:
        """The head: `_pooled`'s vectors -> float32 [batch, num_labels]."""
        raise NotImplementedError

    def encode(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool,
        packing: Packing | None = None,
    ) -> jax.Array:
        """Last hidden states [batch, seq, hidden] in the compute dtype."""
        mask, positions = packed_inputs(
            attention_mask, packing, input_ids.shape[1], self.config.max_position_embeddings
        )
        x = self._embed(input_ids, token_type_ids, deterministic=deterministic, positions=positions)
        return self.encoder(x, mask, deterministic=deterministic)

    def pool(
        self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool, packing=None
    ) -> jax.Array:
        """What the head starts from, [batch, hidden] float32 (see the subclass's `_pooled`)."""
        hidden = self.encode(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic, packing=packing
        )
        return self._pooled(hidden, attention_mask, packing)

    def prefix(self, input_ids, attention_mask=None, token_type_ids=None, *, num_layers: int):
        """Hidden states after the embeddings and encoder layers 0..num_layers-1, dropout off.

        With those layers frozen this is a fixed function of the input: `fft.feature_cache`
        computes it once per dataset and trains `from_prefix` on the result."""
        x = self._embed(input_ids, token_type_ids, deterministic=True)
        return self.encoder(x, attention_mask, deterministic=True, stop=num_layers)

    def from_prefix(self, hidden, attention_mask=None, *, start: int, deterministic: bool):
        """Logits from the hidden states entering layer `start` (the output of `prefix`)."""
        hidden = self.encoder(hidden, attention_mask, deterministic=deterministic, start=start)
        return self._logits(self._pooled(hidden, attention_mask), deterministic=deterministic)

    def __call__(
        self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool, packing=None
    ) -> jax.Array:
        """Logits [batch, num_labels] float32."""
        pooled = self.pool(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic, packing=packing
        )
        return self._logits(pooled, deterministic=deterministic)
