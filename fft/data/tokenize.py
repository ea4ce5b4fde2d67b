"""Tokenizes GLUE examples into unpadded int32 id arrays with the model's fast tokenizer.

    tokenizer = tokenize.load_tokenizer(model_dir)
    encoded = tokenize.encode(tokenizer, examples, max_length=128)

Padding happens later, per batch, in `fft.data.batching`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fft.data import glue

if TYPE_CHECKING:
    import transformers

# Examples per call into the Rust tokenizer: bounds the Python lists alive at once.
_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Tokenized examples of one split, unpadded.

    Attributes:
      input_ids: one int32 [length_i] array per example ([CLS] a [SEP] (b [SEP])).
      token_type_ids: one int32 [length_i] array per example (0 for a, 1 for b).
      labels: int32 [n] class ids or float32 [n] scores; -1 / NaN for unlabeled (test) examples.
      lengths: int32 [n] token counts.
      pad_id: the tokenizer's padding id, used by `fft.data.batching`.
    """

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray
    lengths: np.ndarray
    pad_id: int = 0

    def __post_init__(self):
        sizes = {len(self.input_ids), len(self.token_type_ids), len(self.labels), len(self.lengths)}
        if len(sizes) != 1:
            raise ValueError(f"Encoded fields have different lengths: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def is_regression(self) -> bool:
        return self.labels.dtype.kind == "f"

    def select(self, indices: Sequence[int] | np.ndarray) -> Encoded:
        """The examples at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return Encoded(
            [self.input_ids[i] for i in idx],
            [self.token_type_ids[i] for i in idx],
            self.labels[idx],
            self.lengths[idx],
            self.pad_id,
        )


def load_tokenizer(model_dir: str | os.PathLike) -> transformers.PreTrainedTokenizerBase:
    """Loads the fast tokenizer saved in a local model folder; never contacts the hub.

    Uses `AutoTokenizer.from_pretrained(model_dir, local_files_only=True)`. (In transformers 5,
    `BertTokenizer(vocab_file=...)` silently ignores the file and maps every token to [UNK].)

    Raises:
      FileNotFoundError: `model_dir` is not a local folder.
      ValueError: only a slow (Python) tokenizer is available.
    """
    import transformers  # Heavy import; only callers that tokenize pay for it.

    path = os.fspath(model_dir)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{path}: no such folder; load_tokenizer needs a local model folder with "
            "tokenizer.json (or vocab.txt), hub names are not looked up"
        )
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: no fast tokenizer (tokenizer.json) could be built")
    return tokenizer


def _labels(examples: Sequence[glue.Example], regression: bool | None) -> np.ndarray:
    labels = [e.label for e in examples]
    present = [x is not None for x in labels]
    if any(present) and not all(present):
        raise ValueError("Some examples have labels and some do not; encode them separately")
    if regression is None:
        regression = any(isinstance(x, float) for x in labels)
    if not any(present):
        return np.full(
            len(labels), np.nan if regression else -1, np.float32 if regression else np.int32
        )
    return np.asarray(labels, np.float32 if regression else np.int32)


def encode(
    tokenizer: transformers.PreTrainedTokenizerBase,
    examples: Sequence[glue.Example],
    max_length: int,
    *,
    regression: bool | None = None,
) -> Encoded:
    """Tokenizes examples, truncating each to `max_length` tokens ('longest_first' for pairs).

    Args:
      tokenizer: a fast tokenizer, see `load_tokenizer`.
      examples: all single texts or all pairs.
      max_length: the longest tokenized example, special tokens included.
      regression: float32 labels; None infers it from the labels (floats: STS-B).

    Returns:
      An `Encoded` with one unpadded array per example.
    """
    pairs = {e.text_b is not None for e in examples}
    if len(pairs) > 1:
        raise ValueError("Mixed single-text and pair examples; a task has one or the other")
    input_ids, token_type_ids = [], []
    for start in range(0, len(examples), _CHUNK):
        chunk = examples[start : start + _CHUNK]
        out = tokenizer(
            [e.text_a for e in chunk],
            [e.text_b for e in chunk] if pairs == {True} else None,
            truncation="longest_first",
            max_length=max_length,
            padding=False,
            return_token_type_ids=True,
            return_attention_mask=False,
        )
        input_ids.extend(np.asarray(x, np.int32) for x in out["input_ids"])
        token_type_ids.extend(np.asarray(x, np.int32) for x in out["token_type_ids"])
    lengths = np.fromiter((len(x) for x in input_ids), np.int32, count=len(input_ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(input_ids, token_type_ids, _labels(examples, regression), lengths, int(pad_id))
