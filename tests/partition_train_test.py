"""Partitioned training end to end on the tiny config: frozen means untouched, uncheckpointed and
not in the optimizer; the frozen-prefix feature cache trains the same model; task deltas."""

import pathlib

import jax
import numpy as np
from absl.testing import absltest

from fft import analyze, checkpoint, delta, distances, partition, train, tree_paths
from tests.train_test import tiny_config


def no_dropout(config):
    config.model.random_init.hidden_dropout = 0.0
    config.model.random_init.attention_dropout = 0.0
    return config


class PartitionTrainTest(absltest.TestCase):
    def test_bitfit_trains_only_biases_and_head(self):
        workdir = self.create_tempdir().full_path
        final = train.train_and_evaluate(tiny_config("bitfit"), workdir)
        initial, latest, _ = analyze.run_params(workdir)
        for path in initial:
            trains = path.endswith("/bias") or path.startswith("classifier/")
            changed = not np.array_equal(initial[path], latest[path])
            self.assertEqual(changed, trains, path)  # Frozen leaves are bit-identical.
        state, _ = checkpoint.load_state_dict(workdir)
        saved = tree_paths.leaf_paths(state["params"])
        self.assertTrue(saved)
        self.assertTrue(all(p.endswith("/bias") or p.startswith("classifier/") for p in saved), saved)
        # Adam moments exist for trainable leaves only (2 per leaf + counters).
        num_opt_arrays = len([x for x in jax.tree.leaves(state["opt_state"]) if np.ndim(x) > 0])
        self.assertEqual(num_opt_arrays, 2 * len(saved))
        self.assertEqual(final["trainable_params"], sum(np.size(initial[p]) for p in saved))
        self.assertLess(final["trainable_params"], final["total_params"] / 100)
        # The task delta holds exactly the trained leaves; merged back it is the fine-tuned model.
        trained, meta = delta.load_delta(pathlib.Path(workdir) / "task_delta.safetensors")
        self.assertEqual(meta["partition"], "bitfit")
        self.assertEqual(sorted(tree_paths.flatten(trained)), sorted(saved))
        merged = tree_paths.flatten(delta.apply_delta(tree_paths.unflatten(initial), trained))
        for path in initial:
            np.testing.assert_array_equal(merged[path], latest[path], err_msg=path)
        self.assertEqual(final["stored_bytes"], (pathlib.Path(workdir) / "task_delta.safetensors").stat().st_size)

    def test_feature_cache_trains_the_same_model(self):
        # Feature-cache runs train on length buckets (the cache has a row per example), so the plain
        # run does too: same batches, same model.
        overrides = {"layers.select": "top1", "num_train_steps": 4, "eval_every_steps": 4,
                     "data.packing": False}
        plain = train.train_and_evaluate(no_dropout(tiny_config("layers", **overrides)), self.create_tempdir().full_path)
        cached = train.train_and_evaluate(
            no_dropout(tiny_config("layers", **overrides, feature_cache=True)),
            self.create_tempdir().full_path,
        )
        self.assertTrue(cached["feature_cache"])
        np.testing.assert_allclose(cached["last_train_loss"], plain["last_train_loss"], rtol=1e-5)
        np.testing.assert_allclose(cached["eval"]["dev"]["loss"], plain["eval"]["dev"]["loss"], rtol=1e-5)

    def test_critical_ranks_layers_by_a_run_workdir(self):
        """critical:k takes a full run's workdir as its distances_file: the same ranking as the
        distances.json fft.analyze writes for that run."""
        full = self.create_tempdir().full_path
        train.train_and_evaluate(tiny_config(), full)
        report = analyze.write_report(*analyze.run_params(full)[:2], self.create_tempdir().full_path, distances.Tol(0.0, 0.0))
        from_run = partition.ranked_layers(full)
        self.assertEqual(sorted(from_run), [0, 1])
        self.assertEqual([f"layer_{i}" for i in from_run], report["critical_layers"][:2])
        final = train.train_and_evaluate(
            tiny_config("critical", **{"critical.k": 1, "critical.distances_file": full, "num_train_steps": 2}),
            self.create_tempdir().full_path,
        )
        self.assertIn("critical:1", final["method_description"])

    def test_feature_cache_needs_a_frozen_prefix(self):
        config = tiny_config(feature_cache=True)
        with self.assertRaisesRegex(ValueError, "feature_cache=True: needs frozen embeddings"):
            train.train_and_evaluate(config, self.create_tempdir().full_path)

    def test_custom_rules_and_bad_rules(self):
        rules = r"classifier/.*=head;encoder/layer_1/.*=train;.*=frozen"
        final = train.train_and_evaluate(
            tiny_config("rules", **{"rules.rules": rules, "num_train_steps": 2}), self.create_tempdir().full_path
        )
        self.assertEqual((final["method"], final["method_options"]["rules"]), ("rules", rules))
        with self.assertRaisesRegex(partition.PartitionError, "encoder/layer_9"):
            train.train_and_evaluate(
                tiny_config("rules", **{"rules.rules": r"classifier/.*=head;encoder/layer_9/.*=train;.*=frozen"}),
                self.create_tempdir().full_path,
            )
        with self.assertRaisesRegex(partition.PartitionError, "regex=label"):
            train.train_and_evaluate(
                tiny_config("rules", **{"rules.rules": "classifier/.*"}), self.create_tempdir().full_path
            )


if __name__ == "__main__":
    absltest.main()
