"""Tests for fft.metrics against sklearn and scipy, including degenerate inputs."""

import warnings

import numpy as np
from absl.testing import absltest, parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm

from fft import metrics


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


class AgainstReferenceTest(parameterized.TestCase):
    @parameterized.parameters(range(8))
    def test_classification(self, seed):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 60))
        y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
        self.assertAlmostEqual(metrics.accuracy(p, y), skm.accuracy_score(y, p))
        self.assertAlmostEqual(metrics.f1(p, y), skm.f1_score(y, p, zero_division=0))
        self.assertAlmostEqual(metrics.matthews_corrcoef(p, y), _quiet(skm.matthews_corrcoef, y, p))

    @parameterized.parameters(range(6))
    def test_multiclass_mcc(self, seed):
        rng = np.random.default_rng(seed)
        y, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
        p[:20] = y[:20]
        self.assertAlmostEqual(metrics.matthews_corrcoef(p, y), skm.matthews_corrcoef(y, p))

    @parameterized.parameters(range(6))
    def test_correlations(self, seed):
        rng = np.random.default_rng(seed)
        y = np.round(rng.random(40) * 5, 1)  # Rounded: plenty of ties.
        p = (y + rng.normal(size=40)).astype(np.float32)
        p[:5] = p[5]  # Ties in predictions too.
        self.assertAlmostEqual(metrics.pearson(p, y), stats.pearsonr(p, y)[0], places=6)
        self.assertAlmostEqual(metrics.spearman(p, y), stats.spearmanr(p, y)[0], places=6)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=30))
    def test_binary_hypothesis(self, pairs):
        y, p = np.array(pairs).T
        self.assertAlmostEqual(metrics.f1(p, y), skm.f1_score(y, p, zero_division=0))
        self.assertAlmostEqual(metrics.matthews_corrcoef(p, y), _quiet(skm.matthews_corrcoef, y, p))

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(-3, 3), min_size=1, max_size=30))
    def test_average_ranks(self, values):
        np.testing.assert_allclose(metrics.average_ranks(np.array(values)), stats.rankdata(values))


class DegenerateTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("constant_predictions", [1, 1, 1, 1], [0, 1, 0, 1]),
        ("constant_labels", [0, 1, 0, 1], [1, 1, 1, 1]),
        ("both_constant", [0, 0, 0], [0, 0, 0]),
        ("single_example", [1], [0]),
    )
    def test_mcc_is_zero_like_sklearn(self, p, y):
        self.assertEqual(metrics.matthews_corrcoef(p, y), 0.0)
        self.assertEqual(_quiet(skm.matthews_corrcoef, y, p), 0.0)

    def test_perfect_and_inverted(self):
        self.assertEqual(metrics.matthews_corrcoef([0, 1, 1], [0, 1, 1]), 1.0)
        self.assertEqual(metrics.matthews_corrcoef([1, 0, 0], [0, 1, 1]), -1.0)
        self.assertEqual(metrics.f1([1, 0, 0], [1, 0, 0]), 1.0)

    def test_f1_no_positives_is_zero(self):
        self.assertEqual(metrics.f1([0, 0], [0, 0]), 0.0)
        self.assertEqual(skm.f1_score([0, 0], [0, 0], zero_division=0), 0.0)

    def test_constant_correlation_is_zero(self):
        for fn in (metrics.pearson, metrics.spearman):
            self.assertEqual(fn([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]), 0.0)
            self.assertEqual(fn([1.0, 2.0, 3.0], [0.1, 0.1, 0.1]), 0.0)
        self.assertTrue(np.isnan(_quiet(stats.pearsonr, [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])[0]))

    def test_nan_predictions_give_nan(self):
        self.assertTrue(np.isnan(metrics.pearson([np.nan, 1.0, 2.0], [1.0, 2.0, 3.0])))
        self.assertTrue(np.isnan(metrics.spearman([np.nan, 1.0, 2.0], [1.0, 2.0, 3.0])))

    def test_bad_shapes(self):
        with self.assertRaisesRegex(ValueError, "zero examples"):
            metrics.accuracy([], [])
        with self.assertRaisesRegex(ValueError, "same shape"):
            metrics.accuracy([0, 1], [0, 1, 1])
        with self.assertRaisesRegex(ValueError, "at least 2"):
            metrics.pearson([1.0], [2.0])
        with self.assertRaisesRegex(ValueError, "binary"):
            metrics.f1([0, 2], [0, 1])


class ComputeTest(parameterized.TestCase):
    @parameterized.parameters(
        ("cola", {"matthews_corrcoef", "combined"}),
        ("CoLA", {"matthews_corrcoef", "combined"}),
        ("mrpc", {"accuracy", "f1", "combined"}),
        ("qqp", {"accuracy", "f1", "combined"}),
        ("sst2", {"accuracy", "combined"}),
        ("mnli", {"accuracy", "combined"}),
        ("qnli", {"accuracy", "combined"}),
        ("rte", {"accuracy", "combined"}),
        ("wnli", {"accuracy", "combined"}),
    )
    def test_keys(self, task, keys):
        results = metrics.compute(task, np.array([0, 1, 1, 0], np.int32), np.array([0, 1, 0, 0]))
        self.assertEqual(set(results), keys)
        self.assertTrue(all(isinstance(v, float) for v in results.values()))

    def test_mrpc_values(self):
        results = metrics.compute("mrpc", [1, 1, 0, 0], [1, 0, 0, 0])
        self.assertAlmostEqual(results["accuracy"], 0.75)
        self.assertAlmostEqual(results["f1"], 2 / 3)
        self.assertAlmostEqual(results["combined"], (0.75 + 2 / 3) / 2)
        self.assertEqual(metrics.primary("mrpc", results), results["combined"])

    def test_stsb(self):
        p, y = np.array([0.5, 2.0, 4.0, 3.0], np.float32), np.array([1.0, 2.0, 5.0, 2.5])
        results = metrics.compute("sts-b", p, y)
        self.assertEqual(set(results), {"pearson", "spearman", "combined"})
        self.assertAlmostEqual(results["pearson"], stats.pearsonr(p, y)[0], places=6)
        self.assertAlmostEqual(results["spearman"], 1.0)
        self.assertEqual(metrics.primary("stsb", results), results["combined"])

    def test_primary(self):
        self.assertEqual(metrics.primary("cola", {"matthews_corrcoef": 0.3, "combined": 0.3}), 0.3)
        self.assertEqual(metrics.primary("rte", {"accuracy": 0.6, "combined": 0.6}), 0.6)

    def test_rejects_logits_and_unlabeled(self):
        with self.assertRaisesRegex(ValueError, r"argmax"):
            metrics.compute("rte", np.zeros((4, 2)), np.zeros(4, np.int32))
        with self.assertRaisesRegex(ValueError, "label -1"):
            metrics.compute("rte", np.zeros(4, np.int32), -np.ones(4, np.int32))
        with self.assertRaisesRegex(ValueError, r"class ids in 0\.\.2"):
            metrics.compute("mnli", np.array([0, 3]), np.array([0, 1]))


if __name__ == "__main__":
    absltest.main()
