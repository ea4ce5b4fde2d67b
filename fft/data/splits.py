"""A validation split carved from a task's training data, for hyperparameter selection.

    train, validation = splits.carve(encoded_train, fraction=0.1)

With `config.data.validation_fraction > 0` (`fft.train.load_data`) about that fraction of the
TRAIN split becomes a split named `validation`; the run trains on the rest and evaluates only on
`validation`, so choosing learning rates or settings never looks at the GLUE dev set.

The split is stratified: for classification each class gives round(fraction * its count)
examples, so class proportions match the training set's to within one example per class; for
regression (STS-B) the scores are cut into equal-count quantile bins and each bin gives its share.
Which examples go is fixed by the data and the fraction alone (a constant seed, not
`config.seed`), so every seed and every method of a sweep shares one split; and for one data set a
smaller fraction's validation split lies inside a larger one's. Both parts keep the original order.
"""

from __future__ import annotations

import numpy as np

from fft import errors
from fft.data import tokenize

SEED = 0x5A1D  # Fixed: the split must not depend on config.seed.
MAX_BINS = 10  # Quantile bins of a regression score.
MIN_PER_BIN = 20  # Fewer bins for small sets, so that each bin holds examples to draw from.


class SplitError(errors.FftError, ValueError):
    """The training data cannot give a validation split of the requested size."""


def strata(labels: np.ndarray) -> np.ndarray:
    """The stratum of each example: its class id, or for float scores its quantile bin (by rank,
    ties broken by position, so bins have equal counts within one)."""
    labels = np.asarray(labels)
    if labels.dtype.kind != "f":
        return labels.astype(np.int64)
    n = len(labels)
    bins = max(1, min(MAX_BINS, n // MIN_PER_BIN))
    rank = np.empty(n, np.int64)
    rank[np.argsort(labels, kind="stable")] = np.arange(n)
    return rank * bins // max(n, 1)


def validation_indices(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Sorted indices of the validation examples: round(fraction * n_s) of each stratum s, drawn
    by a permutation seeded by (SEED, s)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups = strata(labels)
    chosen = []
    for stratum in np.unique(groups):
        members = np.flatnonzero(groups == stratum)
        k = round(fraction * len(members))
        order = np.random.default_rng([SEED, int(stratum)]).permutation(len(members))
        chosen.append(members[order[:k]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def carve(train: tokenize.Encoded, fraction: float) -> tuple[tokenize.Encoded, tokenize.Encoded]:
    """(rest of train, validation) with about `fraction` of `train` in validation (see module)."""
    n = len(train)
    held = validation_indices(train.labels, fraction)
    if len(held) == 0 or len(held) == n:
        raise SplitError(
            f"config.data.validation_fraction={fraction}: gives {len(held)} of {n} training "
            "examples to validation; both parts need examples"
        )
    keep = np.ones(n, bool)
    keep[held] = False
    return train.select(np.flatnonzero(keep)), train.select(held)
