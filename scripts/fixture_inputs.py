"""Inputs the fixture scripts feed both PyTorch and fft (torch-free, so tests can import it)."""

import csv
import pathlib

import numpy as np

GLUE_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "glue"
# Real sentence pairs of the shipped GLUE dev files for the mean-pooling fixture
# (scripts/make_pooling_fixtures.py): (file, sentence columns, data rows, 0-based after the header):
# short captions, a forum pair, news, and MRPC's long newswire pairs, so the pairs differ in length.
POOLING_PAIRS = (
    ("STS-B/dev.tsv", ("sentence1", "sentence2"), (0, 34, 799, 1199, 1399)),
    ("MRPC/dev.tsv", ("#1 String", "#2 String"), (0, 3, 198)),
)


def read_pairs(glue_dir: pathlib.Path = GLUE_DIR, sources=POOLING_PAIRS) -> tuple[list[tuple[str, str]], list[str]]:
    """The sentence pairs `sources` names and where each comes from ('STS-B/dev.tsv:34')."""
    pairs, where = [], []
    for name, (first, second), rows in sources:
        with open(glue_dir / name, encoding="utf-8-sig", newline="") as f:
            table = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        for row in rows:
            pairs.append((table[row][first], table[row][second]))
            where.append(f"{name}:{row}")
    return pairs, where


def random_batch(vocab_size: int, lengths: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    """Random ids, right padding: row i has lengths[i] real tokens, token type 1 in its 2nd half."""
    rng = np.random.default_rng(seed)
    seq = max(lengths)
    ids = rng.integers(1, vocab_size, size=(len(lengths), seq)).astype(np.int64)
    mask = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    types = ((np.arange(seq)[None, :] >= np.array(lengths)[:, None] // 2) * mask).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types}
