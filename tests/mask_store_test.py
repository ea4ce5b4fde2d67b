"""Tests for fft.mask_store: bit-exact round trips, byte accounting, errors."""

import math
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from fft import mask_store, tree_paths
from fft import supermask as sm


def _pretrained(key, hidden=32, ffn=64, dtype=jnp.float32):
    """Two BERT-named encoder layers, a pooler and a 3-way classifier."""
    shapes = {}
    for i in range(2):
        p = f"encoder/layer_{i}"
        for name in (
            "attention/query",
            "attention/key",
            "attention/value",
            "attention/output/dense",
        ):
            shapes[f"{p}/{name}/kernel"] = (hidden, hidden)
            shapes[f"{p}/{name}/bias"] = (hidden,)
        shapes[f"{p}/intermediate/dense/kernel"] = (hidden, ffn)
        shapes[f"{p}/output/dense/kernel"] = (ffn, hidden)
    shapes["pooler/dense/kernel"] = (hidden, hidden)
    shapes["classifier/kernel"] = (hidden, 3)
    shapes["classifier/bias"] = (3,)
    keys = jax.random.split(key, len(shapes))
    return tree_paths.unflatten(
        {p: jax.random.normal(k, s).astype(dtype) for k, (p, s) in zip(keys, shapes.items())}
    )


def _trained(config, dtype=jnp.float32, noise=0.05, hidden=32):
    """(trainable, frozen) with scores moved randomly away from their init, as after training."""
    params = _pretrained(jax.random.PRNGKey(0), hidden=hidden, ffn=2 * hidden, dtype=dtype)
    trainable, frozen = sm.init_trainable(jax.random.PRNGKey(1), params, config)
    leaves, treedef = jax.tree.flatten(trainable["scores"])
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    moved = [s + noise * jax.random.normal(k, s.shape) for k, s in zip(keys, leaves)]
    trainable["scores"] = jax.tree.unflatten(treedef, moved)
    trainable["head"] = jax.tree.map(lambda x: x.astype(jnp.float32), trainable["head"])
    return trainable, frozen


def _assert_bit_identical(test, a, b):
    fa, fb = tree_paths.flatten(a), tree_paths.flatten(b)
    test.assertEqual(list(fa), list(fb))
    for path in fa:
        x, y = np.asarray(fa[path]), np.asarray(fb[path])
        test.assertEqual(x.dtype, y.dtype, path)
        test.assertEqual(x.shape, y.shape, path)
        bits = np.uint16 if x.dtype.itemsize == 2 else np.uint32
        np.testing.assert_array_equal(x.view(bits), y.view(bits), err_msg=path)


class MaskStoreTest(parameterized.TestCase):
    @parameterized.product(
        mode=("threshold", "topk"), dtype=(jnp.float32, jnp.bfloat16), variant=("packed", "xz")
    )
    def test_round_trip_is_bit_identical_to_apply_masks(self, mode, dtype, variant):
        config = sm.MaskConfig(mode=mode, keep_fraction=0.8, initial_sparsity=0.1)
        trainable, frozen = _trained(config, dtype)
        expected = jax.jit(sm.make_assemble(config))(trainable, frozen)
        out = self.create_tempdir().full_path
        mask_store.export_task(out, trainable["scores"], trainable["head"], config, {"task": "t"})
        name = mask_store.PACKED_NAME if variant == "packed" else mask_store.COMPRESSED_NAME
        got = mask_store.import_task(os.path.join(out, name), frozen)
        _assert_bit_identical(self, jax.device_get(got), jax.device_get(expected))
        task = mask_store.read_task(out)
        self.assertEqual(task.config, config)
        self.assertEqual(task.metadata, {"task": "t"})
        masks = tree_paths.flatten(sm.masks(trainable["scores"], config))
        for path, m in task.masks.items():
            np.testing.assert_array_equal(m, np.asarray(masks[path]) == 1, err_msg=path)

    def test_byte_counts(self):
        config = sm.MaskConfig(initial_sparsity=0.05)
        trainable, _ = _trained(config)
        out = self.create_tempdir().full_path
        counts = mask_store.export_task(out, trainable["scores"], trainable["head"], config)
        scores = tree_paths.flatten(trainable["scores"])
        entries = sum(s.size for s in scores.values())
        head_entries = sum(x.size for x in jax.tree.leaves(trainable["head"]))
        self.assertEqual(counts["masked_entries"], entries)
        self.assertEqual(counts["head_entries"], head_entries)
        self.assertEqual(counts["dense_bytes"], 4 * (entries + head_entries))
        self.assertEqual(
            counts["mask_bytes_packed"], sum(math.ceil(s.size / 8) for s in scores.values())
        )
        self.assertEqual(counts["packed_bytes"], os.path.getsize(os.path.join(out, "task.npz")))
        self.assertEqual(
            counts["compressed_bytes"], os.path.getsize(os.path.join(out, "task.xz.npz"))
        )
        self.assertAlmostEqual(
            counts["bits_per_entry_packed"], 8 * counts["mask_bytes_packed"] / entries
        )
        self.assertAlmostEqual(counts["bits_per_entry_packed"], 1.0)  # Sizes are multiples of 8.
        # The packed file is the masks at 1 bit, the head at 32 bits, plus headers and metadata.
        payload = counts["mask_bytes_packed"] + 4 * head_entries
        self.assertGreater(counts["packed_bytes"], payload)
        self.assertLess(counts["packed_bytes"], payload + 12_000)
        self.assertLess(counts["packed_bytes"], counts["dense_bytes"] / 4)
        # No temporary files are left behind, and numpy reads the npz layout.
        self.assertEqual(sorted(os.listdir(out)), ["task.npz", "task.xz.npz"])
        with np.load(os.path.join(out, "task.npz")) as npz:
            self.assertIn("mask/encoder/layer_0/attention/query/kernel", npz.files)
            self.assertEqual(npz["head/classifier/kernel"].dtype, np.float32)

    def test_compressed_is_smaller_for_sparse_masks(self):
        config = sm.MaskConfig(init="constant", initial_sparsity=0.01)
        # 16k-32k entries per tensor: large enough that per-member headers do not dominate.
        trainable, _ = _trained(config, noise=0.0, hidden=128)
        out = self.create_tempdir().full_path
        counts = mask_store.export_task(out, trainable["scores"], trainable["head"], config)
        self.assertLess(counts["compressed_bytes"], counts["packed_bytes"])
        self.assertLess(counts["bits_per_entry_compressed"], 0.5)
        with zipfile.ZipFile(os.path.join(out, "task.xz.npz")) as zf:
            self.assertEqual({i.compress_type for i in zf.infolist()}, {zipfile.ZIP_LZMA})

    def test_import_replaces_the_head_and_keeps_other_leaves(self):
        config = sm.MaskConfig()
        trainable, frozen = _trained(config)
        out = self.create_tempdir().full_path
        mask_store.export_task(out, trainable["scores"], trainable["head"], config)
        other_head = {**frozen, "classifier": {"kernel": jnp.zeros((32, 7))}}
        got = mask_store.import_task(out, other_head)
        np.testing.assert_array_equal(
            got["classifier"]["kernel"], trainable["head"]["classifier"]["kernel"]
        )
        self.assertIn("bias", got["classifier"])
        self.assertIs(got["pooler"]["dense"]["kernel"], frozen["pooler"]["dense"]["kernel"])

    def test_import_errors_name_the_path(self):
        config = sm.MaskConfig()
        trainable, frozen = _trained(config)
        out = self.create_tempdir().full_path
        mask_store.export_task(out, trainable["scores"], trainable["head"], config)
        path = "encoder/layer_1/intermediate/dense/kernel"
        flat = tree_paths.flatten(frozen)
        wrong = dict(flat, **{path: jnp.zeros((3, 3))})
        with self.assertRaisesRegex(ValueError, path):
            mask_store.import_task(out, tree_paths.unflatten(wrong))
        missing = {p: x for p, x in flat.items() if p != path}
        with self.assertRaisesRegex(ValueError, path):
            mask_store.import_task(out, tree_paths.unflatten(missing))
        with self.assertRaises(FileNotFoundError):
            mask_store.import_task(os.path.join(out, "nope"), frozen)


if __name__ == "__main__":
    absltest.main()
