"""DistilBERT encoder and sequence classifier (Flax linen), and how Hugging Face names its weights.

DistilBERT is BERT without token types and pooler, with a fixed layer-norm epsilon (1e-12) and no dropout
after the attention projection; the transformer blocks are `bert.Encoder`, so parameter paths match
BERT's (`encoder/layer_{i}/attention/query/kernel`, ...). The head is HF's: first token (or, with
`pooling='mean'`, the mean of the real tokens) -> `pre_classifier/dense` -> ReLU -> dropout ->
`classifier`.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fft.models import bert
from fft.models import dropout as hashed_dropout

_LAYER_NORM_EPS = 1e-12  # Fixed in DistilBERT, not a config key.


@dataclasses.dataclass(frozen=True)
class DistilBertConfig:
    """Hyper-parameters of a DistilBERT encoder; field names match `bert.BertConfig` where roles do."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    seq_classif_dropout: float = 0.2
    sinusoidal_pos_embds: bool = (
        False  # Only changes the initial position table; it is checkpointed.
    )
    adapter: bert.AdapterSpec | None = None  # Bottleneck adapters (`bert.AdapterSpec`); None: none.
    learners: bert.LearnerSpec | None = None  # Learner FFN nodes (`bert.LearnerSpec`); None: plain.

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of {self.num_heads} heads."
            )
        bert.check_activation(self.hidden_act)
        bert.check_adapter(self.adapter, self.hidden_size)
        bert.check_learners(self.learners, self.num_layers, self.intermediate_size)

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any]) -> "DistilBertConfig":
        """Builds the config from the keys of a Hugging Face DistilBERT `config.json`."""
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["dim"],
            num_layers=d["n_layers"],
            num_heads=d["n_heads"],
            intermediate_size=d["hidden_dim"],
            max_position_embeddings=d.get("max_position_embeddings", 512),
            hidden_dropout=d.get("dropout", 0.1),
            attention_dropout=d.get("attention_dropout", 0.1),
            hidden_act=d.get("activation", "gelu"),
            pad_token_id=d.get("pad_token_id") or 0,
            seq_classif_dropout=d.get("seq_classif_dropout", 0.2),
            sinusoidal_pos_embds=d.get("sinusoidal_pos_embds", False),
        )

    @property
    def encoder_spec(self) -> bert.EncoderSpec:
        """The `bert.EncoderSpec` of this config."""
        return bert.EncoderSpec(
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_eps=_LAYER_NORM_EPS,
            attention_output_dropout=False,
            adapter=self.adapter,
            learners=self.learners,
        )


def sinusoidal_init(key: jax.Array, shape: tuple[int, int], dtype: jnp.dtype = jnp.float32):
    """The fixed sin/cos position table of `sinusoidal_pos_embds=True` [positions, dim]; ignores key."""
    del key
    positions, dim = shape
    angles = np.arange(positions)[:, None] / np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    return jnp.asarray(table, dtype)


class DistilBertEmbeddings(nn.Module):
    """Word + position embeddings, float32 layer norm, dropout."""

    config: DistilBertConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(
        self, input_ids: jax.Array, *, deterministic: bool, positions: jax.Array | None = None
    ) -> jax.Array:
        """Maps ids [batch, seq] to [batch, seq, hidden]; `positions` defaults to 0..seq-1."""
        c = self.config
        if positions is None:
            positions = bert.position_ids(input_ids.shape[1], c.max_position_embeddings)
        position_init = sinusoidal_init if c.sinusoidal_pos_embds else None
        x = bert.embed(c.vocab_size, c.hidden_size, "word_embeddings")(input_ids)
        x += bert.embed(
            c.max_position_embeddings, c.hidden_size, "position_embeddings", position_init
        )(positions)
        x = bert.layer_norm(_LAYER_NORM_EPS, "layer_norm")(x)
        return hashed_dropout.Dropout(c.hidden_dropout)(x, deterministic=deterministic).astype(self.dtype)


class PreClassifier(nn.Module):
    """ReLU(`dense`(x)) in float32: the first half of HF's DistilBERT classification head."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [batch, hidden] to [batch, hidden] float32."""
        x = x.astype(jnp.float32)
        return jax.nn.relu(bert.dense(x.shape[-1], jnp.float32, "dense")(x))


class DistilBertForSequenceClassification(bert.Classifier):
    """DistilBERT encoder -> pooling -> `pre_classifier` -> dropout -> `classifier` (methods:
    `encoder.Classifier`).

    Attributes:
      config: the encoder hyper-parameters.
      num_labels: number of logits (1 for regression).
      dtype: compute dtype of the encoder matmuls (float32 or bfloat16); parameters stay float32.
      pooling: one of `bert.POOLINGS`: 'cls' (the first token) or 'mean' (the float32 mean of
        each example's real tokens, `bert.mean_tokens`); the parameters are the same either way.
    """

    config: DistilBertConfig
    num_labels: int
    dtype: jnp.dtype = jnp.float32
    pooling: str = "cls"

    head_names: ClassVar[tuple[str, ...]] = ("pre_classifier", "classifier")
    # Top-level subtrees of a pretrained checkpoint this model does not use (none, either pooling).
    unused_pretrained: ClassVar[tuple[str, ...]] = ()

    def setup(self):
        bert.check_pooling(self.pooling)
        self.embeddings = DistilBertEmbeddings(self.config, self.dtype)
        self.encoder = bert.Encoder(self.config.encoder_spec, self.dtype)
        self.pre_classifier = PreClassifier()
        self.head_dropout = hashed_dropout.Dropout(self.config.seq_classif_dropout)
        self.classifier = bert.dense(self.num_labels, jnp.float32, "classifier")

    def _embed(self, input_ids, token_type_ids, *, deterministic: bool, positions=None):
        del token_type_ids  # DistilBERT has none.
        return self.embeddings(input_ids, deterministic=deterministic, positions=positions)

    def _pooled(self, hidden, attention_mask, packing=None):
        """What `pre_classifier` starts from: the first token's last hidden state ('cls') or the
        mean of the real tokens' ('mean'), float32 [batch, hidden]."""
        return bert.pool_tokens(hidden, attention_mask, packing, self.pooling).astype(jnp.float32)

    def _logits(self, pooled, *, deterministic: bool):
        return self.classifier(self.head_dropout(self.pre_classifier(pooled), deterministic=deterministic))


# --- Hugging Face weight names (used by `loading.convert_hf_state_dict`) ---

# Task checkpoints (DistilBertForSequenceClassification) carry this prefix; DistilBertModel does not.
HF_PREFIX = "distilbert"
_L, _P = r"transformer\.layer\.(\d+)\.", r"encoder/layer_\1/"  # HF layer prefix -> ours.
# (regex on the HF module name, our module path template, kind of module: 'dense', 'norm' or 'embed').
HF_RULES: tuple[tuple[str, str, str], ...] = (
    (r"embeddings\.(word|position)_embeddings", r"embeddings/\1_embeddings", "embed"),
    (r"embeddings\.LayerNorm", "embeddings/layer_norm", "norm"),
    (_L + r"attention\.q_lin", _P + "attention/query", "dense"),
    (_L + r"attention\.k_lin", _P + "attention/key", "dense"),
    (_L + r"attention\.v_lin", _P + "attention/value", "dense"),
    (_L + r"attention\.out_lin", _P + "attention/output/dense", "dense"),
    (_L + r"sa_layer_norm", _P + "attention/output/layer_norm", "norm"),
    (_L + r"ffn\.lin1", _P + "intermediate/dense", "dense"),
    (_L + r"ffn\.lin2", _P + "output/dense", "dense"),
    (_L + r"output_layer_norm", _P + "output/layer_norm", "norm"),
)
