"""Tests for two-phase runs (fft.priming) with the learners method on the tiny random-init model:
the split of the run, the nodes priming picks, where phase 2 starts, resuming in either phase,
and bad priming options."""

import json
import pathlib
import tempfile

import jax
import numpy as np
from absl.testing import absltest

from fft import budget, checkpoint, methods, priming, train, tree_paths
from fft.methods import learners
from tests.train_test import tiny_config

STEPS = 10


def primed_config(**overrides):
    fields = {"num_train_steps": STEPS, "learners.priming": 0.3, "learners.select": "movement",
              "eval_every_steps": 100, "checkpoint.every_steps": 2, "log_every_steps": 100}
    fields.update(overrides)
    return tiny_config("learners", **fields)


def final_params(workdir):
    state, step = checkpoint.load_state_dict(workdir)
    return tree_paths.flatten(jax.device_get(state["params"])), step


class PrimingRunTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = pathlib.Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())) / "primed_run"
        cls.final = train.train_and_evaluate(primed_config(), cls.workdir)

    def test_the_run_is_split_between_the_phases(self):
        first = json.loads((self.workdir / priming.PHASE_DIR / "final_metrics.json").read_text())
        self.assertEqual(first["method"], "full")
        self.assertEqual(train.load_run_config(self.workdir / priming.PHASE_DIR).optim.lr, 5e-5)
        self.assertEqual(first["steps"], 3)  # round(0.3 * 10)
        self.assertEqual(self.final["steps"], STEPS - 3)
        self.assertEqual(self.final["priming"]["steps"], 3)
        self.assertAlmostEqual(self.final["train_seconds_total"],
                               self.final["train_seconds"] + first["train_seconds"])
        second = train.load_run_config(self.workdir)
        self.assertEqual(second.data.skip_steps, 3)
        self.assertEqual(second.init_trainable_from, str(self.workdir / priming.PHASE_DIR))

    def test_nodes_are_those_that_moved_most_in_priming(self):
        first = self.workdir / priming.PHASE_DIR
        params, _ = final_params(first)
        step0, primed = train.task_params(train.load_run_config(first), tree_paths.unflatten(params))
        expected = learners.choose_nodes(learners.node_scores(primed, "movement", reference=step0), 0.1)
        written = learners.read_nodes_file(self.workdir / learners.NODES_FILE)
        self.assertEqual(sorted(written), sorted(expected))
        for layer in expected:
            np.testing.assert_array_equal(written[layer], expected[layer])

    def test_phase_two_starts_from_primed_learners_over_pretrained_frozen_weights(self):
        config = train.load_run_config(self.workdir)
        bundle = train.load_model(config, 2)
        method = methods.create(config, bundle.model)
        fresh, frozen = method.init(bundle.params, train.method_key(config))
        start = train.trainable_from_run(config, method, config.init_trainable_from, jax.device_get(fresh))
        first = self.workdir / priming.PHASE_DIR
        params, _ = final_params(first)
        _, primed = train.task_params(train.load_run_config(first), tree_paths.unflatten(params))
        nodes = learners.read_nodes_file(self.workdir / learners.NODES_FILE)
        sliced = tree_paths.flatten(learners.split_nodes(primed, nodes))
        for path, value in tree_paths.flatten(start).items():
            np.testing.assert_array_equal(value, sliced[path])  # The primed values of what trains.
        # The frozen weights are the step-0 ones (not phase 1's), bit for bit, also after training.
        step0 = tree_paths.flatten(learners.split_nodes(bundle.params, nodes))
        trained, _ = final_params(self.workdir)
        _, merged = train.task_params(config, tree_paths.unflatten(trained))
        merged = tree_paths.flatten(learners.split_nodes(merged, nodes))
        for path, value in tree_paths.flatten(jax.device_get(frozen)).items():
            np.testing.assert_array_equal(value, step0[path])
            np.testing.assert_array_equal(merged[path], step0[path])

    def test_phase_two_data_continue_after_phase_one(self):
        config = train.load_run_config(self.workdir)
        data = train.load_data(config, train.tokenize.load_tokenizer(train.load_model(config, 2).tokenizer_dir))
        spe = train.batching.num_train_batches(data.train, config.batch_size)
        plain = [b["input_ids"] for _, b in train._batches_from(data, tiny_config(), spe, 0, 3 + 4)]
        skipped = [b["input_ids"] for _, b in train._batches_from(data, config, spe, 0, 4)]
        for a, b in zip(plain[3:], skipped):
            np.testing.assert_array_equal(a, b)

    def test_restarting_a_finished_primed_run_trains_nothing(self):
        again = train.train_and_evaluate(primed_config(), self.workdir)
        self.assertEqual(again["eval"], self.final["eval"])
        self.assertEqual(again["steps"], self.final["steps"])

    def test_killed_in_either_phase_resumes_to_the_same_bits(self):
        reference, _ = final_params(self.workdir)
        original = train._save_train_time
        for phase_dir, at_step in ((priming.PHASE_DIR, 2), ("", 4)):
            workdir = pathlib.Path(self.create_tempdir().full_path)
            target = (workdir / phase_dir) if phase_dir else workdir

            def interrupt(workdir_, step, seconds, examples, target=target, at_step=at_step):
                original(workdir_, step, seconds, examples)
                if pathlib.Path(workdir_) == target and step == at_step:
                    raise KeyboardInterrupt

            with (absltest.mock.patch.object(train, "_save_train_time", interrupt),
                  self.assertRaises(KeyboardInterrupt)):
                train.train_and_evaluate(primed_config(), workdir)
            final = train.train_and_evaluate(primed_config(), workdir)
            resumed, _ = final_params(workdir)
            self.assertEqual(sorted(resumed), sorted(reference))
            for path in reference:
                np.testing.assert_array_equal(resumed[path], reference[path], err_msg=f"{phase_dir or 'phase 2'} {path}")
            self.assertEqual(final["eval"], self.final["eval"])
            self.assertEqual(final["last_train_loss"], self.final["last_train_loss"])


class PrimingConfigTest(absltest.TestCase):
    def test_epochs_and_budgets_are_split(self):
        config = tiny_config("learners", **{"num_train_steps": 0, "num_epochs": 2.0, "learners.priming": 0.25})
        plan = methods.priming(config)
        self.assertEqual(priming.phase_one_config(config, plan).num_epochs, 0.5)
        second = priming.phase_two_config(config, config, plan, {"steps": 4, "train_seconds": 1.0},
                                          pathlib.Path("/w"))
        self.assertEqual((second.num_epochs, second.data.skip_steps), (1.5, 4))
        config.time_budget_s = 10.0
        self.assertEqual(priming.phase_one_config(config, plan).time_budget_s, 2.5)
        second = priming.phase_two_config(config, config, plan, {"steps": 4, "train_seconds": 2.6},
                                          pathlib.Path("/w"))
        self.assertAlmostEqual(second.time_budget_s, 7.4)
        with self.assertRaisesRegex(priming.PrimingError, "priming spent 11 s of it"):
            priming.phase_two_config(config, config, plan, {"steps": 4, "train_seconds": 11.0}, pathlib.Path("/w"))

    def test_budgeted_primed_run(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        config = tiny_config("learners", **{"num_train_steps": 0, "learners.priming": 0.3, "log_every_steps": 100})
        config.time_budget_s, config.time_budget_step_s = 600.0, 100.0
        final = train.train_and_evaluate(config, workdir)
        self.assertEqual(budget.load_plan(workdir / priming.PHASE_DIR).num_steps, 1)  # floor(180 / 100)
        self.assertEqual(final["priming"]["steps"], 1)
        self.assertEqual(final["steps"], 5)  # floor((600 - phase 1's seconds) / 100)

    def test_bad_priming_names_the_field(self):
        cases = [({"learners.priming": 1.0}, r"config\.learners\.priming=1\.0: must be in \[0, 1\)"),
                 ({"learners.priming": -0.1}, r"config\.learners\.priming=-0\.1"),
                 ({"learners.priming": 0.5, "learners.priming_method": "fulll"}, "unknown method 'fulll'"),
                 ({"learners.priming": 0.9, "num_train_steps": 2},
                  r"priming=0\.9 of num_train_steps=2 leaves no step")]
        for fields, pattern in cases:
            with self.assertRaisesRegex(ValueError, pattern):
                train.train_and_evaluate(tiny_config("learners", **fields), self.create_tempdir().full_path)
        with self.assertRaisesRegex(methods.MethodError, r"select='movement' needs the nodes a priming phase"):
            train.train_and_evaluate(tiny_config("learners", **{"learners.select": "movement"}),
                                     self.create_tempdir().full_path)


if __name__ == "__main__":
    absltest.main()
