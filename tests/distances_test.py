"""Tests for fft.distances: hand-computed values, properties, a float64 reference, grouping."""

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fft import distances

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


def bert_paths(num_layers=12, distil=False):
    """Every parameter path of a BERT (or DistilBERT) classifier, per docs/CONTRACT.md."""
    paths = ["embeddings/word_embeddings/embedding", "embeddings/position_embeddings/embedding"]
    paths += [] if distil else ["embeddings/token_type_embeddings/embedding"]
    paths += ["embeddings/layer_norm/scale", "embeddings/layer_norm/bias"]
    sub = [f"attention/{n}/{k}" for n in ("query", "key", "value") for k in ("kernel", "bias")]
    sub += ["attention/output/dense/kernel", "attention/output/dense/bias"]
    sub += ["attention/output/layer_norm/scale", "attention/output/layer_norm/bias"]
    sub += ["intermediate/dense/kernel", "intermediate/dense/bias", "output/dense/kernel"]
    sub += ["output/dense/bias", "output/layer_norm/scale", "output/layer_norm/bias"]
    paths += [f"encoder/layer_{i}/{s}" for i in range(num_layers) for s in sub]
    paths += ["pre_classifier/dense/kernel", "pre_classifier/dense/bias"] if distil else []
    paths += [] if distil else ["pooler/dense/kernel", "pooler/dense/bias"]
    return paths + ["classifier/kernel", "classifier/bias"]


def random_pair(paths, seed=0, shape=(3, 4)):
    rng = np.random.default_rng(seed)
    pre = {p: rng.normal(size=shape).astype(np.float32) for p in paths}
    ft = {p: (x + 0.1 * rng.normal(size=shape)).astype(np.float32) for p, x in pre.items()}
    return pre, ft


def reference(pairs, tol=(0.0, 0.0)):
    """Float64 NumPy measures over a list of (pre, ft) array pairs."""
    p = np.concatenate([np.ravel(a).astype(np.float64) for a, _ in pairs])
    f = np.concatenate([np.ravel(b).astype(np.float64) for _, b in pairs])
    d = f - p
    n_pre, n_ft, l2 = np.linalg.norm(p), np.linalg.norm(f), np.linalg.norm(d)
    cosine = p @ f / (n_pre * n_ft)
    return {
        "l1": np.abs(d).sum(),
        "l2": l2,
        "linf": np.abs(d).max(),
        "rel_l1": np.abs(d).sum() / np.abs(p).sum(),
        "rel_l2": l2 / n_pre,
        "cosine": cosine,
        "angle": np.arccos(np.clip(cosine, -1, 1)),
        "frac_changed": np.mean(np.abs(d) > tol[0] + tol[1] * np.abs(p)),
        "norm_pretrained": n_pre,
        "norm_finetuned": n_ft,
    }


class HandComputedTest(parameterized.TestCase):
    def test_per_leaf_and_total(self):
        pre = {"a": jnp.array([1.0, 2.0, 3.0]), "b": {"c": jnp.eye(2)}}
        ft = {"a": jnp.array([1.0, 2.0, 4.0]), "b": {"c": jnp.array([[1.0, 0.0], [0.0, -1.0]])}}
        names = ("l1", "l2", "linf", "rel_l1", "rel_l2", "cosine", "angle", "frac_changed")
        cos_a, cos_total = 17 / math.sqrt(14 * 21), 17 / (4 * math.sqrt(23))
        expected = {
            # d = (0, 0, 1); |pre|_1 = 6, |pre|_2^2 = 14, |ft|_2^2 = 21, <pre, ft> = 17.
            "a": (1, 1, 1, 1 / 6, 1 / math.sqrt(14), cos_a, math.acos(cos_a), 1 / 3),
            # d = (0, 0, 0, -2); pre and ft are orthogonal.
            "b/c": (2, 2, 2, 1, math.sqrt(2), 0, math.pi / 2, 1 / 4),
            # Sums of statistics: |pre|_1 = 8, |pre|^2 = 16, |ft|^2 = 23, <pre, ft> = 17.
            "total": (
                3,
                math.sqrt(5),
                2,
                3 / 8,
                math.sqrt(5) / 4,
                cos_total,
                math.acos(cos_total),
                2 / 7,
            ),
        }
        norms = {"a": (14, 21), "b/c": (2, 2), "total": (16, 23)}
        table = distances.per_leaf(pre, ft)
        self.assertEqual(list(table), ["a", "b/c", "total"])
        for name, values in expected.items():
            self.assertEqual(list(table[name]), list(distances.MEASURES))
            want = dict(zip(names, values))
            want["norm_pretrained"], want["norm_finetuned"] = map(math.sqrt, norms[name])
            for measure, value in want.items():
                self.assertAlmostEqual(float(table[name][measure]), value, places=6, msg=measure)

    def test_groups_sum_statistics_not_ratios(self):
        pre = {
            "embeddings/word_embeddings/embedding": np.array([[1.0, -1.0]], np.float32),
            "encoder/layer_0/attention/query/kernel": np.array([[2.0]], np.float32),
            "encoder/layer_0/output/dense/bias": np.array([6.0], np.float32),
        }
        ft = {**pre, "encoder/layer_0/attention/query/kernel": np.array([[3.0]], np.float32)}
        coarse = distances.grouped(pre, ft)
        self.assertEqual(list(coarse), ["embeddings", "layer_0", "total"])
        # layer_0: l1 = 1 over |pre|_1 = 2 + 6; averaging the leaf ratios would give (1/2 + 0)/2.
        self.assertAlmostEqual(float(coarse["layer_0"]["rel_l1"]), 1 / 8, places=7)
        self.assertAlmostEqual(float(coarse["layer_0"]["frac_changed"]), 1 / 2, places=7)
        self.assertAlmostEqual(float(coarse["embeddings"]["l1"]), 0.0)
        self.assertAlmostEqual(float(coarse["total"]["rel_l1"]), 1 / 10, places=7)
        fine = distances.grouped(pre, ft, distances.DEFAULT_SUBLAYER_GROUPS)
        self.assertEqual(list(fine), ["embeddings", "layer_0/attention", "layer_0/ffn", "total"])
        self.assertAlmostEqual(float(fine["layer_0/attention"]["rel_l1"]), 1 / 2, places=7)
        self.assertAlmostEqual(float(fine["layer_0/ffn"]["rel_l1"]), 0.0)

    @parameterized.named_parameters(
        # (name, pretrained, finetuned, (rel_l1, angle, cosine))
        ("both_zero", [0.0, 0.0], [0.0, 0.0], (0, 0, 1)),
        ("zero_pretrained", [0.0, 0.0], [0.0, 2.0], (math.inf, math.pi / 2, 0)),
        ("zero_finetuned", [1.0, 0.0], [0.0, 0.0], (1, math.pi / 2, 0)),
        ("opposite", [1.0, 2.0], [-1.0, -2.0], (2, math.pi, -1)),
        ("identical", [3.0, -4.0], [3.0, -4.0], (0, 0, 1)),
    )
    def test_degenerate_cases(self, pre, ft, want):
        pre, ft = {"w": np.array(pre, np.float32)}, {"w": np.array(ft, np.float32)}
        total = distances.per_leaf(pre, ft)
        for measure, value in zip(("rel_l1", "angle", "cosine"), want):
            self.assertAlmostEqual(float(total["total"][measure]), value, places=6, msg=measure)

    def test_small_angle_is_accurate(self):
        # float32 arccos(cos 1e-4) is 0 or ~3.5e-4; the triangle formula gets 1e-4.
        theta = 1e-4
        pre = {"w": np.array([1.0, 0.0], np.float32)}
        ft = {"w": np.array([math.cos(theta), math.sin(theta)], np.float32)}
        angle = float(distances.per_leaf(pre, ft)["total"]["angle"])
        self.assertAlmostEqual(angle / theta, 1.0, places=3)

    def test_scalar_leaf_and_tolerance(self):
        pre = {"s": np.float32(2.0), "v": np.array([1.0, 1.0, 10.0], np.float32)}
        ft = {"s": np.float32(2.5), "v": np.array([1.05, 1.2, 10.5], np.float32)}
        # Changed when |d| > 0.1 + 0.04 |pre|: s (0.5 > 0.18), v[1] (0.2 > 0.14); not v[0], v[2].
        table = distances.per_leaf(pre, ft, tol=distances.Tol(atol=0.1, rtol=0.04))
        self.assertAlmostEqual(float(table["s"]["frac_changed"]), 1.0)
        self.assertAlmostEqual(float(table["v"]["frac_changed"]), 1 / 3, places=6)
        self.assertAlmostEqual(float(table["total"]["frac_changed"]), 2 / 4, places=6)
        everything = distances.per_leaf(pre, ft, tol=0.0)["total"]["frac_changed"]
        self.assertAlmostEqual(float(everything), 1.0)


class PropertyTest(absltest.TestCase):
    @staticmethod
    def tree(draw_w, draw_b):
        return {"w": draw_w, "b": {"c": draw_b}}

    values = st.floats(-10, 10, width=32, allow_subnormal=False)
    w = hnp.arrays(np.float32, (4, 3), elements=values)
    b = hnp.arrays(np.float32, (5,), elements=values)

    @PROPERTY
    @given(w, b)
    def test_distance_to_itself_is_zero(self, w, b):
        table = distances.per_leaf(self.tree(w, b), self.tree(w.copy(), b.copy()))
        for row in table.values():
            for measure in ("l1", "l2", "linf", "rel_l1", "rel_l2", "angle", "frac_changed"):
                self.assertEqual(float(row[measure]), 0.0, msg=measure)

    @PROPERTY
    @given(w, b, w, b)
    def test_symmetry_and_ranges(self, w1, b1, w2, b2):
        x, y = self.tree(w1, b1), self.tree(w2, b2)
        xy, yx = distances.per_leaf(x, y), distances.per_leaf(y, x)
        for name in xy:
            for measure in ("l1", "l2", "linf", "angle", "cosine", "frac_changed"):
                np.testing.assert_allclose(xy[name][measure], yx[name][measure], rtol=1e-6)
            self.assertBetween(float(xy[name]["angle"]), 0.0, math.pi)
            self.assertBetween(float(xy[name]["cosine"]), -1.0, 1.0)

    @PROPERTY
    @given(w, b, w, b, w, b)
    def test_triangle_inequality(self, w1, b1, w2, b2, w3, b3):
        x, y, z = self.tree(w1, b1), self.tree(w2, b2), self.tree(w3, b3)
        xy, yz = distances.per_leaf(x, y)["total"], distances.per_leaf(y, z)["total"]
        xz = distances.per_leaf(x, z)["total"]
        for measure in ("l1", "l2"):
            bound = float(xy[measure]) + float(yz[measure])
            self.assertLessEqual(float(xz[measure]), bound * (1 + 1e-6) + 1e-6, msg=measure)

    @PROPERTY
    @given(w, b, st.floats(0.1, 10.0))
    def test_scaling_keeps_angle_zero(self, w, b, c):
        x = self.tree(w, b)
        table = distances.per_leaf(x, jax.tree.map(lambda a: (a * c).astype(np.float32), x))
        for name, row in table.items():
            self.assertLess(float(row["angle"]), 2e-3, msg=name)


class ReferenceTest(parameterized.TestCase):
    def test_per_leaf_grouped_and_total_match_float64(self):
        rng = np.random.default_rng(1)
        paths = bert_paths(num_layers=2)
        pre = {p: rng.normal(size=(rng.integers(1, 9), 8)).astype(np.float32) for p in paths}
        # A third of the entries unchanged, some below tolerance, the rest clearly moved.
        kind = {p: rng.integers(0, 3, x.shape) for p, x in pre.items()}
        noise = {
            p: np.choose(kind[p], [0.0, 1e-6, 0.3 * rng.normal(size=x.shape) + 0.1])
            for p, x in pre.items()
        }
        ft = {p: (pre[p] + noise[p]).astype(np.float32) for p in paths}
        tol = distances.Tol(atol=1e-4, rtol=1e-3)
        leaves = distances.per_leaf(pre, ft, tol)
        for path in paths:
            self.assert_matches(leaves[path], reference([(pre[path], ft[path])], tol), path)
        total = reference([(pre[p], ft[p]) for p in paths], tol)
        self.assert_matches(leaves["total"], total, "total")
        for rules in (distances.DEFAULT_LAYER_GROUPS, distances.DEFAULT_SUBLAYER_GROUPS):
            table = distances.grouped(pre, ft, rules, tol)
            for group, members in distances.assign_groups(paths, rules).items():
                want = reference([(pre[p], ft[p]) for p in members], tol)
                self.assert_matches(table[group], want, group)
            self.assert_matches(table["total"], total, "total")

    def assert_matches(self, got, want, name):
        for measure, value in want.items():
            np.testing.assert_allclose(got[measure], value, rtol=2e-5, atol=1e-7, err_msg=name)

    def test_bf16_accumulates_in_float32(self):
        # 100_000 diffs of 2**-7 (bf16's step above 1): a bf16 accumulator stalls far below 781.25.
        n = 100_000
        pre = {"w": jnp.ones((n // 100, 100), jnp.bfloat16)}
        ft = {"w": jnp.full((n // 100, 100), 1.0078125, jnp.bfloat16)}
        stats = distances.leaf_stats(pre, ft)["w"]
        self.assertEqual(np.asarray(stats.l1).dtype, np.float32)
        self.assertEqual(float(stats.l1), 781.25)
        self.assertEqual(float(stats.pre_l1), n)
        np.testing.assert_allclose(float(stats.ft_sq), n * 1.0078125**2, rtol=1e-6)
        self.assertEqual(int(stats.n_changed), n)
        # Random bf16 values against a float64 sum of the same values.
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(256, 512)), jnp.bfloat16)
        y = jnp.asarray(rng.normal(size=(256, 512)), jnp.bfloat16)
        want = np.abs(np.asarray(y, np.float64) - np.asarray(x, np.float64)).sum()
        bf16_rounding = abs(float(jnp.bfloat16(want)) - want) / want
        self.assertGreater(bf16_rounding, 1e-4)  # a bf16 result could not be this close:
        got = float(distances.leaf_stats({"w": x}, {"w": y})["w"].l1)
        self.assertLess(abs(got - want) / want, 1e-5)


BASE = {"a": np.zeros((2, 3), np.float32), "b": {"c": np.zeros(4, np.float32)}}


class StructureTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("missing", {"a": np.zeros((2, 3), np.float32), "b": {}}, "b/c", "missing"),
        ("extra", {**BASE, "d": np.zeros(1, np.float32)}, "d", "extra leaf"),
        ("shape", {**BASE, "a": np.zeros((3, 2), np.float32)}, "a", r"shape mismatch.*\(3, 2\)"),
        (
            "dtype",
            {**BASE, "b": {"c": np.zeros(4, jnp.bfloat16)}},
            "b/c",
            "dtype mismatch.*bfloat16",
        ),
    )
    def test_mismatch_names_first_path(self, other, path, message):
        for fn in (distances.check_same_structure, distances.per_leaf, distances.grouped):
            with self.assertRaisesRegex(distances.TreeMismatchError, message) as cm:
                fn(BASE, other)
            self.assertEqual(cm.exception.path, path)
            self.assertIn(f"'{path}'", str(cm.exception))
            self.assertIsInstance(cm.exception, ValueError)

    def test_nested_and_flat_trees_compare(self):
        flat = {"a": BASE["a"], "b/c": BASE["b"]["c"]}
        distances.check_same_structure(BASE, flat)
        distances.check_same_structure(BASE, jax.eval_shape(lambda: BASE))


class GroupingTest(parameterized.TestCase):
    def test_default_layer_groups_in_model_order(self):
        groups = distances.assign_groups(bert_paths(12))
        layers = [f"layer_{i}" for i in range(12)]
        self.assertEqual(list(groups), ["embeddings", *layers, "pooler", "head"])
        self.assertLen(groups["layer_10"], 16)
        self.assertEqual(groups["head"], ["classifier/kernel", "classifier/bias"])

    def test_default_sublayer_groups(self):
        groups = distances.assign_groups(bert_paths(11), distances.DEFAULT_SUBLAYER_GROUPS)
        halves = [f"layer_{i}/{h}" for i in range(11) for h in ("attention", "ffn")]
        self.assertEqual(list(groups), ["embeddings", *halves, "pooler", "head"])
        self.assertLen(groups["layer_3/attention"], 10)
        self.assertIn("encoder/layer_3/output/layer_norm/scale", groups["layer_3/ffn"])

    def test_distilbert_and_unknown_leaves(self):
        paths = [*bert_paths(2, distil=True), "adapter/kernel", "encoder/layer_1/learner/w"]
        groups = distances.assign_groups(paths, distances.DEFAULT_SUBLAYER_GROUPS)
        want = [
            "embeddings",
            "layer_0/attention",
            "layer_0/ffn",
            "layer_1/attention",
            "layer_1/ffn",
            "layer_1/other",
            "head",
            "other",
        ]
        self.assertEqual(list(groups), want)
        self.assertEqual(groups["other"], ["adapter/kernel"])
        self.assertIn("pre_classifier/dense/kernel", groups["head"])

    def test_custom_rules_with_backrefs_and_no_match(self):
        rules = ((r"encoder/layer_(\d+)/(attention|output)/.*", r"block_\1_\2"), (r".*", "rest"))
        paths = ["encoder/layer_10/output/x", "encoder/layer_2/attention/y", "pooler/z"]
        groups = distances.assign_groups(paths, rules)
        self.assertEqual(list(groups), ["block_2_attention", "block_10_output", "rest"])
        with self.assertRaisesRegex(ValueError, "pooler/z"):
            distances.assign_groups(paths, rules[:1])

    def test_sort_groups_restores_order_after_jit(self):
        paths = ["embeddings/e", *[f"encoder/layer_{i}/output/dense/bias" for i in range(11)]]
        pre, ft = random_pair([*paths, "pooler/dense/bias", "classifier/bias"], shape=(2,))
        table = distances.make_distance_fn()(pre, ft)
        self.assertNotEqual(list(table)[:3], ["embeddings", "layer_0", "layer_1"])  # jit sorted
        ordered = distances.sort_groups(table)
        self.assertEqual(list(ordered), list(distances.grouped(pre, ft)))


class JitAndShardingTest(absltest.TestCase):
    def test_make_distance_fn_matches_and_compiles_once(self):
        pre, ft = random_pair(bert_paths(2), seed=3)
        fn = distances.make_distance_fn(distances.DEFAULT_SUBLAYER_GROUPS)
        pre, ft = jax.tree.map(jnp.asarray, pre), jax.tree.map(jnp.asarray, ft)
        first = fn(pre, ft)
        second = fn(pre, jax.tree.map(lambda x: x + 1.0, ft))
        self.assertEqual(fn._cache_size(), 1)  # same structure: no second compile
        self.assertNotEqual(float(first["total"]["l1"]), float(second["total"]["l1"]))
        second = fn(pre, ft)
        self.assertIsInstance(second["layer_1/ffn"]["angle"], jax.Array)
        want = distances.grouped(pre, ft, distances.DEFAULT_SUBLAYER_GROUPS)
        self.assertEqual(set(first), set(want))
        for group, row in want.items():
            for measure, value in row.items():
                np.testing.assert_allclose(second[group][measure], value, rtol=1e-6)

    def test_leaf_stats_under_jit_and_global_l2(self):
        pre, ft = random_pair(bert_paths(1), seed=4)
        eager, jitted = distances.leaf_stats(pre, ft), jax.jit(distances.leaf_stats)(pre, ft)
        for path in eager:
            for a, b in zip(eager[path], jitted[path]):
                np.testing.assert_allclose(a, b, rtol=1e-6)
        total_l2 = distances.per_leaf(pre, ft)["total"]["l2"]
        np.testing.assert_allclose(jax.jit(distances.global_l2)(pre, ft), total_l2, rtol=1e-5)

    def test_sharded_inputs_reduce_in_place(self):
        if jax.device_count() < 4:
            self.skipTest("needs 4 devices (tests/conftest.py fakes 8 CPU devices)")
        mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("data", "model"))
        rng = np.random.default_rng(5)
        shapes = {"embeddings/e": (64, 512), "encoder/layer_0/attention/k": (32, 512)}
        shapes["encoder/layer_0/output/b"] = (512,)
        specs = {
            "embeddings/e": P("data", "model"),
            "encoder/layer_0/attention/k": P(None, "model"),
        }
        specs["encoder/layer_0/output/b"] = P("data")
        pre = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
        ft = {k: x + 0.01 * rng.normal(size=x.shape).astype(np.float32) for k, x in pre.items()}
        shardings = {k: NamedSharding(mesh, spec) for k, spec in specs.items()}
        put = lambda tree: {k: jax.device_put(x, shardings[k]) for k, x in tree.items()}
        fn = distances.make_distance_fn()
        hlo = fn.lower(put(pre), put(ft)).compile().as_text()
        # Only partial sums cross devices (9 statistics per row and shard when a leaf's last axis
        # is sharded, 9 scalars per shard otherwise), never parameters.
        shapes_gathered = re.findall(r"= \w+\[([\d,]*)\][^=]*all-gather\(", hlo)
        gathered = [math.prod(int(n) for n in re.findall(r"\d+", m)) for m in shapes_gathered]
        params = sum(math.prod(s) for s in shapes.values())
        self.assertLess(sum(gathered), 0.05 * params)
        table = fn(put(pre), put(ft))
        want = distances.grouped(pre, ft)
        for group, row in want.items():
            for measure, value in row.items():
                np.testing.assert_allclose(table[group][measure], value, rtol=1e-5, atol=1e-7)


def adapter_leaves(num_layers, seed=9, size=3, hidden=4):
    """Adapter leaves (both sites) as a fine-tuned adapter model has them, absent before."""
    rng = np.random.default_rng(seed)
    shapes = {"down/kernel": (hidden, size), "down/bias": (size,), "up/kernel": (size, hidden)}
    shapes["up/bias"] = (hidden,)
    blocks = ("attention/output", "output")
    return {
        f"encoder/layer_{i}/{b}/adapter/{k}": rng.normal(size=s).astype(np.float32)
        for i in range(num_layers)
        for b in blocks
        for k, s in shapes.items()
    }


class NewLeavesTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.pre, self.ft = random_pair(bert_paths(2), seed=6, shape=(3, 4))
        self.new = adapter_leaves(2)
        self.ft_new = {**self.ft, **self.new}

    def assert_same_rows(self, got, want):
        for group, row in want.items():
            for measure, value in row.items():
                np.testing.assert_array_equal(got[group][measure], value, err_msg=group)

    @parameterized.named_parameters(
        ("layers", distances.DEFAULT_LAYER_GROUPS, ["new/layer_0", "new/layer_1"]),
        (
            "sublayers",
            distances.DEFAULT_SUBLAYER_GROUPS,
            [f"new/layer_{i}/{h}" for i in range(2) for h in ("attention", "ffn")],
        ),
    )
    def test_grouped_reports_new_groups_apart(self, rules, new_groups):
        table = distances.grouped(self.pre, self.ft_new, rules)
        plain = distances.grouped(self.pre, self.ft, rules)
        self.assertEqual(list(table), [*list(plain)[:-1], *new_groups, distances.TOTAL])
        self.assert_same_rows(table, plain)  # shared groups and the total are unchanged
        members = distances.assign_groups(self.new, rules)
        for group in new_groups:
            leaves = [self.new[p] for p in members[group.removeprefix(distances.NEW_PREFIX)]]
            norm = np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in leaves))
            row = table[group]
            self.assertEqual(list(row), list(distances.MEASURES))
            np.testing.assert_allclose(row["norm_finetuned"], norm, rtol=1e-6)
            for measure in distances.MEASURES:
                if measure != "norm_finetuned":
                    self.assertTrue(np.isnan(row[measure]), msg=(group, measure))

    def test_per_leaf_and_leaf_stats(self):
        table = distances.per_leaf(self.pre, self.ft_new)
        plain = distances.per_leaf(self.pre, self.ft)
        self.assertEqual(set(table), set(plain) | set(self.new))
        self.assertEqual(list(table)[-1], distances.TOTAL)
        self.assert_same_rows(table, plain)
        path = "encoder/layer_1/output/adapter/up/kernel"
        order = list(table)  # natural path order: the adapter after its layer's attention
        self.assertLess(order.index("encoder/layer_1/attention/query/kernel"), order.index(path))
        np.testing.assert_allclose(
            table[path]["norm_finetuned"], np.linalg.norm(self.new[path]), rtol=1e-6
        )
        self.assertTrue(np.isnan(table[path]["l2"]))
        stats = distances.leaf_stats(self.pre, self.ft_new)[path]
        self.assertEqual(int(stats.size), self.new[path].size)
        np.testing.assert_allclose(stats.ft_sq, np.sum(self.new[path] ** 2), rtol=1e-6)
        self.assertEqual(float(stats.pre_sq), 0.0)

    def test_jitted_fn_ranking_and_json(self):
        fn = distances.make_distance_fn(distances.DEFAULT_SUBLAYER_GROUPS)
        jitted = fn(self.pre, self.ft_new)
        want = distances.grouped(self.pre, self.ft_new, distances.DEFAULT_SUBLAYER_GROUPS)
        ordered = distances.sort_groups(jitted, distances.DEFAULT_SUBLAYER_GROUPS)
        self.assertEqual(list(ordered), list(want))
        for group, row in want.items():
            for measure, value in row.items():
                np.testing.assert_allclose(ordered[group][measure], value, rtol=1e-6)
        ranking = distances.rank_layers(want)
        self.assertTrue(all(r["group"].startswith("new/") for r in ranking[-4:]))  # NaN last
        self.assertEqual(distances.critical_layers(ranking, 1, r"layer_\d+/\w+")[0][:6], "layer_")
        json.dumps(distances.to_jsonable(want), allow_nan=False)

    def test_new_groups_in_natural_order(self):
        names = ["new/layer_10", "total", "new/layer_2", "head", "new/embeddings", "layer_3"]
        ordered = sorted(names, key=lambda n: distances.group_sort_key(n, distances.DEFAULT_GROUPS))
        want = ["layer_3", "head", "new/embeddings", "new/layer_2", "new/layer_10", "total"]
        self.assertEqual(ordered, want)

    def test_strict_and_missing(self):
        path = "encoder/layer_0/attention/output/adapter/down/bias"
        with self.assertRaisesRegex(distances.TreeMismatchError, "extra leaf") as cm:
            distances.grouped(self.pre, self.ft_new, new=None)
        self.assertEqual(cm.exception.path, path)
        with self.assertRaisesRegex(distances.TreeMismatchError, "extra leaf") as cm:
            distances.check_same_structure(self.pre, self.ft_new)
        distances.check_same_structure(self.pre, self.ft_new, new=distances.NEW_LEAVES)
        # A leaf only in the pretrained tree still fails, naming it.
        missing = {k: v for k, v in self.ft_new.items() if k != "encoder/layer_1/output/dense/bias"}
        for fn in (distances.grouped, distances.per_leaf, distances.leaf_stats):
            with self.assertRaisesRegex(distances.TreeMismatchError, "missing") as cm:
                fn(self.pre, missing)
            self.assertEqual(cm.exception.path, "encoder/layer_1/output/dense/bias")
        # Extra leaves outside `new` still fail; a wider `new` accepts them.
        extra = {**self.ft, "encoder/layer_0/lora/a": np.zeros(2, np.float32)}
        with self.assertRaisesRegex(distances.TreeMismatchError, "extra leaf.*lora"):
            distances.grouped(self.pre, extra)
        table = distances.grouped(self.pre, extra, new=r".*/lora/.*")
        self.assertIn("new/layer_0", table)


TABLE = {
    "embeddings": {"rel_l1": 0.1, "angle": 0.01},
    "layer_0": {"rel_l1": 0.3, "angle": 0.02},
    "layer_1": {"rel_l1": 0.2, "angle": 0.03},
    "layer_2": {"rel_l1": math.nan, "angle": 0.04},
    "pooler": {"rel_l1": 0.5, "angle": 0.05},
    "total": {"rel_l1": 9.0, "angle": 9.0},
}


class RankingTest(absltest.TestCase):
    def test_rank_layers(self):
        ranking = distances.rank_layers(TABLE)
        self.assertEqual(
            [r["group"] for r in ranking], ["pooler", "layer_0", "layer_1", "embeddings", "layer_2"]
        )
        self.assertEqual([r["rank"] for r in ranking], [1, 2, 3, 4, 5])
        self.assertEqual(ranking[0], {"group": "pooler", "rank": 1, "rel_l1": 0.5, "angle": 0.05})
        layers = distances.rank_layers(TABLE, descending=False, include=r"layer_\d+")
        self.assertEqual([r["group"] for r in layers], ["layer_1", "layer_0", "layer_2"])
        by_angle = distances.rank_layers(TABLE, measure="angle")
        self.assertEqual(by_angle[0]["group"], "pooler")

    def test_critical_layers(self):
        ranking = distances.rank_layers(TABLE)
        self.assertEqual(distances.critical_layers(ranking, 2), ["layer_0", "layer_1"])
        self.assertEqual(distances.critical_layers(ranking, 0), [])
        with self.assertRaisesRegex(ValueError, "4 critical layers"):
            distances.critical_layers(ranking, 4)

    def test_rank_real_table_and_json(self):
        pre, ft = random_pair(bert_paths(3))
        ft["encoder/layer_1/output/dense/bias"] += 5.0
        table = distances.grouped(pre, ft)
        ranking = distances.rank_layers(table, include=r"layer_\d+")
        self.assertEqual(distances.critical_layers(ranking, 1), ["layer_1"])
        from_json = distances.rank_layers(distances.to_jsonable(table), include=r"layer_\d+")
        self.assertEqual([r["group"] for r in from_json], [r["group"] for r in ranking])
        text = json.dumps(
            distances.to_jsonable({"ranking": ranking, "table": TABLE}), allow_nan=False
        )
        self.assertIsNone(json.loads(text)["table"]["layer_2"]["rel_l1"])
        self.assertIsInstance(json.loads(text)["ranking"][0]["rel_l1"], float)


if __name__ == "__main__":
    absltest.main()
