"""End-to-end tests of the training loop on the `tiny` config (random 2-layer BERT, real RTE rows)."""

import json
import pathlib
import struct
import subprocess
import sys
from unittest import mock

import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from configs import glue as glue_config
from fft import analyze, distances, errors, steps, train, validate

REPO = pathlib.Path(__file__).resolve().parent.parent


def event_scalars(workdir) -> dict[str, dict[int, float]]:
    """Reads every scalar from a workdir's TensorBoard event files: {tag: {step: value}}."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for path in pathlib.Path(workdir).glob("events.out.tfevents*"):
        data, pos = path.read_bytes(), 0
        while pos < len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc.
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 16 + length
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def tiny_config(method="full", **overrides):
    config = glue_config.get_config(f"task=rte,tiny,method={method}")
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


class TrainTest(absltest.TestCase):
    def test_runs_writes_metrics_and_resumes(self):
        workdir = self.create_tempdir().full_path
        final = train.train_and_evaluate(tiny_config(), workdir)
        self.assertEqual(final["steps"], 6)
        self.assertIsNone(final["resumed_from_step"])
        self.assertBetween(final["eval"]["dev"]["accuracy"], 0.0, 1.0)
        saved = json.loads((pathlib.Path(workdir) / "final_metrics.json").read_text())
        self.assertEqual(saved["eval"], final["eval"])
        # CPU seconds per wall second of the training loop, and the cores it could use.
        self.assertGreater(saved["cpu_share"], 0.0)
        self.assertGreaterEqual(saved["cpu_cores"], 1)
        scalars = event_scalars(workdir)
        self.assertIn(3, scalars["eval/dev/accuracy"])
        # Per-layer distances to the step-0 weights are logged at each evaluation and grow.
        for group in ("embeddings", "layer_0", "layer_1", "pooler", "head", "total"):
            self.assertGreater(scalars[f"dist/rel_l1/{group}"][3], 0.0)
        self.assertGreater(scalars["dist/rel_l2/total"][6], scalars["dist/rel_l2/total"][3])
        # fft.analyze rebuilds step 0 from config.json and reads the checkpoint of step 6.
        initial, latest, step = analyze.run_params(workdir)
        self.assertEqual(step, 6)
        self.assertEqual(initial.keys(), latest.keys())
        table = distances.grouped(initial, latest)
        np.testing.assert_allclose(
            table["total"]["rel_l2"], scalars["dist/rel_l2/total"][6], rtol=1e-4
        )
        # A longer run in the same workdir continues from the checkpoint at step 6.
        longer = train.train_and_evaluate(tiny_config(num_train_steps=9), workdir)
        self.assertEqual(longer["resumed_from_step"], 6)
        self.assertEqual(longer["steps"], 9)
        # Re-running a finished run leaves it alone and returns its final metrics.
        final_path = pathlib.Path(workdir) / "final_metrics.json"
        before = final_path.read_bytes()
        again = train.train_and_evaluate(tiny_config(num_train_steps=9), workdir)
        self.assertEqual(again, json.loads(before))
        self.assertEqual(final_path.read_bytes(), before)
        # A run stopped after its last checkpoint but before its final metrics restores and
        # evaluates the same weights.
        final_path.unlink()
        again = train.train_and_evaluate(tiny_config(num_train_steps=9), workdir)
        self.assertEqual(again["resumed_from_step"], 9)
        self.assertAlmostEqual(again["eval"]["dev"]["loss"], longer["eval"]["dev"]["loss"], places=6)
        # Its final_metrics.json stays strict JSON (no step ran, so there is no last loss: null).
        def refuse(constant):
            raise ValueError(f"{constant} in final_metrics.json")

        written = json.loads(final_path.read_text(), parse_constant=refuse)
        self.assertIsNone(written["last_train_loss"])
        # Example counts (and with them training time) accumulate over resumed segments:
        # train_time.json has one record per checkpoint, 8 rows per step.
        history = json.loads((pathlib.Path(workdir) / "train_time.json").read_text())
        self.assertEqual({k: v["examples_seen"] for k, v in history.items()}, {"3": 24, "6": 48, "9": 72})

    def test_one_device_and_eight_devices_agree(self):
        one = train.train_and_evaluate(tiny_config(**{"mesh.shape": (1, 1)}), self.create_tempdir().full_path)
        eight = train.train_and_evaluate(tiny_config(), self.create_tempdir().full_path)
        self.assertEqual(eight["devices"], 8)
        np.testing.assert_allclose(one["last_train_loss"], eight["last_train_loss"], rtol=1e-5)
        np.testing.assert_allclose(one["eval"]["dev"]["loss"], eight["eval"]["dev"]["loss"], rtol=1e-5)

    def test_packed_and_bucketed_batches_train_the_same_examples(self):
        for overrides in ({}, {"data.packing": False}):
            workdir = pathlib.Path(self.create_tempdir().full_path)
            final = train.train_and_evaluate(tiny_config(**overrides), workdir)
            self.assertEqual(final["steps"], 6)
            self.assertTrue(np.isfinite(final["last_train_loss"]))
            # Same number of examples per step either way (batch 8, 6 steps).
            history = json.loads((workdir / "train_time.json").read_text())
            self.assertEqual(history["6"]["examples_seen"], 48)

    def test_pack_length_shorter_than_an_example_names_the_field(self):
        with self.assertRaisesRegex(ValueError, "data.pack_length=16 is shorter than the longest"):
            train.train_and_evaluate(tiny_config(**{"data.pack_length": 16}), self.create_tempdir().full_path)

    def test_regression_task(self):
        final = train.train_and_evaluate(tiny_config(task="stsb"), self.create_tempdir().full_path)
        self.assertIn("pearson", final["eval"]["dev"])
        self.assertIn("spearman", final["eval"]["dev"])

    def test_nonfinite_loss_stops_before_checkpoint(self):
        workdir = self.create_tempdir().full_path
        nan_losses = lambda outputs, labels, is_regression: jnp.full(labels.shape, jnp.nan)
        with (
            mock.patch.object(steps, "example_losses", nan_losses),
            self.assertRaisesRegex(errors.RunError, "loss is nan at step 2"),
        ):
            train.train_and_evaluate(tiny_config(), workdir)
        self.assertEqual(list((pathlib.Path(workdir) / "checkpoints").glob("[0-9]*")), [])

    def test_missing_data_dir_names_the_path(self):
        with self.assertRaisesRegex(Exception, "no_such_glue_dir"):
            train.train_and_evaluate(tiny_config(**{"data.dir": "/tmp/no_such_glue_dir"}), self.create_tempdir().full_path)

    def test_unknown_override_fails_loudly(self):
        result = subprocess.run(
            [sys.executable, "-m", "fft.main", "--config=configs/glue.py:task=rte,tiny",
             "--config.optim.lrr=1e-3", f"--workdir={self.create_tempdir().full_path}"],
            check=False, cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("lrr", result.stderr)

    def test_dropout_key_kind_comes_from_the_config(self):
        import jax

        self.assertEqual(str(jax.random.key_impl(train.dropout_key(tiny_config()))), "rbg")
        fry = train.dropout_key(tiny_config(dropout_rng="threefry2x32"))
        self.assertEqual(str(jax.random.key_impl(fry)), "threefry2x32")
        with self.assertRaisesRegex(validate.ConfigError, "config.dropout_rng='philox'"):
            validate.check(tiny_config(dropout_rng="philox"))


if __name__ == "__main__":
    absltest.main()
