"""Supermask training end to end on the tiny config: the pretrained weights never change, and the
exported bit masks rebuild a dense model with exactly the dev metrics measured in training."""

import functools
import pathlib

import jax
import numpy as np
from absl.testing import absltest

from fft import mask_store, sharding, steps, train
from fft.data import tokenize
from tests.train_test import tiny_config


def supermask_config(**overrides):
    return tiny_config("supermask", **{"supermask.score_lr": 1e-2, **overrides})


class SupermaskTrainTest(absltest.TestCase):
    def test_frozen_weights_stay_bit_identical(self):
        config = supermask_config()
        run, state, _ = train.setup(config, pathlib.Path(self.create_tempdir().full_path))
        before = jax.device_get(run.frozen)
        scores_before = jax.device_get(state.params["scores"])
        with jax.transfer_guard(config.transfer_guard):
            state, _ = train.train_loop(run, state, 0)
        after = jax.device_get(run.frozen)
        jax.tree.map(np.testing.assert_array_equal, before, after)
        changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), scores_before,
                               jax.device_get(state.params["scores"]))
        self.assertTrue(any(jax.tree.leaves(changed)))  # The scores did train.
        self.assertNotIn("encoder", state.params)  # Only scores and head are trainable state.

    def test_pooler_in_the_head_trains_and_round_trips(self):
        config = supermask_config(**{"supermask.head_keys": "pooler;classifier"})
        workdir = pathlib.Path(self.create_tempdir().full_path)
        run, state, _ = train.setup(config, workdir)
        self.assertEqual(sorted(state.params["head"]), ["classifier", "pooler"])
        self.assertNotIn("pooler", run.frozen)
        pooler_before = jax.device_get(state.params["head"]["pooler"])
        final = train.train_and_evaluate(config, workdir)
        task = mask_store.read_task(workdir / "task_mask")
        self.assertIn("pooler/dense/kernel", task.head)
        self.assertFalse(np.array_equal(task.head["pooler/dense/kernel"], pooler_before["dense"]["kernel"]))
        self.assertEqual(self._reevaluate(config, workdir), final["eval"]["dev"])

    def test_unknown_head_key_is_refused(self):
        config = supermask_config(**{"supermask.head_keys": "pooler;clasifier"})
        with self.assertRaisesRegex(ValueError, r"\['clasifier'\] are not top-level parameter subtrees"):
            train.setup(config, pathlib.Path(self.create_tempdir().full_path))

    def _reevaluate(self, config, workdir):
        bundle = train.load_model(config, 2)
        dense = mask_store.import_task(workdir / "task_mask", bundle.params)
        data = train.load_data(config, tokenize.load_tokenizer(bundle.tokenizer_dir))
        mesh = sharding.make_mesh(config.mesh)
        eval_step = jax.jit(functools.partial(steps.eval_step, model=bundle.model, is_regression=False))
        return train.evaluate(
            eval_step, jax.device_put(dense), {}, data.evals["dev"], batch_size=config.eval_batch_size,
            buckets=data.buckets, mesh=mesh, task=data.task,
        )

    def test_exported_masks_reproduce_dev_metrics_exactly(self):
        config = supermask_config()
        workdir = pathlib.Path(self.create_tempdir().full_path)
        final = train.train_and_evaluate(config, workdir)
        self.assertGreater(final["export"]["sparsity"]["total"], 0.0)
        self.assertLess(final["stored_bytes"], final["export"]["dense_bytes"])

        bundle = train.load_model(config, 2)
        dense = mask_store.import_task(workdir / "task_mask", bundle.params)
        data = train.load_data(config, tokenize.load_tokenizer(bundle.tokenizer_dir))
        mesh = sharding.make_mesh(config.mesh)
        eval_step = jax.jit(functools.partial(steps.eval_step, model=bundle.model, is_regression=False))
        metrics = train.evaluate(
            eval_step, jax.device_put(dense), {}, data.evals["dev"], batch_size=config.eval_batch_size,
            buckets=data.buckets, mesh=mesh, task=data.task,
        )
        self.assertEqual(metrics, final["eval"]["dev"])


if __name__ == "__main__":
    absltest.main()
