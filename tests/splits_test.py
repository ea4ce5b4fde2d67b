"""The validation split carved from train (fft.data.splits) and a tiny run that scores only it."""

import numpy as np
from absl.testing import absltest, parameterized

from configs import glue as glue_config
from fft import train, validate
from fft.data import splits, tokenize
from fft.models import loading


def encoded(labels) -> tokenize.Encoded:
    labels = np.asarray(labels)
    n = len(labels)
    ids = [np.full(3 + i % 5, i, np.int32) for i in range(n)]  # Each example's ids name it.
    return tokenize.Encoded(ids, [np.zeros_like(x) for x in ids], labels,
                            np.array([len(x) for x in ids], np.int32))


def names(part: tokenize.Encoded) -> list[int]:
    return [int(x[0]) for x in part.input_ids]


class SplitsTest(parameterized.TestCase):
    def setUp(self):
        rng = np.random.default_rng(3)
        # Unbalanced classes: 700 / 250 / 53.
        self.labels = rng.permutation(np.repeat(np.arange(3, dtype=np.int32), [700, 250, 53]))
        self.data = encoded(self.labels)

    @parameterized.parameters(0.05, 0.1, 0.25, 0.49)
    def test_disjoint_sizes_and_stratified(self, fraction):
        rest, held = splits.carve(self.data, fraction)
        self.assertEmpty(set(names(rest)) & set(names(held)))
        self.assertEqual(sorted(names(rest) + names(held)), list(range(len(self.labels))))
        self.assertLessEqual(abs(len(held) - fraction * len(self.labels)), 3)  # One per class.
        for c, count in enumerate(np.bincount(self.labels)):
            self.assertLessEqual(abs(np.sum(held.labels == c) - fraction * count), 1.0)
        # Both parts keep the original order, and the labels travel with their examples.
        self.assertEqual(names(held), sorted(names(held)))
        np.testing.assert_array_equal(held.labels, self.labels[names(held)])

    def test_deterministic_and_nested(self):
        a = names(splits.carve(self.data, 0.1)[1])
        self.assertEqual(a, names(splits.carve(encoded(self.labels), 0.1)[1]))
        self.assertLessEqual(set(a), set(names(splits.carve(self.data, 0.2)[1])))

    def test_regression_by_quantile_bins(self):
        scores = np.random.default_rng(0).gamma(2.0, 1.0, size=600).astype(np.float32)
        bins = splits.strata(scores)
        self.assertEqual(len(np.unique(bins)), splits.MAX_BINS)
        self.assertLessEqual(np.ptp(np.bincount(bins)), 1)  # Equal-count bins.
        # A higher bin holds higher scores.
        self.assertLessEqual(scores[bins == 0].max(), scores[bins == 1].min())
        rest, held = splits.carve(encoded(scores), 0.1)
        self.assertEqual(len(held), 60)
        np.testing.assert_array_equal(np.bincount(splits.strata(scores)[names(held)]), [6] * 10)
        # Its score distribution follows train's: the deciles of the held-out scores are close.
        self.assertLess(abs(np.median(held.labels) - np.median(scores)), 0.25)
        self.assertLen(rest, 540)

    def test_too_small_is_an_error(self):
        with self.assertRaisesRegex(splits.SplitError, "validation_fraction=0.1: gives 0 of 3"):
            splits.carve(encoded([0, 1, 1]), 0.1)

    @parameterized.parameters(-0.1, 0.5, 0.9)
    def test_config_range(self, value):
        config = glue_config.get_config("task=rte,tiny")
        config.data.validation_fraction = value
        with self.assertRaisesRegex(validate.ConfigError, r"data.validation_fraction.*\[0, 0.5\)"):
            validate.check(config)

    def test_tiny_run_scores_only_validation(self):
        config = glue_config.get_config("task=rte,tiny")
        config.data.validation_fraction = 0.2
        config.num_train_steps = 2
        config.eval_every_steps = 0
        config.track_distances = False
        final = train.train_and_evaluate(config, self.create_tempdir().full_path)
        self.assertEqual(list(final["eval"]), ["validation"])
        self.assertBetween(final["eval"]["validation"]["accuracy"], 0.0, 1.0)

    def test_load_data_trains_on_the_rest_whatever_the_seed(self):
        tokenizer = tokenize.load_tokenizer(loading.resolve_model_dir("minilm"))
        config = glue_config.get_config("task=rte,tiny")
        config.data.max_train_examples = config.data.max_eval_examples = 0
        whole = train.load_data(config, tokenizer)
        config.data.validation_fraction = 0.1
        data = {}
        for seed in (0, 5):
            config.seed = seed
            data[seed] = train.load_data(config, tokenizer)
        self.assertEqual(list(data[0].evals), ["validation"])
        held, rest = data[0].evals["validation"], data[0].train
        self.assertEqual(len(held) + len(rest), len(whole.train))
        self.assertAlmostEqual(len(held) / len(whole.train), 0.1, delta=0.001)
        np.testing.assert_array_equal(held.labels, data[5].evals["validation"].labels)
        self.assertEqual([x.tolist() for x in held.input_ids],
                         [x.tolist() for x in data[5].evals["validation"].input_ids])
        # Held-out examples are not trained on.
        train_rows = {tuple(x.tolist()) for x in rest.input_ids}
        self.assertEqual(sum(tuple(x.tolist()) in train_rows for x in held.input_ids), 0)


if __name__ == "__main__":
    absltest.main()
