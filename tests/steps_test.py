"""Train/eval steps on a toy model with the classifier call signature."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from fft import steps


class ToyClassifier(nn.Module):
    """Mean of token embeddings -> dense; same call signature as fft's classifiers."""

    num_labels: int

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids, *, deterministic):
        x = nn.Embed(50, 8, name="embed")(input_ids)
        mask = attention_mask[..., None].astype(jnp.float32)
        x = (x * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
        x = nn.Dropout(0.5, deterministic=deterministic)(x)
        return nn.Dense(self.num_labels, name="classifier")(x)


def make_batch(n=8, length=6, regression=False, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1, 50, (n, length)).astype(np.int32),
        "attention_mask": np.ones((n, length), np.int32),
        "token_type_ids": np.zeros((n, length), np.int32),
        "labels": rng.normal(size=n).astype(np.float32) if regression else rng.integers(0, 2, n).astype(np.int32),
        "weights": np.ones(n, np.float32),
    }


class StepsTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.model = ToyClassifier(num_labels=2)
        batch = make_batch()
        self.params = self.model.init(
            jax.random.key(0), batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], deterministic=True
        )["params"]

    def test_merge_trees(self):
        merged = steps.merge_trees({"a": {"x": 1}}, {"a": {"y": 2}, "b": 3})
        self.assertEqual(merged, {"a": {"x": 1, "y": 2}, "b": 3})
        with self.assertRaisesRegex(ValueError, "both trainable and frozen"):
            steps.merge_trees({"a": {"x": 1}}, {"a": {"x": 2}})

    def test_losses_match_hand_computation(self):
        logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
        ce = steps.example_losses(logits, jnp.array([0, 1]), is_regression=False)
        np.testing.assert_allclose(ce, [np.log1p(np.exp(-2.0)), np.log(2.0)], rtol=1e-6)
        se = steps.example_losses(jnp.array([[1.5], [0.0]]), jnp.array([1.0, 2.0]), is_regression=True)
        np.testing.assert_allclose(se, [0.25, 4.0])
        np.testing.assert_allclose(steps.weighted_mean(jnp.array([1.0, 3.0]), jnp.array([1.0, 0.0])), 1.0)

    def test_padding_rows_do_not_change_loss_or_gradient(self):
        tx = optax.sgd(0.1)
        step = jax.jit(functools.partial(steps.train_step, model=self.model, tx=tx, is_regression=False))
        batch = make_batch(n=4)
        padded = {k: np.concatenate([v, v[:2] * 0]) for k, v in batch.items()}
        state = steps.TrainState(jnp.zeros((), jnp.int32), self.params, tx.init(self.params))
        s1, m1 = step(state, {}, batch, jax.random.key(1))
        _s2, m2 = step(state, {}, padded, jax.random.key(1))
        self.assertEqual(int(s1.step), 1)
        # Dropout masks depend on the batch shape, so compare the eval losses instead.
        ev = jax.jit(functools.partial(steps.eval_step, model=self.model, is_regression=False))
        o1, o2 = ev(self.params, {}, batch), ev(self.params, {}, padded)
        np.testing.assert_allclose(o1["loss_sum"], o2["loss_sum"], rtol=1e-6)
        self.assertEqual(float(o2["weight_sum"]), 4.0)
        self.assertTrue(np.isfinite(float(m1["train/loss"])) and np.isfinite(float(m2["train/loss"])))

    def test_frozen_tree_gets_no_update_and_trainable_does(self):
        tx = optax.adam(1e-2)
        trainable = {"classifier": self.params["classifier"]}
        frozen = {"embed": self.params["embed"]}
        state = steps.TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
        step = jax.jit(functools.partial(steps.train_step, model=self.model, tx=tx, is_regression=False))
        new_state, _ = step(state, frozen, make_batch(), jax.random.key(0))
        self.assertEqual(set(new_state.params), {"classifier"})
        self.assertFalse(np.allclose(new_state.params["classifier"]["kernel"], trainable["classifier"]["kernel"]))

    def test_training_reduces_loss(self):
        tx = optax.adam(5e-2)
        state = steps.TrainState(jnp.zeros((), jnp.int32), self.params, tx.init(self.params))
        step = jax.jit(functools.partial(steps.train_step, model=self.model, tx=tx, is_regression=False))
        batch = make_batch(n=16)
        ev = jax.jit(functools.partial(steps.eval_step, model=self.model, is_regression=False))
        before = float(ev(state.params, {}, batch)["loss_sum"])
        for _ in range(30):
            state, _ = step(state, {}, batch, jax.random.key(0))
        self.assertLess(float(ev(state.params, {}, batch)["loss_sum"]), 0.5 * before)

    def test_regression_predictions_are_scores(self):
        model = ToyClassifier(num_labels=1)
        batch = make_batch(regression=True)
        params = model.init(jax.random.key(0), batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], deterministic=True)["params"]
        out = jax.jit(functools.partial(steps.eval_step, model=model, is_regression=True))(params, {}, batch)
        self.assertEqual(out["predictions"].dtype, jnp.float32)
        self.assertEqual(out["predictions"].shape, (8,))


if __name__ == "__main__":
    absltest.main()
