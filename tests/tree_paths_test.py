"""Tests for fft.tree_paths: key strings, leaf order, flatten/unflatten round trips, bad keys."""

import dataclasses

import jax
import numpy as np
from absl.testing import absltest, parameterized
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

from fft import tree_paths


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Pair:
    first: object
    second: object


def nested():
    return {
        "encoder": {
            "layer_10": {"dense": {"kernel": np.ones((2, 3)), "bias": np.zeros(3)}},
            "layer_2": {"dense": {"kernel": np.full((2, 3), 2.0)}},
        },
        "classifier": {"bias": np.arange(2.0)},
        "step": 7,
    }


class KeyStrTest(parameterized.TestCase):
    @parameterized.parameters(
        (DictKey("kernel"), "kernel"),
        (DictKey(3), "3"),
        (GetAttrKey("scale"), "scale"),
        (SequenceKey(2), "2"),
        ("plain", "plain"),
    )
    def test_key_str(self, key, want):
        self.assertEqual(tree_paths.key_str(key), want)

    def test_path_str(self):
        path = (DictKey("encoder"), GetAttrKey("layers"), SequenceKey(0), DictKey("kernel"))
        self.assertEqual(tree_paths.path_str(path), "encoder/layers/0/kernel")
        self.assertEqual(tree_paths.path_str(path, sep="."), "encoder.layers.0.kernel")
        self.assertEqual(tree_paths.path_str(()), "")

    def test_key_paths_from_jax(self):
        tree = {"a": Pair([1, 2], {"k": 3}), "b": (4,)}
        paths = [tree_paths.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
        self.assertEqual(paths, ["a/first/0", "a/first/1", "a/second/k", "b/0"])


class LeafPathsTest(absltest.TestCase):
    def test_follows_jax_leaf_order(self):
        tree = {"b": {"y": 1, "x": 2}, "a": [3, {"k": 4}]}
        self.assertEqual(tree_paths.leaf_paths(tree), ["a/0", "a/1/k", "b/x", "b/y"])
        self.assertEqual(jax.tree.leaves(tree), [3, 4, 2, 1])
        self.assertEqual(tree_paths.leaf_paths({"a": {"b": 1}}), ["a/b"])

    def test_none_and_empty_have_no_leaves(self):
        self.assertEqual(tree_paths.leaf_paths({"a": None, "b": {}, "c": []}), [])
        self.assertEqual(tree_paths.leaf_paths(np.ones(2)), [""])

    def test_matches_flatten_on_sorted_dicts(self):
        tree = nested()
        self.assertEqual(tree_paths.leaf_paths(tree), sorted(tree_paths.flatten(tree)))


class FlattenTest(absltest.TestCase):
    def test_insertion_order_and_leaves(self):
        tree = nested()
        flat = tree_paths.flatten(tree)
        self.assertEqual(
            list(flat),
            [
                "encoder/layer_10/dense/kernel",
                "encoder/layer_10/dense/bias",
                "encoder/layer_2/dense/kernel",
                "classifier/bias",
                "step",
            ],
        )
        self.assertIs(
            flat["encoder/layer_10/dense/bias"], tree["encoder"]["layer_10"]["dense"]["bias"]
        )
        self.assertEqual(flat["step"], 7)

    def test_round_trip(self):
        tree = nested()
        back = tree_paths.unflatten(tree_paths.flatten(tree))
        self.assertEqual(jax.tree.structure(back), jax.tree.structure(tree))
        self.assertEqual(list(back["encoder"]), ["layer_10", "layer_2"])  # Order is kept.
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
            self.assertIs(a, b)
        flat = {"x/y": 1, "a": 2, "x/z/w": 3}
        self.assertEqual(tree_paths.flatten(tree_paths.unflatten(flat)), flat)

    def test_round_trip_with_other_separator(self):
        config = {"optim": {"lr": 1e-4, "schedule": {"warmup": 0.1}}, "seed": 0, "model/name": "m"}
        flat = tree_paths.flatten(config, sep=".")
        want = {"optim.lr": 1e-4, "optim.schedule.warmup": 0.1, "seed": 0, "model/name": "m"}
        self.assertEqual(flat, want)
        self.assertEqual(tree_paths.unflatten(flat, sep="."), config)

    def test_empty_mappings_vanish(self):
        self.assertEqual(tree_paths.flatten({"a": {}, "b": {"c": {}}, "d": 1}), {"d": 1})
        self.assertEqual(tree_paths.flatten({}), {})
        self.assertEqual(tree_paths.unflatten({}), {})

    def test_inputs_are_not_modified(self):
        tree = nested()
        tree_paths.flatten(tree)
        self.assertEqual(jax.tree.structure(tree), jax.tree.structure(nested()))
        leaf = {"kept": 1}
        flat = {"a": leaf}
        out = tree_paths.unflatten(flat)
        self.assertIs(out["a"], leaf)
        self.assertEqual(flat, {"a": {"kept": 1}})

    def test_bad_keys(self):
        for tree, key, where in [
            ({"a": {"b/c": 1}}, "'b/c'", "under 'a'"),
            ({"": 1}, "''", "at the top level"),
            ({"a": {"b": {3: 1}}}, "3", "under 'a/b'"),
            ({("a",): 1}, r"\('a',\)", "at the top level"),
        ]:
            with self.assertRaisesRegex(ValueError, f"key {key} {where} must be a non-empty str"):
                tree_paths.flatten(tree)
        with self.assertRaisesRegex(ValueError, r"key 'lr\.max' under 'optim' .* without '\.'"):
            tree_paths.flatten({"optim": {"lr.max": 1}}, sep=".")

    def test_unflatten_conflicts(self):
        with self.assertRaisesRegex(ValueError, "path 'a/b' lies under the leaf 'a'"):
            tree_paths.unflatten({"a": 1, "a/b": 2})
        with self.assertRaisesRegex(ValueError, "path 'a/b/c' lies under the leaf 'a/b'"):
            tree_paths.unflatten({"a/b": {"c": 0}, "a/b/c": 2})
        with self.assertRaisesRegex(ValueError, "path 'a' is a leaf and also holds other paths"):
            tree_paths.unflatten({"a/b": 2, "a": 1})


class NaturalOrderTest(absltest.TestCase):
    def test_digit_runs_compare_as_numbers(self):
        flat = {"layer_10/k": 0, "layer_2/k": 1, "layer_1/k": 2, "embeddings": 3, "layer_2/b": 4}
        self.assertEqual(
            list(tree_paths.natural_order(flat)),
            ["embeddings", "layer_1/k", "layer_2/b", "layer_2/k", "layer_10/k"],
        )
        self.assertLess(tree_paths.natural_key("layer_2"), tree_paths.natural_key("layer_10"))
        self.assertEqual(
            list(flat), ["layer_10/k", "layer_2/k", "layer_1/k", "embeddings", "layer_2/b"]
        )


if __name__ == "__main__":
    absltest.main()
