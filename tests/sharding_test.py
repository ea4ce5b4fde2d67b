"""Mesh construction and rule-based parameter shardings (8 fake CPU devices, see conftest)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest, parameterized
from jax.sharding import PartitionSpec as P

from configs import common
from fft import sharding


class MeshTest(parameterized.TestCase):
    def test_eight_devices_available(self):
        self.assertEqual(jax.device_count(), 8)

    @parameterized.parameters(((-1, 1), (8, 1)), ((4, 2), (4, 2)), ((2, -1), (2, 4)))
    def test_shapes(self, shape, expected):
        config = common.mesh_config()
        config.shape = shape
        mesh = sharding.make_mesh(config)
        self.assertEqual(tuple(mesh.shape.values()), expected)

    @parameterized.parameters(((16, 1), "needs 16 devices"), ((-1, 3), "does not divide"), ((-1, -1), "more than one"))
    def test_bad_shapes(self, shape, message):
        config = common.mesh_config()
        config.shape = shape
        with self.assertRaisesRegex(ValueError, message):
            sharding.make_mesh(config)

    def test_smaller_mesh_takes_first_devices(self):
        config = common.mesh_config()
        config.shape = (1, 1)
        mesh = sharding.make_mesh(config)
        self.assertEqual(list(mesh.devices.flat), jax.devices()[:1])

    def test_param_rules(self):
        config = ml_collections.ConfigDict({"shape": (4, 2), "axes": ("data", "model")})
        mesh = sharding.make_mesh(config)
        params = {"layer": {"intermediate": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)}}}
        shardings = sharding.param_shardings(params, mesh, ((".*/intermediate/kernel", (None, "model")),))
        self.assertEqual(shardings["layer"]["intermediate"]["kernel"].spec, P(None, "model"))
        self.assertEqual(shardings["layer"]["intermediate"]["bias"].spec, P())
        placed = jax.device_put(params, shardings)
        self.assertEqual(placed["layer"]["intermediate"]["kernel"].addressable_shards[0].data.shape, (4, 4))

    def test_global_batch_split_over_data(self):
        mesh = sharding.make_mesh(common.mesh_config())
        batch = {"x": np.arange(16, dtype=np.int32).reshape(8, 2)}
        placed = sharding.global_batch_to_device(batch, mesh)
        np.testing.assert_array_equal(jax.device_get(placed["x"]), batch["x"])
        self.assertEqual(placed["x"].addressable_shards[0].data.shape, (1, 2))


if __name__ == "__main__":
    absltest.main()
