"""Tests for fft.partition: rules -> labels, errors, presets, split/merge, per-label optimizer."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from fft import analyze, distances, partition, steps, tree_paths
from fft.partition import PartitionError


def bert_tree(num_layers=4, distil=False, seed=0):
    """A BERT (or DistilBERT) classifier tree per docs/CONTRACT.md, with tiny arrays."""
    shapes = analyze.bert_shapes(num_layers, hidden=4, intermediate=8, vocab=10, max_positions=6)
    if distil:
        shapes = {p: s for p, s in shapes.items() if "token_type" not in p and "pooler" not in p}
        head = {"pre_classifier/dense/kernel": (4, 4), "pre_classifier/dense/bias": (4,)}
        shapes = {**head, **shapes}
    rng = np.random.default_rng(seed)
    return tree_paths.unflatten(
        {p: rng.normal(size=s).astype(np.float32) for p, s in shapes.items()}
    )


def flat_labels(tree):
    return dict(zip(tree_paths.leaf_paths(tree), jax.tree.leaves(tree)))


def trained_paths(params, spec, **kw):
    rules = partition.preset_rules(spec, 4, **kw)
    return {p for p, lab in flat_labels(partition.labels(params, rules)).items() if lab != "frozen"}


class PathsTest(absltest.TestCase):
    def test_layer_index(self):
        self.assertEqual(partition.layer_index("encoder/layer_11/output/dense/bias"), 11)
        self.assertIsNone(partition.layer_index("pooler/dense/kernel"))
        self.assertIsNone(partition.layer_index("encoder/layer_x/output/dense/bias"))

    def test_count_params(self):
        tree = {"a": np.zeros((2, 3)), "b": {"c": np.zeros(4), "d": np.float32(1)}}
        self.assertEqual(partition.count_params(tree), 11)
        self.assertEqual(partition.count_params(jax.eval_shape(lambda: tree)), 11)


class LabelsTest(absltest.TestCase):
    def test_first_match_wins(self):
        params = {"a": {"bias": 1.0, "kernel": 2.0}, "b": {"bias": 3.0, "kernel": 4.0}}
        rules = [(r"a/.*", "x"), (r".*/bias", "y"), (r".*", "z")]
        self.assertEqual(
            partition.labels(params, rules),
            {"a": {"bias": "x", "kernel": "x"}, "b": {"bias": "y", "kernel": "z"}},
        )

    def test_unmatched_leaf_names_path_and_rules(self):
        params = {"a": {"bias": 1.0}, "b": {"kernel": 2.0}}
        with self.assertRaisesRegex(PartitionError, "leaf 'b/kernel'.*\n.*'.\\*/bias'"):
            partition.labels(params, [(r".*/bias", "train")])

    def test_dead_rule_is_named(self):
        params = {"a": {"bias": 1.0}, "b": {"kernel": 2.0}}
        with self.assertRaisesRegex(PartitionError, r"rule 1 \('nope/\.\*', 'x'\) catches no"):
            partition.labels(params, [(r".*/bias", "t"), (r"nope/.*", "x"), (".*", "frozen")])

    def test_rule_shadowed_by_earlier_rule_is_dead(self):
        params = {"a": {"bias": 1.0}, "b": {"kernel": 2.0}}
        with self.assertRaisesRegex(PartitionError, r"rule 1 .*catches no leaf"):
            partition.labels(params, [(".*", "train"), (r"a/.*", "head")])

    def test_invalid_regex_is_named(self):
        with self.assertRaisesRegex(PartitionError, r"invalid regex '\(a'"):
            partition.labels({"a": 1.0}, [("(a", "x")])

    def test_is_a_value_error(self):
        self.assertTrue(issubclass(PartitionError, ValueError))
        with self.assertRaises(ValueError):
            partition.labels({"a": 1.0}, [])

    def test_summary_counts(self):
        params = bert_tree()
        rules = partition.preset_rules("bitfit", 4)
        text = partition.summary(params, partition.labels(params, rules), rules)
        total = partition.count_params(params)
        biases = [x for p, x in flat_labels(params).items() if p.endswith("/bias")]
        bias_rows = [line for line in text.splitlines() if line.startswith(".*/bias")]
        self.assertLen(bias_rows, 1)
        # classifier/bias belongs to the head rule, which comes first.
        self.assertIn(f" {len(biases) - 1} ", bias_rows[0])
        self.assertIn(f"{total:,}", text)
        self.assertRegex(text, r"\(all\)\s+\d+\s+[\d,]+\s+100\.00")
        self.assertIn("(trainable)", text)


class PresetTest(parameterized.TestCase):
    def test_full(self):
        params = bert_tree()
        labs = flat_labels(partition.labels(params, partition.preset_rules("full", 4)))
        self.assertEqual(labs["classifier/kernel"], "head")
        self.assertEqual(set(labs.values()), {"head", "train"})

    @parameterized.parameters(False, True)
    def test_head(self, distil):
        params = bert_tree(distil=distil)
        head = {p for p in tree_paths.leaf_paths(params) if "classifier" in p}
        self.assertLen(head, 4 if distil else 2)
        self.assertEqual(trained_paths(params, "head"), head)

    def test_bitfit(self):
        params = bert_tree()
        expected = {p for p in tree_paths.leaf_paths(params) if p.endswith("/bias")}
        self.assertEqual(trained_paths(params, "bitfit"), expected | {"classifier/kernel"})

    def test_layernorm(self):
        params = bert_tree(distil=True)
        expected = {p for p in tree_paths.leaf_paths(params) if "layer_norm" in p}
        self.assertLen(expected, 2 + 4 * 4)
        head = {p for p in tree_paths.leaf_paths(params) if "classifier" in p}
        self.assertEqual(trained_paths(params, "layernorm"), expected | head)

    @parameterized.parameters(
        ("layers:4,5", 8, [4, 5]),
        ("layers:4-5", 8, [4, 5]),
        ("layers:0,3-5", 8, [0, 3, 4, 5]),
        ("layers: 5, 4,4", 8, [4, 5]),
        ("layers:top2", 8, [6, 7]),
        ("layers:top1", 1, [0]),
    )
    def test_layer_selection(self, spec, num_layers, expected):
        rules = partition.preset_rules(spec, num_layers)
        params = bert_tree(num_layers)
        labs = flat_labels(partition.labels(params, rules))
        got = {partition.layer_index(p) for p, lab in labs.items() if lab == "train"}
        got.discard(None)  # the pooler
        self.assertEqual(sorted(got), expected)

    @parameterized.parameters(False, True)
    def test_pooler_trains_with_top_layer(self, distil):
        params = bert_tree(distil=distil)
        head = {p for p in tree_paths.leaf_paths(params) if "classifier" in p}
        top = trained_paths(params, "layers:top1")
        pooler = {"pooler/dense/kernel", "pooler/dense/bias"}
        layer3 = {p for p in tree_paths.leaf_paths(params) if p.startswith("encoder/layer_3/")}
        self.assertEqual(top, layer3 | head | (set() if distil else pooler))
        middle = trained_paths(params, "layers:1-2")
        self.assertEqual({partition.layer_index(p) for p in middle - head}, {1, 2})

    @parameterized.parameters(
        "layers:4", "layers:2-7", "layers:top5", "layers:top0", "layers:", "layers:a", "layers:3-1"
    )
    def test_bad_layers(self, spec):
        with self.assertRaises(PartitionError):
            partition.preset_rules(spec, 4)

    def test_unknown_preset_lists_presets(self):
        with self.assertRaisesRegex(PartitionError, "'lora'.*full, head, bitfit, layernorm"):
            partition.preset_rules("lora", 4)

    def test_custom_head(self):
        rules = partition.preset_rules("head", 4, head=r"classifier/kernel")
        self.assertEqual(trained_paths(bert_tree(), "head", head=r"classifier/kernel"),
                         {"classifier/kernel"})
        self.assertEqual(rules[0], ("classifier/kernel", "head"))


def write_distances(directory, pre, ft, name="distances.json"):
    """Writes the grouped table and ranking with the real fft.distances/fft.analyze output code."""
    groups = distances.grouped(pre, ft)
    ranking = distances.rank_layers(groups, "rel_l1", include=r"layer_\d+")
    path = os.path.join(directory, name)
    analyze.write_json({"groups": groups, "ranking": ranking}, path)
    return path, [r["group"] for r in ranking]


def moved_pair(order, num_layers=4):
    """A pretrained/fine-tuned pair where encoder layers moved in the given order (most first)."""
    pre = bert_tree(num_layers)
    flat = dict(zip(tree_paths.leaf_paths(pre), jax.tree.leaves(pre)))
    scale = {f"layer_{i}": 0.1 * (num_layers - r) for r, i in enumerate(order)}
    ft = {}
    for path, x in flat.items():
        m = re.match(r"encoder/(layer_\d+)/", path)
        ft[path] = x * (1 + scale[m.group(1)] if m else 1.0001)
    return flat, ft


class CriticalTest(absltest.TestCase):
    def test_reads_analyze_report(self):
        pre, ft = moved_pair([2, 0, 3, 1])
        out = self.create_tempdir().full_path
        report = analyze.write_report(pre, ft, out, distances.Tol(), top_k=2)
        self.assertEqual(report["critical_layers"], ["layer_2", "layer_0"])
        path = os.path.join(out, "distances.json")
        self.assertEqual(partition.ranked_layers(path), [2, 0, 3, 1])
        rules = partition.preset_rules("critical:3", 4, distances_file=path)
        self.assertEqual(rules, partition.preset_rules("layers:0,2,3", 4))

    def test_bare_table_and_ranking(self):
        pre, ft = moved_pair([1, 3, 0, 2])
        out = self.create_tempdir().full_path
        table = distances.grouped(pre, ft)
        for name, obj in [("table.json", table), ("rank.json", distances.rank_layers(table)),
                          ("groups.json", {"groups": table})]:
            path = os.path.join(out, name)
            analyze.write_json(obj, path)
            self.assertEqual(partition.ranked_layers(path), [1, 3, 0, 2], name)

    def test_written_with_helper(self):
        pre, ft = moved_pair([3, 2, 1, 0])
        path, order = write_distances(self.create_tempdir().full_path, pre, ft)
        self.assertEqual(order, ["layer_3", "layer_2", "layer_1", "layer_0"])
        rules = partition.preset_rules("critical:1", 4, distances_file=path)
        self.assertEqual(rules, partition.preset_rules("layers:3", 4))
        self.assertIn("pooler", rules[1][0])

    def test_errors(self):
        with self.assertRaisesRegex(PartitionError, "distances_file"):
            partition.preset_rules("critical:2", 4)
        with self.assertRaisesRegex(PartitionError, "not found"):
            partition.preset_rules("critical:2", 4, distances_file="/nonexistent/d.json")
        out = self.create_tempdir()
        no_layers = out.create_file("x.json", json.dumps({"groups": {"pooler": {"rel_l1": 1.0}}}))
        with self.assertRaisesRegex(PartitionError, "no encoder-layer groups"):
            partition.preset_rules("critical:1", 4, distances_file=no_layers.full_path)
        junk = out.create_file("y.json", json.dumps([1, 2]))
        with self.assertRaisesRegex(PartitionError, "unrecognised"):
            partition.ranked_layers(junk.full_path)
        pre, ft = moved_pair([0, 1, 2, 3])
        path, _ = write_distances(out.full_path, pre, ft)
        with self.assertRaisesRegex(PartitionError, "ranks only 4"):
            partition.preset_rules("critical:5", 4, distances_file=path)
        with self.assertRaisesRegex(PartitionError, "another model"):
            partition.preset_rules("critical:4", 2, distances_file=path)
        with self.assertRaisesRegex(PartitionError, "positive integer"):
            partition.preset_rules("critical:0", 4, distances_file=path)


class SplitTest(parameterized.TestCase):
    @parameterized.parameters("full", "head", "bitfit", "layernorm", "layers:1,3")
    def test_round_trip_is_exact(self, spec):
        params = bert_tree()
        label_tree = partition.labels(params, partition.preset_rules(spec, 4))
        trainable, frozen = partition.split(params, label_tree)
        t_paths, f_paths = set(tree_paths.leaf_paths(trainable)), set(tree_paths.leaf_paths(frozen))
        self.assertEmpty(t_paths & f_paths)
        self.assertEqual(t_paths | f_paths, set(tree_paths.leaf_paths(params)))
        merged = steps.merge_trees(trainable, frozen)
        self.assertEqual(jax.tree.structure(merged), jax.tree.structure(params))
        for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params)):
            self.assertIs(a, b)
        t_labels = partition.trainable_labels(label_tree)
        self.assertEqual(jax.tree.structure(t_labels), jax.tree.structure(trainable))
        self.assertNotIn("frozen", jax.tree.leaves(t_labels))

    def test_pruned_and_plain_dicts(self):
        params = {"a": {"b": {"c": 1.0}}, "d": {"e": 2.0, "f": 3.0}}
        label_tree = {"a": {"b": {"c": "frozen"}}, "d": {"e": "train", "f": "frozen"}}
        trainable, frozen = partition.split(params, label_tree)
        self.assertEqual(trainable, {"d": {"e": 2.0}})
        self.assertEqual(frozen, {"a": {"b": {"c": 1.0}}, "d": {"f": 3.0}})
        self.assertEqual(partition.split(params, jax.tree.map(lambda _: "frozen", params))[0], {})

    def test_mismatched_label_tree(self):
        with self.assertRaisesRegex(PartitionError, "'d'"):
            partition.split({"a": 1.0, "d": {"e": 2.0}}, {"a": "train", "d": "train"})


def num_leaves(tree):
    return len(jax.tree.leaves(tree))


class OptimizerTest(absltest.TestCase):
    def test_frozen_leaves_have_no_state(self):
        params = bert_tree()
        label_tree = partition.labels(params, partition.preset_rules("bitfit", 4))
        trainable, _ = partition.split(params, label_tree)
        tx = partition.make_optimizer(
            partition.trainable_labels(label_tree),
            {"train": optax.adam(1e-3), "head": optax.adam(1e-2), "unused": optax.sgd(1.0)},
        )
        state = tx.init(trainable)
        n = num_leaves(trainable)
        self.assertLess(n, num_leaves(params))
        # adam: mu and nu per trainable leaf + one step count per label group.
        self.assertEqual(num_leaves(state), 2 * n + 2)
        self.assertEqual(partition.count_params(state), 2 * partition.count_params(trainable) + 2)
        full_state = optax.adam(1e-3).init(params)
        self.assertEqual(num_leaves(full_state), 2 * num_leaves(params) + 1)

    def test_learning_rate_per_label(self):
        params = {"enc": {"w": jnp.ones(3)}, "classifier": {"w": jnp.ones(2)}}
        label_tree = {"enc": {"w": "train"}, "classifier": {"w": "head"}}
        tx = partition.make_optimizer(label_tree, {"train": optax.sgd(0.1), "head": optax.sgd(2.0)})
        grads = {"enc": {"w": jnp.full(3, 0.5)}, "classifier": {"w": jnp.full(2, 0.25)}}
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        np.testing.assert_allclose(updates["enc"]["w"], np.full(3, -0.05), rtol=1e-6)
        np.testing.assert_allclose(updates["classifier"]["w"], np.full(2, -0.5), rtol=1e-6)

    def test_errors(self):
        with self.assertRaisesRegex(PartitionError, r"\['head'\]"):
            partition.make_optimizer({"a": "train", "b": "head"}, {"train": optax.sgd(1.0)})
        with self.assertRaisesRegex(PartitionError, "trainable_labels"):
            partition.make_optimizer({"a": "train", "b": "frozen"}, {"train": optax.sgd(1.0)})
        with self.assertRaisesRegex(PartitionError, "no trainable"):
            partition.make_optimizer({}, {"train": optax.sgd(1.0)})


if __name__ == "__main__":
    absltest.main()
