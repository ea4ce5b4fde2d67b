"""Tests for fft.data.batching on small synthetic `Encoded` sets (no tokenizer needed)."""

import collections

import numpy as np
from absl.testing import absltest, parameterized

from fft.data import batching, tokenize

BUCKETS = (16, 24, 32, 48, 64)


def _encoded(n, *, seed=0, max_len=64, regression=False, pad_id=0):
    """n examples of random lengths 3..max_len; token i of example j is 1000 * j + i + 1."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, max_len + 1, size=n).astype(np.int32)
    ids = [(1000 * j + np.arange(1, k + 1)).astype(np.int32) for j, k in enumerate(lengths)]
    types = [(np.arange(k) >= k // 2).astype(np.int32) for k in lengths]
    labels = (
        rng.random(n).astype(np.float32) * 5
        if regression
        else rng.integers(0, 3, n, dtype=np.int32)
    )
    return tokenize.Encoded(ids, types, labels, lengths, pad_id)


def _epoch(enc, batch_size=8, seed=0, epoch=0, buckets=BUCKETS, **kw):
    return list(
        batching.train_batches(enc, batch_size, seed=seed, epoch=epoch, buckets=buckets, **kw)
    )


class BucketLengthsTest(parameterized.TestCase):
    @parameterized.parameters(
        (128, {}, (8, 12, 16, 24, 32, 48, 64, 96, 128)),
        (64, {}, (8, 12, 16, 24, 32, 48, 64)),
        (100, {}, (8, 12, 16, 24, 32, 48, 64, 96, 100)),
        (128, {"min_length": 16}, (16, 24, 32, 48, 64, 96, 128)),
        (128, {"step": 32}, (32, 64, 96, 128)),
        (100, {"step": 32}, (32, 64, 96, 100)),
        (8, {}, (8,)),
    )
    def test_values(self, max_length, kwargs, expected):
        self.assertEqual(batching.bucket_lengths(max_length, **kwargs), expected)

    def test_invalid(self):
        with self.assertRaises(ValueError):
            batching.bucket_lengths(0)


class TrainBatchesTest(parameterized.TestCase):
    @parameterized.parameters((1, 1), (8, 1), (8, 50), (7, 3), (64, 50), (300, 50))
    def test_every_example_once(self, batch_size, pool_batches):
        enc = _encoded(203)
        batches = _epoch(enc, batch_size, pool_batches=pool_batches)
        self.assertLen(batches, batching.num_train_batches(enc, batch_size))
        index = np.concatenate([b["index"] for b in batches])
        counts = collections.Counter(index.tolist())
        self.assertEqual(sorted(i for i in counts if i >= 0), list(range(203)))
        self.assertTrue(all(c == 1 for i, c in counts.items() if i >= 0))
        self.assertEqual(counts.get(-1, 0), len(batches) * batch_size - 203)

    def test_contents_and_contract(self):
        enc = _encoded(45, pad_id=7)
        for b in _epoch(enc, batch_size=8):
            self.assertEqual(
                set(b),
                {"input_ids", "attention_mask", "token_type_ids", "labels", "weights", "index"},
            )
            for key in ("input_ids", "attention_mask", "token_type_ids", "labels", "index"):
                self.assertEqual(b[key].dtype, np.int32, key)
            self.assertEqual(b["weights"].dtype, np.float32)
            batch, length = b["input_ids"].shape
            self.assertEqual(batch, 8)
            self.assertIn(length, BUCKETS)
            real = b["index"] >= 0
            longest = enc.lengths[b["index"][real]].max()
            self.assertEqual(length, min(x for x in BUCKETS if x >= longest))  # Smallest fit.
            np.testing.assert_array_equal(b["weights"], real.astype(np.float32))
            for row, i in enumerate(b["index"]):
                if i < 0:  # Padding row: pad tokens, weight 0, only position 0 unmasked.
                    self.assertTrue((b["input_ids"][row] == 7).all())
                    np.testing.assert_array_equal(b["attention_mask"][row], np.eye(1, length, 0)[0])
                    continue
                k = enc.lengths[i]
                np.testing.assert_array_equal(b["input_ids"][row, :k], enc.input_ids[i])
                self.assertTrue((b["input_ids"][row, k:] == 7).all())
                np.testing.assert_array_equal(b["token_type_ids"][row, :k], enc.token_type_ids[i])
                self.assertEqual(b["attention_mask"][row].sum(), k)
                self.assertEqual(b["attention_mask"][row, : int(k)].min(), 1)
                self.assertEqual(b["labels"][row], enc.labels[i])

    def test_regression_labels(self):
        enc = _encoded(10, regression=True)
        b = _epoch(enc, batch_size=4)[0]
        self.assertEqual(b["labels"].dtype, np.float32)
        real = b["index"] >= 0
        np.testing.assert_array_equal(b["labels"][real], enc.labels[b["index"][real]])

    def test_deterministic_and_varies(self):
        enc = _encoded(100)

        def order(**kw):
            return np.concatenate([b["index"] for b in _epoch(enc, **kw)]).tolist()

        self.assertEqual(order(seed=3, epoch=2), order(seed=3, epoch=2))
        self.assertNotEqual(order(seed=3, epoch=2), order(seed=3, epoch=1))
        self.assertNotEqual(order(seed=3, epoch=2), order(seed=4, epoch=2))

    def test_grouping_reduces_padding(self):
        enc = _encoded(400, max_len=64)
        grouped = batching.padding_fraction(_epoch(enc, batch_size=16, pool_batches=50))
        ungrouped = batching.padding_fraction(_epoch(enc, batch_size=16, pool_batches=1))
        self.assertLess(grouped, ungrouped)

    def test_errors(self):
        enc = _encoded(10, max_len=64)
        with self.assertRaisesRegex(ValueError, "more than the largest bucket"):
            batching.train_batches(enc, 4, seed=0, epoch=0, buckets=(16, 32))
        with self.assertRaisesRegex(ValueError, "batch_size"):
            batching.train_batches(enc, 0, seed=0, epoch=0, buckets=BUCKETS)
        with self.assertRaisesRegex(ValueError, "seed >= 0"):
            batching.train_batches(enc, 4, seed=-1, epoch=0, buckets=BUCKETS)

    def test_empty(self):
        enc = tokenize.Encoded([], [], np.zeros(0, np.int32), np.zeros(0, np.int32))
        self.assertEqual(_epoch(enc), [])
        self.assertEqual(batching.num_train_batches(enc, 8), 0)


class EvalBatchesTest(parameterized.TestCase):
    def test_sorted_and_restorable(self):
        enc = _encoded(37)
        batches = list(batching.eval_batches(enc, 8, buckets=BUCKETS))
        self.assertLen(batches, 5)
        index = np.concatenate([b["index"] for b in batches])
        real = index[index >= 0]
        self.assertTrue((np.diff(enc.lengths[real]) <= 0).all())  # Longest first.
        self.assertTrue((index[len(real) :] == -1).all())
        # A fake model that predicts each example's first token id; restore_order undoes sorting.
        preds = [b["input_ids"][:, 0] for b in batches]
        restored = batching.restore_order([b["index"] for b in batches], preds, len(enc))
        np.testing.assert_array_equal(restored, [ids[0] for ids in enc.input_ids])

    def test_restore_order_checks(self):
        with self.assertRaisesRegex(ValueError, "exactly once"):
            batching.restore_order([np.array([0, 0, -1])], [np.zeros(3)], 2)


class SubsampleTest(parameterized.TestCase):
    @parameterized.parameters((0.1, 10), (0.25, 25), (0.004, 1), (1.0, 100), (0.333, 33))
    def test_size(self, fraction, size):
        self.assertLen(batching.subsample(_encoded(100), fraction, seed=0), size)

    def test_deterministic_nested_and_seeded(self):
        enc = _encoded(100)

        def firsts(fraction, seed):
            return [int(x[0]) for x in batching.subsample(enc, fraction, seed).input_ids]

        self.assertEqual(firsts(0.3, 1), firsts(0.3, 1))
        self.assertNotEqual(firsts(0.3, 1), firsts(0.3, 2))
        self.assertTrue(set(firsts(0.1, 1)) <= set(firsts(0.5, 1)))
        self.assertEqual(firsts(0.3, 1), sorted(firsts(0.3, 1)))  # Original order kept.
        sub = batching.subsample(enc, 0.3, 1)
        i = int(sub.input_ids[0][0]) // 1000
        self.assertEqual(sub.labels[0], enc.labels[i])
        self.assertEqual(sub.lengths[0], enc.lengths[i])

    @parameterized.parameters(0.0, -0.1, 1.5)
    def test_bad_fraction(self, fraction):
        with self.assertRaisesRegex(ValueError, r"fraction must be in \(0, 1\]"):
            batching.subsample(_encoded(10), fraction, seed=0)


class PaddingStatsTest(absltest.TestCase):
    def test_padding_fraction_by_hand(self):
        ids = [np.arange(1, 4, dtype=np.int32), np.arange(1, 11, dtype=np.int32)]
        enc = tokenize.Encoded(
            ids, [np.zeros_like(x) for x in ids], np.zeros(2, np.int32), np.array([3, 10], np.int32)
        )
        # One batch of 4 rows x 16: 13 real tokens of 64 slots.
        self.assertAlmostEqual(
            batching.padding_fraction(_epoch(enc, batch_size=4, buckets=(16, 32))), 1 - 13 / 64
        )
        report = batching.padding_report(enc, 4, buckets=(16, 32))
        self.assertAlmostEqual(report["padding_fraction_max_length"], 1 - 13 / 128)
        self.assertAlmostEqual(report["token_ratio"], 0.5)


if __name__ == "__main__":
    absltest.main()
