"""Inputs the fixture scripts feed both PyTorch and fft (torch-free, so tests can import it)."""

import numpy as np


def random_batch(vocab_size: int, lengths: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    """Random ids, right padding: row i has lengths[i] real tokens, token type 1 in its 2nd half."""
    rng = np.random.default_rng(seed)
    seq = max(lengths)
    ids = rng.integers(1, vocab_size, size=(len(lengths), seq)).astype(np.int64)
    mask = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    types = ((np.arange(seq)[None, :] >= np.array(lengths)[:, None] // 2) * mask).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types}
