"""Every config file loads with `tiny`; the arg parser rejects what it does not know."""

import pathlib

from absl.testing import absltest, parameterized
from ml_collections import config_flags

from configs import common

CONFIG_FILES = sorted(
    p.name for p in (pathlib.Path(__file__).parent.parent / "configs").glob("*.py")
    if p.name not in ("__init__.py", "common.py")
)


class ConfigsTest(parameterized.TestCase):
    @parameterized.parameters(*[(n,) for n in CONFIG_FILES])
    def test_loads_tiny(self, name):
        path = pathlib.Path(__file__).parent.parent / "configs" / name
        module = config_flags.config_flags._LoadConfigModule(name, str(path))
        config = module.get_config("tiny")
        self.assertTrue(config.model.random_init.enabled)
        self.assertGreater(config.num_train_steps, 0)
        config.to_json()  # Plain data only.

    def test_parse_arg_types(self):
        args = common.parse_arg("task=cola,tiny,lr=0.5", task="rte", tiny=False, lr=1.0)
        self.assertEqual((args.task, args.tiny, args.lr), ("cola", True, 0.5))

    @parameterized.parameters(
        ("tsk=cola", "Unknown config argument 'tsk'"),
        ("lr=fast", "is not a float"),
        ("task", "needs a value"),
        ("tiny=maybe", "is not a boolean"),
    )
    def test_parse_arg_errors(self, arg, message):
        with self.assertRaisesRegex(ValueError, message):
            common.parse_arg(arg, task="rte", tiny=False, lr=1.0)


if __name__ == "__main__":
    absltest.main()
