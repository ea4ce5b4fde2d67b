"""Hashed dropout masks: rate, scaling, independence, determinism, gradients."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from fft.models import dropout


class HashedBitsTest(parameterized.TestCase):
    def test_same_key_same_bits_and_other_key_other_bits(self):
        key = jax.random.key(3)
        a = np.asarray(dropout.hashed_bits(key, (64, 128)))
        np.testing.assert_array_equal(a, dropout.hashed_bits(key, (64, 128)))
        b = np.asarray(dropout.hashed_bits(jax.random.fold_in(key, 1), (64, 128)))
        self.assertLess(np.mean(a == b), 1e-3)

    @parameterized.parameters("threefry2x32", "rbg", "unsafe_rbg")
    def test_bits_are_uniform(self, impl):
        bits = np.asarray(dropout.hashed_bits(jax.random.key(0, impl=impl), (1 << 18,)))
        # Each of the 32 bit positions is set half the time (binomial sd 0.001 at 2**18 draws).
        ones = (bits[:, None] >> np.arange(32, dtype=np.uint32)) & 1
        np.testing.assert_allclose(ones.mean(axis=0), 0.5, atol=0.006)
        # The top byte is uniform over 256 values: chi-square with 255 dof stays far below 400.
        counts = np.bincount(bits >> 24, minlength=256)
        expected = len(bits) / 256
        self.assertLess(np.sum((counts - expected) ** 2 / expected), 400)

    def test_neighbours_are_uncorrelated(self):
        u = np.asarray(dropout.hashed_bits(jax.random.key(1), (1 << 18,)), np.float64) / 2**32
        for lag in (1, 2, 64, 384):
            r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
            self.assertLess(abs(r), 0.01, f"lag {lag}")

    def test_keys_one_apart_are_uncorrelated(self):
        keys = [jax.random.fold_in(jax.random.key(0), i) for i in range(2)]
        u, v = (np.asarray(dropout.hashed_bits(k, (1 << 16,)), np.float64) / 2**32 for k in keys)
        self.assertLess(abs(np.corrcoef(u, v)[0, 1]), 0.02)

    def test_raw_uint32_keys_work_and_short_keys_fail(self):
        raw = jax.random.key_data(jax.random.key(0))
        np.testing.assert_array_equal(
            dropout.hashed_bits(raw, (8,)), dropout.hashed_bits(jax.random.key(0), (8,))
        )
        with self.assertRaisesRegex(ValueError, "at least 2 uint32 words"):
            dropout.hashed_bits(jnp.zeros((1,), jnp.uint32), (8,))


class DropoutTest(parameterized.TestCase):
    @parameterized.parameters(0.1, 0.5, 0.9)
    def test_rate_and_scaling(self, rate):
        x = jnp.ones((256, 1024))
        y = np.asarray(dropout.dropout(x, rate, jax.random.key(7)))
        kept = y != 0
        sd = np.sqrt(rate * (1 - rate) / y.size)
        self.assertLess(abs(kept.mean() - (1 - rate)), 5 * sd)
        np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)

    def test_rate_zero_and_one(self):
        x = jnp.arange(12.0).reshape(3, 4)
        np.testing.assert_array_equal(dropout.dropout(x, 0.0, jax.random.key(0)), x)
        np.testing.assert_array_equal(dropout.dropout(x, 1.0, jax.random.key(0)), 0.0)
        with self.assertRaisesRegex(ValueError, "dropout rate must be in"):
            dropout.dropout(x, 1.5, jax.random.key(0))

    def test_gradient_is_the_scaled_mask(self):
        key = jax.random.key(2)
        x = jnp.linspace(-1.0, 1.0, 4096).reshape(64, 64)
        grad = jax.grad(lambda x: jnp.sum(dropout.dropout(x, 0.25, key)))(x)
        mask = np.asarray(dropout.keep_mask(key, x.shape, 0.75))
        np.testing.assert_allclose(grad, mask / 0.75, rtol=1e-6)

    def test_jit_gives_the_same_mask(self):
        key = jax.random.key(5)
        x = jnp.ones((33, 17))
        np.testing.assert_array_equal(
            jax.jit(dropout.dropout, static_argnums=1)(x, 0.3, key), dropout.dropout(x, 0.3, key)
        )

    def test_module_matches_function_and_is_identity_when_deterministic(self):
        layer = dropout.Dropout(0.2)
        x = jnp.ones((8, 16))
        key = jax.random.key(4)
        np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
        y = layer.apply({}, x, deterministic=False, rngs={"dropout": key})
        np.testing.assert_array_equal(y, layer.apply({}, x, deterministic=False, rngs={"dropout": key}))
        other = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(9)})
        self.assertFalse(np.array_equal(y, other))
        with self.assertRaises(flax.errors.InvalidRngError):  # No 'dropout' key given.
            layer.apply({}, x, deterministic=False)
        kept = np.asarray(y) != 0
        self.assertTrue(0.6 < kept.mean() < 0.95)
        np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.8, rtol=1e-6)


if __name__ == "__main__":
    absltest.main()
