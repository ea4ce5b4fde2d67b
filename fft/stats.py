"""Small statistics for comparing methods over seeds: mean ± sd, t intervals, paired differences
and verdicts on claims ("matches the baseline within a margin", "beats the baseline").

  scores = {0: 81.2, 1: 80.4, 2: 82.0}             # method's score by seed
  base = {0: 81.9, 1: 81.0, 2: 81.5, 3: 80.9}      # baseline's (seed 3 has no pair: left out)
  d = paired_difference(scores, base)             # n=3, mean, sd, low, high of method - baseline
  verdict(d["low"], d["high"], margin=1.0)        # 'holds' | 'fails' | 'inconclusive'

Intervals are Student t intervals, mean ± t_{(1+confidence)/2, n-1} · sd / √n, which assume the
values (or the paired differences) are roughly normal and independent; with a handful of seeds they
are wide, and that is the point: a claim that needs more seeds reads 'inconclusive'. Nothing here
corrects for comparing many pairs at once.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"


def mean_sd(values: Iterable[float]) -> tuple[float | None, float | None]:
    """(mean, sample sd with ddof=1) of `values`; sd is None for fewer than 2 values, both are None
    for none. Finite values are summed exactly (statistics.fmean / stdev); a NaN or inf makes the
    results NaN or inf (NumPy's) rather than an error."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    if not all(math.isfinite(v) for v in values):
        array = np.asarray(values)
        with np.errstate(invalid="ignore"):  # inf - inf: NaN is the answer, not a warning.
            return float(np.mean(array)), (float(np.std(array, ddof=1)) if len(values) > 1 else None)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: must be in (0, 1), e.g. 0.95")


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the two-sided Student t interval for the mean of `values` at
    `confidence`. low and high are None for fewer than 2 values (mean too for none); values that
    are all equal give low = high = mean."""
    _check_confidence(confidence)
    values = [float(v) for v in values]
    mean, sd = mean_sd(values)
    if sd is None:
        return mean, None, None
    # Imported here: it takes a while, and fft sweep's tables need only mean_sd.
    from scipy import stats as scipy_stats

    n = len(values)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_difference(method_by_seed: Mapping[int, float], baseline_by_seed: Mapping[int, float],
                      confidence: float = 0.95) -> dict[str, Any]:
    """The differences method - baseline, paired by seed, and their t interval.

    Only seeds present in both mappings with a value (not None) in each are paired; the others are
    left out (listed nowhere: compare `n` with the seeds you expected). Returns {"n", "mean", "sd",
    "low", "high", "seeds"}: the number of pairs, the mean and sd (ddof=1) of the differences, the
    t interval at `confidence` (None for fewer than 2 pairs, see t_interval) and the paired seeds,
    sorted. A positive difference means the method scored higher: for a metric where lower is
    better (a loss), swap the arguments or negate the values.
    """
    _check_confidence(confidence)
    seeds = sorted(s for s in method_by_seed if s in baseline_by_seed
                   and method_by_seed[s] is not None and baseline_by_seed[s] is not None)
    differences = [float(method_by_seed[s]) - float(baseline_by_seed[s]) for s in seeds]
    mean, low, high = t_interval(differences, confidence)
    return {"n": len(differences), "mean": mean, "sd": mean_sd(differences)[1], "low": low, "high": high,
            "seeds": seeds}


def _check_bounds(low: float | None, high: float | None) -> bool:
    """Whether there is an interval to judge (both bounds given); ValueError when low > high."""
    if low is None or high is None:
        return False
    if low > high:
        raise ValueError(f"interval [{low}, {high}]: low is above high")
    return True


def verdict(low: float | None, high: float | None, margin: float) -> str:
    """An equivalence verdict, "the method matches the baseline within ±margin", from the interval
    [low, high] of the difference method - baseline (e.g. paired_difference's):

      'holds'         the whole interval lies within [-margin, +margin] (bounds included): any
                      difference the data allow is within the margin;
      'fails'         the whole interval lies outside the band on one side, high < -margin (the
                      method is worse by more than the margin) or low > +margin (better by more
                      than it): the data rule out a match either way;
      'inconclusive'  otherwise (the interval straddles -margin or +margin), and when there is no
                      interval (a bound is None, fewer than 2 pairs) or a bound is NaN.

    This is the two one-sided tests (TOST) procedure read off an interval: a (1 - 2α) interval
    gives TOST at level α, so the default 95% interval is conservative (α = 0.025); use
    confidence=0.90 for the usual α = 0.05. A method better than the baseline by more than the
    margin 'fails' this claim; for "no worse than the baseline by more than the margin"
    (non-inferiority), check low >= -margin instead.
    """
    if not margin >= 0:  # Also refuses NaN.
        raise ValueError(f"margin={margin!r}: must be >= 0")
    if not _check_bounds(low, high):
        return INCONCLUSIVE
    if -margin <= low and high <= margin:
        return HOLDS
    if high < -margin or low > margin:
        return FAILS
    return INCONCLUSIVE


def better_verdict(low: float | None, high: float | None) -> str:
    """A superiority verdict, "the method beats the baseline", from the interval [low, high] of
    the difference method - baseline:

      'holds'         low > 0: every difference the data allow is an improvement;
      'fails'         high <= 0: the data allow no improvement (the method is no better; it may be
                      equal or worse), so the claim is refuted, not merely unproven;
      'inconclusive'  otherwise (0 < high and low <= 0: the interval holds 0 or touches it from
                      above), and when there is no interval (a bound is None) or a bound is NaN.

    With a two-sided interval at confidence c, 'holds' is a one-sided test at level (1 - c) / 2
    (0.025 for 95%). It says nothing about how large the gain is: compare low with the gain that
    would matter.
    """
    if not _check_bounds(low, high):
        return INCONCLUSIVE
    if low > 0:
        return HOLDS
    if high <= 0:
        return FAILS
    return INCONCLUSIVE


def pairs_to_decide(mean: float | None, sd: float | None, margin: float | None, confidence: float = 0.95,
                    limit: int = 100) -> int | None:
    """How many pairs would turn an 'inconclusive' verdict into 'holds' or 'fails' if further
    pairs kept the observed mean and sd of the differences: the smallest n in 2..limit whose t
    interval mean ± t_{(1+confidence)/2, n-1} · sd / √n gives `verdict` (margin given) or
    `better_verdict` (margin None) a decision. None when no n up to `limit` does (the mean sits
    on a boundary) or mean / sd are missing. A planning figure for the next run, not a verdict:
    the next seeds' differences will scatter, and the sd of 2-3 differences is itself rough.
    """
    _check_confidence(confidence)
    if mean is None or sd is None or not (math.isfinite(mean) and math.isfinite(sd)):
        return None
    from scipy import stats as scipy_stats

    decide = (lambda lo, hi: better_verdict(lo, hi)) if margin is None else (
        lambda lo, hi: verdict(lo, hi, margin))
    for n in range(2, limit + 1):
        half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
        if decide(mean - half, mean + half) != INCONCLUSIVE:
            return n
    return None
