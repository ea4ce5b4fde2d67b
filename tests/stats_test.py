"""fft.stats: mean ± sd, t intervals and paired differences against scipy.stats, and verdicts."""

import math
import statistics

import numpy as np
from absl.testing import absltest, parameterized
from scipy import stats as scipy_stats

from fft import stats


class MeanSdTest(parameterized.TestCase):
    def test_matches_numpy_and_statistics(self):
        rng = np.random.default_rng(0)
        for n in (2, 3, 5, 10):
            values = rng.normal(70.0, 3.0, size=n)
            mean, sd = stats.mean_sd(values)
            self.assertAlmostEqual(mean, float(np.mean(values)), places=10)
            self.assertAlmostEqual(sd, float(np.std(values, ddof=1)), places=10)
            # Bit for bit what fft.sweep's tables used before (statistics.fmean / stdev).
            self.assertEqual((mean, sd), (statistics.fmean(values.tolist()), statistics.stdev(values.tolist())))

    def test_few_values(self):
        self.assertEqual(stats.mean_sd([]), (None, None))
        self.assertEqual(stats.mean_sd([3.5]), (3.5, None))
        self.assertEqual(stats.mean_sd(iter([1, 3])), (2.0, math.sqrt(2)))  # Any iterable, ints too.
        self.assertEqual(stats.mean_sd([2.0, 2.0, 2.0]), (2.0, 0.0))

    def test_non_finite_values_give_nan_not_an_error(self):
        mean, sd = stats.mean_sd([1.0, float("nan")])
        self.assertTrue(math.isnan(mean) and math.isnan(sd))
        mean, sd = stats.mean_sd([1.0, float("inf")])
        self.assertEqual(mean, float("inf"))
        self.assertTrue(math.isnan(sd))
        mean, sd = stats.mean_sd([float("nan")])
        self.assertTrue(math.isnan(mean))
        self.assertIsNone(sd)


class TIntervalTest(parameterized.TestCase):
    @parameterized.parameters((2, 0.95), (3, 0.95), (5, 0.9), (8, 0.99), (30, 0.5))
    def test_matches_scipy(self, n, confidence):
        rng = np.random.default_rng(n)
        values = rng.normal(0.5, 2.0, size=n)
        mean, low, high = stats.t_interval(values, confidence)
        want = scipy_stats.t.interval(confidence, n - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
        np.testing.assert_allclose([low, high], want, rtol=1e-10)
        self.assertAlmostEqual(mean, (low + high) / 2, places=10)

    def test_few_values_and_no_spread(self):
        self.assertEqual(stats.t_interval([]), (None, None, None))
        self.assertEqual(stats.t_interval([4.0]), (4.0, None, None))
        self.assertEqual(stats.t_interval([4.0, 4.0, 4.0]), (4.0, 4.0, 4.0))

    def test_wider_with_higher_confidence(self):
        values = [1.0, 2.0, 4.0]
        _, low90, high90 = stats.t_interval(values, 0.9)
        _, low99, high99 = stats.t_interval(values, 0.99)
        self.assertLess(low99, low90)
        self.assertGreater(high99, high90)

    @parameterized.parameters(0.0, 1.0, 95, -0.5)
    def test_bad_confidence(self, confidence):
        with self.assertRaisesRegex(ValueError, "confidence"):
            stats.t_interval([1.0, 2.0], confidence)
        with self.assertRaisesRegex(ValueError, "confidence"):
            stats.paired_difference({0: 1.0}, {0: 2.0}, confidence)


class PairedDifferenceTest(parameterized.TestCase):
    def test_matches_scipy_ttest_rel(self):
        rng = np.random.default_rng(1)
        for n in (2, 4, 10):
            base = rng.normal(80.0, 2.0, size=n)
            method = base + rng.normal(0.3, 1.0, size=n)
            seeds = list(rng.permutation(100)[:n].tolist())
            d = stats.paired_difference(dict(zip(seeds, method)), dict(zip(seeds, base)))
            self.assertEqual(d["n"], n)
            self.assertEqual(d["seeds"], sorted(seeds))
            want = scipy_stats.ttest_rel(method, base).confidence_interval(0.95)
            np.testing.assert_allclose([d["low"], d["high"]], [want.low, want.high], rtol=1e-10)
            self.assertAlmostEqual(d["mean"], float(np.mean(method - base)), places=10)
            self.assertAlmostEqual(d["sd"], float(np.std(method - base, ddof=1)), places=10)

    def test_pairs_by_seed_not_by_position(self):
        method = {0: 10.0, 1: 20.0, 2: 30.0, 5: 99.0}  # Seed 5: no baseline.
        base = {2: 29.0, 0: 9.0, 1: 18.0, 3: 50.0}  # Other insertion order; seed 3: no method run.
        d = stats.paired_difference(method, base, confidence=0.9)
        self.assertEqual((d["n"], d["seeds"]), (3, [0, 1, 2]))
        diffs = np.array([1.0, 2.0, 1.0])
        self.assertAlmostEqual(d["mean"], diffs.mean())
        want = scipy_stats.t.interval(0.9, 2, loc=diffs.mean(), scale=scipy_stats.sem(diffs))
        np.testing.assert_allclose([d["low"], d["high"]], want, rtol=1e-10)

    def test_none_values_are_unpaired(self):
        d = stats.paired_difference({0: 1.0, 1: None, 2: 3.0}, {0: 0.5, 1: 0.5, 2: None})
        self.assertEqual(d, {"n": 1, "mean": 0.5, "sd": None, "low": None, "high": None, "seeds": [0]})

    def test_no_pairs(self):
        d = stats.paired_difference({0: 1.0}, {1: 1.0})
        self.assertEqual(d, {"n": 0, "mean": None, "sd": None, "low": None, "high": None, "seeds": []})

    def test_sign_is_method_minus_baseline(self):
        d = stats.paired_difference({0: 1.0, 1: 2.0}, {0: 3.0, 1: 5.0})
        self.assertEqual(d["mean"], -2.5)


class VerdictTest(parameterized.TestCase):
    @parameterized.parameters(
        (-0.5, 0.5, 1.0, "holds"),
        (-1.0, 1.0, 1.0, "holds"),  # Bounds on the margin count as within.
        (0.0, 0.0, 0.0, "holds"),
        (-1.5, 0.5, 1.0, "inconclusive"),  # Straddles -margin.
        (0.5, 1.5, 1.0, "inconclusive"),  # Straddles +margin.
        (-2.0, 2.0, 1.0, "inconclusive"),  # Wider than the band.
        (-3.0, -1.5, 1.0, "fails"),  # Worse by more than the margin.
        (-3.0, -1.0, 1.0, "inconclusive"),  # Touches -margin: a match is not ruled out.
        (1.5, 3.0, 1.0, "fails"),  # Better by more than the margin: not a match either.
        (None, None, 1.0, "inconclusive"),  # Fewer than 2 pairs.
        (None, 0.5, 1.0, "inconclusive"),
        (float("nan"), float("nan"), 1.0, "inconclusive"),
    )
    def test_equivalence(self, low, high, margin, want):
        self.assertEqual(stats.verdict(low, high, margin), want)

    @parameterized.parameters(
        (0.1, 2.0, "holds"),
        (0.0, 2.0, "inconclusive"),  # Zero gain is not ruled out.
        (-1.0, 2.0, "inconclusive"),
        (-2.0, 0.0, "fails"),  # No improvement possible: refuted.
        (-2.0, -0.1, "fails"),
        (0.0, 0.0, "fails"),
        (None, None, "inconclusive"),
        (float("nan"), float("nan"), "inconclusive"),
    )
    def test_superiority(self, low, high, want):
        self.assertEqual(stats.better_verdict(low, high), want)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "margin"):
            stats.verdict(-0.1, 0.1, -1.0)
        with self.assertRaisesRegex(ValueError, "margin"):
            stats.verdict(-0.1, 0.1, float("nan"))
        with self.assertRaisesRegex(ValueError, "low is above high"):
            stats.verdict(1.0, -1.0, 2.0)
        with self.assertRaisesRegex(ValueError, "low is above high"):
            stats.better_verdict(1.0, -1.0)

    def test_end_to_end(self):
        method = {s: 80.0 + 0.1 * s for s in range(5)}
        base = {s: 80.0 + 0.1 * s + (0.05 if s % 2 else -0.05) for s in range(5)}
        d = stats.paired_difference(method, base)
        self.assertEqual(stats.verdict(d["low"], d["high"], margin=0.5), "holds")
        self.assertEqual(stats.better_verdict(d["low"], d["high"]), "inconclusive")
        worse = stats.paired_difference({s: v - 3.0 for s, v in method.items()}, base)
        self.assertEqual(stats.verdict(worse["low"], worse["high"], margin=0.5), "fails")
        self.assertEqual(stats.better_verdict(worse["low"], worse["high"]), "fails")



class PairsToDecideTest(parameterized.TestCase):
    @parameterized.parameters((0.5, 1.0, 2.0), (-0.3, 2.5, 2.0), (3.5, 1.0, 2.0), (1.0, 0.8, 1.5))
    def test_first_n_whose_interval_decides(self, mean, sd, margin):
        """Against scipy's t interval at the same mean and sd: n decides, n - 1 does not."""
        n = stats.pairs_to_decide(mean, sd, margin)

        def decided(k):
            low, high = scipy_stats.t.interval(0.95, k - 1, loc=mean, scale=sd / math.sqrt(k))
            return stats.verdict(low, high, margin) != stats.INCONCLUSIVE

        self.assertIsNotNone(n)
        self.assertTrue(decided(n))
        if n > 2:
            self.assertFalse(decided(n - 1))

    def test_superiority_and_undecidable(self):
        n = stats.pairs_to_decide(1.0, 2.0, None)  # Superiority: low > 0 once t·sd/√n < 1.
        half = lambda k: scipy_stats.t.ppf(0.975, k - 1) * 2.0 / math.sqrt(k)
        self.assertLess(half(n), 1.0)
        self.assertGreaterEqual(half(n - 1), 1.0)
        self.assertIsNone(stats.pairs_to_decide(2.0, 1.0, 2.0))  # On the margin: never decides.
        self.assertIsNone(stats.pairs_to_decide(None, 1.0, 2.0))
        self.assertIsNone(stats.pairs_to_decide(0.5, None, 2.0))
        self.assertEqual(stats.pairs_to_decide(0.5, 0.0, 2.0), 2)

if __name__ == "__main__":
    absltest.main()
