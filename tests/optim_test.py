"""Tests for fft.optim: schedule shape, host-side learning rate, weight-decay mask."""

import jax.numpy as jnp
import numpy as np
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


if __name__ == "__main__":
    absltest.main()
