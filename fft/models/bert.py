"""BERT encoder and sequence classifier (Flax linen), and how Hugging Face names its weights.

Parameter paths follow docs/CONTRACT.md, e.g. `encoder/layer_3/attention/query/kernel`. Parameters are
always stored in float32; `dtype` is only the compute dtype of the matmuls. Layer norms, the attention
softmax, the pooler, mean pooling and the logits are computed in float32.

The transformer blocks live in `fft.models.encoder`, their specs in `fft.models.specs`, and
masks, packed rows and pooling in `fft.models.rows`; `distilbert.py` builds on the same three.
This module re-exports the names callers know as `bert.<name>`.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from fft.models import dropout as hashed_dropout
from fft.models.encoder import (  # noqa: F401  (re-exported)
    INIT_STD,
    Adapter,
    Attention,
    Classifier,
    Encoder,
    Intermediate,
    Layer,
    LearnerIntermediate,
    ResidualOutput,
    _normalize_after,
    dense,
    embed,
    layer_norm,
)
from fft.models.rows import (  # noqa: F401  (re-exported)
    POOLINGS,
    Packing,
    attention_bias,
    check_pooling,
    first_tokens,
    mean_tokens,
    packed_inputs,
    pool_tokens,
    position_ids,
)
from fft.models.specs import (  # noqa: F401  (re-exported)
    ACTIVATIONS,
    ADAPTER_INIT_STD,
    ADAPTER_SITES,
    AdapterSpec,
    EncoderSpec,
    LearnerSpec,
    adapter_apply,
    check_activation,
    check_adapter,
    check_learners,
    gelu_erf,
)


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


class BertForSequenceClassification(Classifier):
    """BERT encoder -> pooling -> dropout -> `classifier` (methods: `encoder.Classifier`).

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

    def _pooled(self, hidden, attention_mask, packing=None):
        """The pooler output ('cls') or the mean of the real tokens' last hidden states ('mean',
        the sentence-transformers embedding); float32 [batch, hidden]."""
        if self.pooling == "cls":
            return self.pooler(hidden, packing)
        return pool_tokens(hidden, attention_mask, packing, self.pooling)

    def _logits(self, pooled, *, deterministic: bool):
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
