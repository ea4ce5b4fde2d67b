"""Tests for fft.data.packing and packed rows in the models: several examples per row must train
and predict exactly as the same examples one per row."""

import collections
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from fft import models, steps
from fft.data import batching, packing
from fft.models import loading
from tests import packed_reference

_FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
_TINY_DIRS = {"bert": _FIXTURES / "tiny_bert_cls", "distilbert": _FIXTURES / "tiny_distilbert"}


_encoded = packed_reference.encoded  # Random examples (shared with tests/pooling_test.py).


class FirstFitDecreasingTest(parameterized.TestCase):
    def test_known_packing(self):
        rows = packing.first_fit_decreasing([5, 9, 3, 7, 2], length=10, slots=4)
        self.assertEqual(rows, [[1], [3, 2], [0, 4]])  # 9 | 7+3 | 5+2

    def test_slots_cap(self):
        rows = packing.first_fit_decreasing([1] * 7, length=100, slots=3)
        self.assertEqual([len(r) for r in rows], [3, 3, 1])

    @parameterized.parameters((16, 4), (40, 8), (64, 32))
    def test_every_item_once_and_rows_fit(self, length, slots):
        lengths = np.random.default_rng(length).integers(1, 17, size=50)
        rows = packing.first_fit_decreasing(lengths, length, slots)
        self.assertEqual(sorted(i for r in rows for i in r), list(range(50)))
        for r in rows:
            self.assertLessEqual(sum(lengths[i] for i in r), length)
            self.assertLessEqual(len(r), slots)

    def test_too_long_item(self):
        with self.assertRaisesRegex(ValueError, "11 tokens, more than the packed row length 10"):
            packing.first_fit_decreasing([3, 11], length=10, slots=4)


class PlanTest(parameterized.TestCase):
    def test_auto_length_holds_longest_and_four_means(self):
        enc = _encoded(300, max_len=40)  # mean ~21.5 -> 4 means ~86 -> bucket 96.
        shape = packing.plan(enc, 16, seed=0, epochs=1, max_length=128)
        self.assertEqual(shape.length, 96)
        six = _encoded(50, min_len=6, max_len=6)  # 4 means = 24, a bucket length.
        self.assertEqual(packing.plan(six, 16, seed=0, epochs=1).length, 24)
        long = _encoded(50, min_len=3, max_len=100)  # The longest example decides: 96 < 100.
        self.assertGreaterEqual(packing.plan(long, 16, seed=0, epochs=1, max_length=128).length, 100)

    @parameterized.parameters(1, 2, 8)
    def test_rows_are_multiples(self, multiple):
        shape = packing.plan(_encoded(300), 16, seed=0, epochs=2, length=64, row_multiple=multiple)
        self.assertTrue(all(r % multiple == 0 for r in shape.rows))
        self.assertLessEqual(len(shape.rows), 2)

    def test_every_step_fits_a_planned_shape(self):
        enc = _encoded(500)
        shape = packing.plan(enc, 32, seed=3, epochs=3, length=64, row_multiple=2)
        for epoch in range(3):
            for b in packing.train_batches(enc, 32, seed=3, epoch=epoch, shape=shape, row_multiple=2):
                self.assertIn(b["input_ids"].shape[0], shape.rows)

    def test_balancing_fits_steps_into_the_first_row_count(self):
        enc = _encoded(640, max_len=60, skewed=True)
        shape = packing.plan(enc, 32, seed=0, epochs=1, length=64)
        shuffled = packing._epoch_batches(len(enc), 32, 0, 0)
        before = [len(packing.first_fit_decreasing(enc.lengths[b], 64, shape.slots)) for b in shuffled]
        self.assertGreater(sum(r > shape.rows[0] for r in before), 0)  # Balancing has work to do.
        steps = packing.epoch_steps(enc, 32, seed=0, epoch=0, shape=shape)
        after = [len(rows) for _, rows in steps]
        self.assertEqual(sum(r > shape.rows[0] for r in after), 0)
        self.assertEqual(shape.rows, (shape.rows[0],))  # So one batch shape for the run.
        # Same step sizes, and the epoch is still a permutation of the examples.
        self.assertEqual([len(idx) for idx, _ in steps], [len(b) for b in shuffled])
        np.testing.assert_array_equal(np.sort(np.concatenate([idx for idx, _ in steps])), np.arange(640))

    def test_pack_length_shorter_than_an_example(self):
        with self.assertRaisesRegex(ValueError, r"pack_length=32 is shorter than the longest .*40 tokens"):
            packing.plan(_encoded(100, max_len=40, min_len=40), 8, seed=0, epochs=1, length=32)

    def test_empty(self):
        with self.assertRaisesRegex(ValueError, "empty"):
            packing.plan(_encoded(0), 8, seed=0, epochs=1)


class TrainBatchesTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.enc = _encoded(203)
        self.shape = packing.plan(self.enc, 16, seed=0, epochs=1, length=64)

    def _epoch(self, seed=0, epoch=0):
        return list(packing.train_batches(self.enc, 16, seed=seed, epoch=epoch, shape=self.shape))

    def test_every_example_once_and_batch_size_per_step(self):
        batches = self._epoch()
        self.assertLen(batches, batching.num_train_batches(self.enc, 16))
        index = np.concatenate([b["index"] for b in batches])
        counts = collections.Counter(index[index >= 0].tolist())
        self.assertEqual(sorted(counts), list(range(203)))
        self.assertEqual(set(counts.values()), {1})
        real = [int(b["weights"].sum()) for b in batches]
        self.assertEqual(real, [16] * 12 + [11])

    def test_rows_hold_the_examples(self):
        for b in self._epoch():
            rows, length = b["input_ids"].shape
            self.assertEqual(length, 64)
            slots = self.shape.slots
            self.assertEqual(b["cls_positions"].shape, (rows, slots))
            self.assertEqual(b["labels"].shape, (rows * slots,))
            for flat in np.flatnonzero(b["index"] >= 0):
                r, s = divmod(flat, slots)
                i = b["index"][flat]
                k = self.enc.lengths[i]
                start = b["cls_positions"][r, s]
                np.testing.assert_array_equal(b["input_ids"][r, start : start + k], self.enc.input_ids[i])
                np.testing.assert_array_equal(b["token_type_ids"][r, start : start + k], self.enc.token_type_ids[i])
                np.testing.assert_array_equal(b["position_ids"][r, start : start + k], np.arange(k))
                np.testing.assert_array_equal(b["segment_ids"][r, start : start + k], s + 1)
                self.assertEqual(b["labels"][flat], self.enc.labels[i])
            # Every real token belongs to exactly one example; the rest is padding (segment 0).
            self.assertEqual(int((b["segment_ids"] > 0).sum()), int(self.enc.lengths[b["index"][b["index"] >= 0]].sum()))
            self.assertTrue(np.all(b["input_ids"][b["segment_ids"] == 0] == 0))
            np.testing.assert_array_equal(b["weights"] > 0, b["index"] >= 0)

    def test_deterministic_in_seed_and_epoch(self):
        a, b = self._epoch(), self._epoch()
        for x, y in zip(a, b, strict=True):
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])
        other = np.concatenate([b["index"] for b in self._epoch(epoch=1)])
        self.assertFalse(np.array_equal(np.concatenate([b["index"] for b in a]), other))

    def test_fewer_token_positions_than_one_example_per_row(self):
        packed, real = packing.token_slots(self._epoch())
        padded, real_b = packing.token_slots(
            batching.train_batches(self.enc, 16, seed=0, epoch=0, buckets=(64,))
        )
        self.assertEqual(real, real_b)
        self.assertLess(packed, 0.75 * padded)

    def test_epoch_padding_counts_what_the_batches_hold(self):
        positions, real = packing.epoch_padding(self.enc, 16, seed=0, epoch=0, shape=self.shape)
        self.assertEqual((positions, real), packing.token_slots(self._epoch()))

    def test_example_longer_than_rows(self):
        with self.assertRaisesRegex(ValueError, "more than the packed row length 16"):
            list(packing.train_batches(self.enc, 8, seed=0, epoch=0, shape=packing.PackShape(16, 4, (4,))))


class PackedModelTest(parameterized.TestCase):
    """Packed rows give each example the logits, loss and gradient it gets alone in a row."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pretrained = {t: loading.load_pretrained(d) for t, d in _TINY_DIRS.items()}

    def _setup(self, model_type, num_labels=3):
        pretrained = self.pretrained[model_type]
        model = models.create_model(model_type, pretrained.model_config, num_labels, jnp.float32)
        params = loading.init_params(model, jax.random.key(0), pretrained.params)
        vocab = pretrained.model_config.vocab_size
        enc = _encoded(24, max_len=30, vocab=vocab, regression=num_labels == 1)
        packed, rows = packed_reference.packed_and_rows(enc)
        return model, params, packed, rows

    @parameterized.named_parameters(("bert", "bert"), ("distilbert", "distilbert"))
    def test_logits_match_one_example_per_row(self, model_type):
        model, params, packed, rows = self._setup(model_type)
        self.assertLess(packed["input_ids"].shape[0], 12)  # Really packed.
        out = packed_reference.assert_logits_match(model, params, packed, rows)
        self.assertEqual(out.shape, (packed["labels"].shape[0], 3))

    @parameterized.named_parameters(("classification", 3), ("regression", 1))
    def test_loss_and_gradient_match(self, num_labels):
        model, params, packed, rows = self._setup("bert", num_labels)
        packed_reference.assert_gradients_match(model, params, packed, rows, regression=num_labels == 1)

    def test_attention_mask_argument_is_rejected(self):
        model, params, packed, _ = self._setup("bert")
        pack = models.bert.Packing(packed["segment_ids"], packed["position_ids"], packed["cls_positions"])
        with self.assertRaisesRegex(ValueError, "segment_ids; pass None"):
            model.apply({"params": params}, packed["input_ids"], np.ones_like(packed["input_ids"]),
                        packed["token_type_ids"], deterministic=True, packing=pack)

    def test_train_step_with_dropout(self):
        model, params, packed, _ = self._setup("bert")
        import optax

        tx = optax.adamw(1e-3)
        state = steps.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
        batch = {k: v for k, v in packed.items() if k != "index"}
        step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, is_regression=False))
        new_state, metrics = step(state, {}, batch, jax.random.key(1))
        self.assertTrue(np.isfinite(float(metrics["train/loss"])))
        self.assertEqual(int(new_state.step), 1)


if __name__ == "__main__":
    absltest.main()
