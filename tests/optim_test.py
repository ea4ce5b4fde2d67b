"""Tests for fft.optim: schedule shape, host-side learning rate, weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from configs import common
from fft import optim


class ScheduleTest(parameterized.TestCase):
    def test_warmup_then_linear_decay(self):
        schedule = optim.linear_warmup_decay(1.0, total_steps=100, warmup_steps=10)
        np.testing.assert_allclose(
            [float(schedule(s)) for s in (0, 5, 10, 55, 100)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6
        )

    @parameterized.parameters((100, 0.1), (37, 0.06), (5, 0.0))
    def test_host_learning_rate_matches_optax_schedule(self, total, warmup_fraction):
        config = common.optim_config(lr=3e-5)
        config.warmup_fraction = warmup_fraction
        schedule = optim.linear_warmup_decay(config.lr, total, round(warmup_fraction * total))
        for step in range(total + 1):
            self.assertAlmostEqual(
                optim.learning_rate(config, total, step), float(schedule(step)), delta=1e-10
            )

    def test_no_decay_on_biases_and_layer_norms(self):
        params = {
            "encoder": {
                "layer_0": {
                    "attention": {"query": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
                    "output": {"layer_norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)}},
                }
            },
            "embeddings": {"word_embeddings": {"embedding": jnp.ones((3, 2))}},
        }
        mask = optim.decay_mask(params)
        layer = mask["encoder"]["layer_0"]
        self.assertTrue(layer["attention"]["query"]["kernel"])
        self.assertFalse(layer["attention"]["query"]["bias"])
        self.assertFalse(layer["output"]["layer_norm"]["scale"])
        self.assertTrue(mask["embeddings"]["word_embeddings"]["embedding"])

    def test_adamw_decays_kernels_only(self):
        config = common.optim_config(lr=0.1)
        config.warmup_fraction = 0.0
        config.max_grad_norm = 0.0
        tx = optim.adamw(config, total_steps=10)
        params = {"dense": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}}
        zero = {"dense": {"kernel": jnp.zeros((2,)), "bias": jnp.zeros((2,))}}
        updates, _ = tx.update(zero, tx.init(params), params)
        # Zero gradient: only weight decay moves the kernel (-lr * wd * w); the bias stays.
        np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.01, rtol=1e-5)
        np.testing.assert_allclose(updates["dense"]["bias"], 0.0)


def _params_and_grads(seed):
    rng = np.random.default_rng(seed)
    params = {
        "layer": {"dense": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)},
                  "layer_norm": {"scale": rng.normal(size=3), "bias": rng.normal(size=3)}},
        "classifier": {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=2)},
    }
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
             for _ in range(6)]
    return params, grads


class FusedAdamWTest(parameterized.TestCase):
    def _run(self, tx, params, grads):
        state = tx.init(params)
        for g in grads:
            updates, state = jax.jit(tx.update)(g, state, params)
            params = optax.apply_updates(params, updates)
        return params

    @parameterized.parameters((0.01, True), (0.1, False), (0.0, True))
    def test_matches_optax_adamw(self, weight_decay, use_mask):
        params, grads = _params_and_grads(0)
        schedule = optim.linear_warmup_decay(1e-2, total_steps=6, warmup_steps=2)
        kwargs = {"b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": weight_decay,
                  "mask": optim.decay_mask if use_mask else None}
        ours = self._run(optim.fused_adamw(schedule, **kwargs), params, grads)
        ref = self._run(optax.adamw(schedule, **kwargs), params, grads)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7), ours, ref)
        moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), ours, params)
        self.assertGreater(min(jax.tree.leaves(moved)), 1e-4)  # Every leaf actually trained.

    def test_inside_a_partition_matches_optax(self):
        # optax.partition hands each inner transform a tree with MaskedNode holes.
        params, grads = _params_and_grads(1)
        labels = {"layer": jax.tree.map(lambda _: "body", params["layer"]),
                  "classifier": jax.tree.map(lambda _: "head", params["classifier"])}

        def make(adamw):
            return optax.partition({"body": adamw(1e-3, weight_decay=0.01, mask=optim.decay_mask),
                                    "head": adamw(1e-2, weight_decay=0.0)}, labels)

        ours = self._run(make(optim.fused_adamw), params, grads)
        ref = self._run(make(optax.adamw), params, grads)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7), ours, ref)

    def test_state_is_typed_and_counts_steps(self):
        params, grads = _params_and_grads(2)
        tx = optim.fused_adamw(1e-3)
        state = tx.init(params)
        self.assertIsInstance(state, optim.FusedAdamWState)
        _, state = tx.update(grads[0], state, params)
        self.assertEqual(int(state.count), 1)
        np.testing.assert_allclose(state.mu["classifier"]["bias"], 0.1 * grads[0]["classifier"]["bias"], rtol=1e-6)

    def test_weight_decay_needs_params(self):
        params, grads = _params_and_grads(3)
        tx = optim.fused_adamw(1e-3, weight_decay=0.01)
        with self.assertRaisesRegex(ValueError, "needs `params`"):
            tx.update(grads[0], tx.init(params))


if __name__ == "__main__":
    absltest.main()
