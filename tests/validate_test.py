"""Bad config values fail before any work with one line naming the field; the workdir stays empty."""

import math
import pathlib

from absl.testing import absltest, parameterized

from fft import train, validate
from tests.train_test import tiny_config


class ValidateTest(parameterized.TestCase):
    @parameterized.parameters(
        ({"batch_size": 0}, r"config.batch_size=0: must be an integer >= 1"),
        ({"eval_batch_size": -4}, r"config.eval_batch_size=-4: must be an integer >= 1"),
        ({"log_every_steps": 0}, r"config.log_every_steps=0: must be an integer >= 1"),
        ({"checkpoint.every_steps": 0}, r"config.checkpoint.every_steps=0: must be an integer >= 1"),
        ({"checkpoint.max_to_keep": 0}, r"config.checkpoint.max_to_keep=0"),
        ({"data.max_length": 0}, r"config.data.max_length=0"),
        ({"data.train_fraction": 1.5}, r"config.data.train_fraction=1.5: must be in \(0, 1\]"),
        ({"data.train_fraction": 0.0}, r"config.data.train_fraction=0.0: must be in \(0, 1\]"),
        ({"optim.lr": math.nan}, r"config.optim.lr=nan: must be in \(0, inf\)"),
        ({"optim.lr": -1e-3}, r"config.optim.lr=-0.001"),
        ({"optim.warmup_fraction": 1.0}, r"config.optim.warmup_fraction=1.0: must be in \[0, 1\)"),
        ({"optim.max_grad_norm": -1.0}, r"config.optim.max_grad_norm=-1.0"),
        ({"num_train_steps": 0, "num_epochs": 0.0}, r"config.num_epochs=0.0 and config.num_train_steps=0: nothing to train"),
        ({"num_train_steps": -2}, r"config.num_train_steps=-2: must be an integer >= 0"),
        ({"model.dtype": "float33"}, r"config.model.dtype='float33': valid: float32, bfloat16, float16"),
        ({"model.pooling": "max"}, r"config.model.pooling='max': valid: cls, mean, auto"),
    )
    def test_bad_field_is_named_and_nothing_is_written(self, overrides, message):
        workdir = pathlib.Path(self.create_tempdir().full_path) / "run"
        with self.assertRaisesRegex(validate.ConfigError, message):
            train.train_and_evaluate(tiny_config(**overrides), workdir)
        self.assertEqual(list(workdir.iterdir()) if workdir.exists() else [], [])

    def test_poolings_match_the_models(self):
        from fft import models

        self.assertEqual(validate.POOLINGS, models.POOLINGS)

    def test_default_configs_pass(self):
        for method in ("full", "lora", "adapters", "supermask"):
            validate.check(tiny_config(method))


if __name__ == "__main__":
    absltest.main()
