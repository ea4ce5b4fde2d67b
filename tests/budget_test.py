"""Tests for wall-clock time budgets and timed evaluation (fft.budget, config.time_budget_s,
config.eval_every_s) on the tiny random-init model. No assertion bounds how long anything takes:
they check the plan, the stop rule and the records."""

import json
import math
import pathlib

import ml_collections
from absl.testing import absltest

from fft import budget, train
from tests.train_test import tiny_config


def budget_config(budget_s, step_s=None, **overrides):
    config = tiny_config(**{"num_train_steps": 0, "log_every_steps": 50, "eval_every_steps": 100000,
                            "checkpoint.every_steps": 100000, **overrides})
    config.time_budget_s = budget_s
    if step_s is not None:
        config.time_budget_step_s = step_s
    return config


class ConfigTest(absltest.TestCase):
    def test_bad_fields_name_themselves(self):
        cases = [({"time_budget_s": 0.0}, r"config\.time_budget_s=0\.0: must be a number of seconds > 0"),
                 ({"time_budget_s": float("nan")}, r"config\.time_budget_s=nan"),
                 ({"eval_every_s": -1.0}, r"config\.eval_every_s=-1\.0"),
                 ({"time_budget_s": 10.0, "num_train_steps": 5},
                  r"config\.time_budget_s=10\.0 and config\.num_train_steps=5: a budget decides"),
                 ({"time_budget_step_s": 0.1}, r"config\.time_budget_step_s=0\.1: needs config\.time_budget_s")]
        for fields, pattern in cases:
            config = ml_collections.ConfigDict({"num_train_steps": 0, "time_budget_s": None,
                                                "time_budget_step_s": None, "eval_every_s": None})
            config.update(fields)
            with self.assertRaisesRegex(budget.BudgetError, pattern):
                budget.check_config(config)
        budget.check_config(tiny_config())  # Unset: no budget.

    def test_steps_within(self):
        self.assertEqual(budget.steps_within(10.0, 0.3), 33)
        with self.assertRaisesRegex(budget.BudgetError, r"time_budget_s=0\.1: too short to finish one step "
                                                        r"\(a step takes 0\.3 s here\)"):
            budget.steps_within(0.1, 0.3)

    def test_clock_keeps_the_remaining_budget_and_the_eval_grid(self):
        clock = budget.Clock(10.0, 2.0, train_seconds=7.0)  # Resumed after 7 s of training.
        self.assertEqual(clock.due(7.5), (False, False))
        self.assertEqual(clock.due(8.1), (False, True))  # Crossed 8 s.
        self.assertEqual(clock.due(9.0), (False, False))
        self.assertEqual(clock.due(10.0), (True, True))

    def test_curve_is_trimmed_to_the_resumed_step(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        for step in (3, 6, 9):
            budget.append_curve(workdir, step, step / 10, {"dev": {"accuracy": 0.5, "loss": float("nan")}}, timed=False)
        budget.trim_curve(workdir, 6)
        points = budget.read_curve(workdir)
        self.assertEqual([p["step"] for p in points], [3, 6])
        self.assertIsNone(points[0]["eval"]["dev"]["loss"])  # Strict JSON: NaN is null.


class TrainTest(absltest.TestCase):
    def test_given_step_time_plans_the_steps_and_the_schedule(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        final = train.train_and_evaluate(budget_config(600.0, step_s=100.0), workdir)
        self.assertEqual(final["steps"], 6)  # floor(600 / 100): a plain 6-step run.
        self.assertFalse(final["stopped_by_budget"])
        plan = json.loads((workdir / budget.PLAN_FILE).read_text())
        self.assertEqual((plan["num_steps"], plan["source"], plan["calibration_steps"]), (6, "given", 0))
        # The same run as num_train_steps=6 without a budget, bit for bit.
        plain = train.train_and_evaluate(tiny_config(num_train_steps=6, log_every_steps=50),
                                         self.create_tempdir().full_path)
        self.assertEqual(final["eval"], plain["eval"])
        self.assertEqual(final["last_train_loss"], plain["last_train_loss"])

    def test_measured_plan(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        final = train.train_and_evaluate(budget_config(1.0), workdir)
        plan = budget.load_plan(workdir)
        self.assertEqual(plan.source, "measured")
        self.assertEqual(plan.calibration_steps, budget.CALIBRATION_WARMUP + budget.CALIBRATION_STEPS)
        self.assertEqual(plan.num_steps, math.floor(1.0 / plan.step_seconds))
        self.assertLessEqual(final["steps"], plan.num_steps)
        self.assertEqual(final["time_budget"]["num_steps"], plan.num_steps)

    def test_budget_stops_resumes_with_what_is_left_and_a_stopped_run_is_finished(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        # A step 'takes' 0.1 ms: 15,000 steps planned, so the 1.5 s budget stops the run first.
        config = budget_config(1.5, step_s=1e-4, eval_every_s=0.5, **{"checkpoint.every_steps": 10})
        original = train._save_train_time

        def interrupt_after_step_20(workdir_, step, seconds, examples):
            original(workdir_, step, seconds, examples)
            if step == 20:
                raise KeyboardInterrupt

        with (absltest.mock.patch.object(train, "_save_train_time", interrupt_after_step_20),
              self.assertRaises(KeyboardInterrupt)):
            train.train_and_evaluate(config, workdir)
        first_segment = json.loads((workdir / "train_time.json").read_text())["20"]["train_seconds"]
        final = train.train_and_evaluate(config, workdir)
        self.assertIn(final["resumed_from_step"], (10, 20))
        self.assertTrue(final["stopped_by_budget"])
        self.assertGreaterEqual(final["train_seconds"], 1.5)  # The budget counts both segments.
        self.assertGreater(final["train_seconds"], first_segment)
        plan = budget.load_plan(workdir)
        self.assertEqual(plan.num_steps, 15000)
        self.assertEqual(plan.stopped_at_step, final["steps"])
        self.assertLess(final["steps"], 15000)
        # Timed evaluations: the k-th lies past k * 0.5 s of training; the last one is the stop.
        points = budget.read_curve(workdir)
        timed = [p for p in points if p["timed"]]
        self.assertNotEmpty(timed)
        for k, p in enumerate(timed[:-1], start=1):
            self.assertGreaterEqual(p["train_seconds"], 0.5 * k)
        self.assertEqual(points[-1]["step"], final["steps"])
        self.assertEqual([p["step"] for p in points], sorted(p["step"] for p in points))
        # Started again: finished, nothing trains.
        again = train.train_and_evaluate(config, workdir)
        self.assertEqual(again["steps"], final["steps"])
        self.assertEqual(again["eval"], final["eval"])


if __name__ == "__main__":
    absltest.main()
