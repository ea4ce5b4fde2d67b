"""Tests for fft.delta: safetensors task deltas, round trips and applying them to a base tree."""

import os
from unittest import mock

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy
from absl.testing import absltest

from fft import delta
from fft.delta import DeltaError


def base_tree():
    rng = np.random.default_rng(0)
    return {
        "embeddings": {"layer_norm": {"bias": rng.normal(size=4).astype(np.float32)}},
        "encoder": {
            "layer_0": {"output": {"dense": {
                "kernel": rng.normal(size=(4, 4)).astype(np.float32),
                "bias": rng.normal(size=4).astype(np.float32),
            }}},
        },
        "pooler": {"dense": {"bias": rng.normal(size=4).astype(ml_dtypes.bfloat16)}},
    }  # fmt: skip


def trained_tree():
    rng = np.random.default_rng(1)
    return {
        "encoder": {"layer_0": {"output": {"dense": {"bias": rng.normal(size=4).astype("f4")}}}},
        "pooler": {"dense": {"bias": rng.normal(size=4).astype(ml_dtypes.bfloat16)}},
        "classifier": {"kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32),
                       "bias": np.zeros(2, np.float32), "count": np.asarray(3, np.int32)},
    }  # fmt: skip


def assert_bit_equal(test, a, b):
    test.assertEqual(jax.tree.structure(a), jax.tree.structure(b))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        test.assertEqual((x.dtype, x.shape), (y.dtype, y.shape))
        test.assertEqual(x.tobytes(), y.tobytes())


class ExportLoadTest(absltest.TestCase):
    def test_round_trip_bit_exact_with_metadata(self):
        tree = trained_tree()
        directory = self.create_tempdir().full_path
        path = os.path.join(directory, "rte.safetensors")
        meta = {"base_model": "minilm", "preset": "bitfit"}
        size = delta.export_delta(tree, path, meta)
        self.assertEqual(size, os.path.getsize(path))
        self.assertEqual(os.listdir(directory), ["rte.safetensors"])  # no temp file left
        loaded, got_meta = delta.load_delta(path)
        assert_bit_equal(self, loaded, tree)
        self.assertEqual(got_meta, meta)
        self.assertEqual(loaded["pooler"]["dense"]["bias"].dtype, ml_dtypes.bfloat16)
        self.assertLess(size - delta.tree_bytes(tree), 1024)  # just a header on top of the data

    def test_overwrite_and_no_metadata(self):
        directory = self.create_tempdir().full_path
        path = os.path.join(directory, "d.safetensors")
        delta.export_delta({"a": {"b": np.ones(3, np.float32)}}, path, {"x": "1"})
        delta.export_delta({"c": np.zeros(2, np.float16)}, path)
        loaded, meta = delta.load_delta(path)
        assert_bit_equal(self, loaded, {"c": np.zeros(2, np.float16)})
        self.assertEqual(meta, {})
        self.assertEqual(os.listdir(directory), ["d.safetensors"])

    def test_failed_write_leaves_old_file(self):
        directory = self.create_tempdir().full_path
        path = os.path.join(directory, "d.safetensors")
        old = {"a": np.ones(3, np.float32)}
        delta.export_delta(old, path)

        def crash(tensors, filename, metadata=None):
            with open(filename, "wb") as f:
                f.write(b"half a file")
            raise OSError("disk full")

        with (
            mock.patch.object(safetensors.numpy, "save_file", crash),
            self.assertRaisesRegex(OSError, "disk full"),
        ):
            delta.export_delta({"a": np.zeros(3, np.float32)}, path)
        self.assertEqual(os.listdir(directory), ["d.safetensors"])
        assert_bit_equal(self, delta.load_delta(path)[0], old)
        with self.assertRaisesRegex(DeltaError, "'a'.*cannot store"):
            delta.export_delta({"a": np.array(["not", "numbers"])}, path)

    def test_bad_inputs(self):
        path = os.path.join(self.create_tempdir().full_path, "d.safetensors")
        with self.assertRaisesRegex(DeltaError, "no leaves"):
            delta.export_delta({"a": {}}, path)
        with self.assertRaisesRegex(DeltaError, "strings"):
            delta.export_delta({"a": np.ones(1)}, path, {"step": 3})
        with self.assertRaisesRegex(DeltaError, "without '/'"):
            delta.export_delta({"a/b": np.ones(1)}, path)

    def test_tree_bytes(self):
        tree = trained_tree()
        self.assertEqual(delta.tree_bytes(tree), 16 + 8 + 32 + 8 + 4)
        self.assertEqual(delta.tree_bytes(jax.eval_shape(lambda: tree)), 68)


class ApplyTest(absltest.TestCase):
    def test_replaces_named_leaves_and_adds_head(self):
        base, trained = base_tree(), trained_tree()
        before = jax.tree.map(np.copy, base)
        full = delta.apply_delta(base, trained)
        assert_bit_equal(self, base, before)  # inputs untouched
        self.assertIn("kernel", base["encoder"]["layer_0"]["output"]["dense"])
        self.assertNotIn("classifier", base)
        dense = full["encoder"]["layer_0"]["output"]["dense"]
        self.assertIs(dense["bias"], trained["encoder"]["layer_0"]["output"]["dense"]["bias"])
        self.assertIs(dense["kernel"], base["encoder"]["layer_0"]["output"]["dense"]["kernel"])
        self.assertIs(full["embeddings"], base["embeddings"])  # untouched sub-trees are shared
        self.assertIs(full["classifier"]["kernel"], trained["classifier"]["kernel"])

    def test_round_trip_through_file(self):
        base, trained = base_tree(), trained_tree()
        path = os.path.join(self.create_tempdir().full_path, "d.safetensors")
        delta.export_delta(trained, path)
        loaded, _ = delta.load_delta(path)
        assert_bit_equal(self, delta.apply_delta(base, loaded), delta.apply_delta(base, trained))

    def test_shape_mismatch_names_path(self):
        bad = {"encoder": {"layer_0": {"output": {"dense": {"bias": np.ones(5, np.float32)}}}}}
        with self.assertRaisesRegex(DeltaError, r"'encoder/layer_0/output/dense/bias'.*\(5,\)"):
            delta.apply_delta(base_tree(), bad)

    def test_dtype_mismatch_names_path(self):
        bad = {"pooler": {"dense": {"bias": np.ones(4, np.float32)}}}
        with self.assertRaisesRegex(DeltaError, r"'pooler/dense/bias'.*float32.*bfloat16"):
            delta.apply_delta(base_tree(), bad)

    def test_unknown_leaf(self):
        with self.assertRaisesRegex(DeltaError, "'encoder/layer_9/x' is not in the pretrained"):
            delta.apply_delta(base_tree(), {"encoder": {"layer_9": {"x": np.ones(1)}}})
        with self.assertRaisesRegex(DeltaError, "'classifier/kernel'"):
            delta.apply_delta(base_tree(), {"classifier": {"kernel": np.ones(1)}}, allow_new=None)
        new = delta.apply_delta(base_tree(), {"head2": {"w": np.ones(1)}}, allow_new=r"head2/.*")
        self.assertIn("head2", new)

    def test_leaf_module_conflicts(self):
        with self.assertRaisesRegex(DeltaError, "under the pretrained leaf 'pooler/dense/bias'"):
            delta.apply_delta(base_tree(), {"pooler": {"dense": {"bias": {"x": np.ones(1)}}}},
                              allow_new=".*")
        with self.assertRaisesRegex(DeltaError, "'pooler/dense' is a module"):
            delta.apply_delta(base_tree(), {"pooler": {"dense": np.ones(1)}}, allow_new=".*")


if __name__ == "__main__":
    absltest.main()
