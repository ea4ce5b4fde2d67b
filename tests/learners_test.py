"""Learners as a method: the learner model is the plain model, its gradient is the dense gradient
on the learner slices, the frozen kernels get no gradient, a run leaves them bit-identical and
round-trips through its export, node selection, and bad options / nodes files name the problem."""

import functools
import json
import pathlib
import re

import jax
import numpy as np
from absl.testing import absltest, parameterized

from configs import glue as glue_config
from fft import checkpoint, methods, models, steps, train, tree_paths
from fft.methods import learners
from fft.models import loading
from tests.train_test import tiny_config

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
DIRS = {"bert": FIXTURES / "tiny_bert_cls", "distilbert": FIXTURES / "tiny_distilbert"}
HIDDEN, WIDTH, K = 32, 64, 6  # The fixtures' sizes; k = round(0.1 * 64).
SIX = list(range(6))  # A valid layer of a nodes file.


def learners_method(model, **options):
    config = glue_config.get_config("task=rte,tiny,method=learners")
    config.learners.update(options)
    return methods.create(config, model)


@functools.cache
def pretrained(model_type):
    return loading.load_pretrained(DIRS[model_type])


def fixture(model_type="bert", pooling="cls"):
    pre = pretrained(model_type)
    model = models.create_model(pre.model_type, pre.model_config, 3, pooling=pooling)
    return model, loading.init_params(model, jax.random.key(0), pre.params)


def padded_batch(rows=4, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 100, (rows, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 7:], ids[0, 7:] = 0, 0
    types = (np.arange(length) >= 6).astype(np.int32)[None].repeat(rows, 0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
            "labels": rng.integers(0, 3, rows).astype(np.int32), "weights": np.ones(rows, np.float32)}


def packed_batch(seed=0):
    """Two rows of 16 tokens: row 0 holds examples of 5 and 9 tokens, row 1 one of 12 (slot 1 empty)."""
    rng = np.random.default_rng(seed)
    rows, length, slots = 2, 16, 2
    names = ("input_ids", "token_type_ids", "segment_ids", "position_ids")
    b = {k: np.zeros((rows, length), np.int32) for k in names}
    b["cls_positions"] = np.zeros((rows, slots), np.int32)
    for r, lengths in enumerate(((5, 9), (12,))):
        col = 0
        for s, n in enumerate(lengths):
            b["input_ids"][r, col:col + n] = rng.integers(5, 100, n)
            b["segment_ids"][r, col:col + n] = s + 1
            b["position_ids"][r, col:col + n] = np.arange(n)
            b["cls_positions"][r, s] = col
            col += n
    b["labels"] = rng.integers(0, 3, rows * slots).astype(np.int32)
    b["weights"] = np.array([1, 1, 1, 0], np.float32)
    return b


def loss_fn(model, params, batch, deterministic=True, rng=None):
    out = steps._apply(model, params, batch, deterministic=deterministic, rng=rng)
    return steps.weighted_mean(steps.example_losses(out, batch["labels"], False), batch["weights"])


def logits(model, params, batch, **kwargs):
    return steps._apply(model, params, batch, deterministic=True, **kwargs)


def nodes_of(params, fraction=0.1):
    return learners.choose_nodes(learners.node_scores(params, "magnitude"), fraction)


def dot_shapes(jaxpr) -> set[tuple[int, ...]]:
    """Output shapes of every dot_general in a (closed) jaxpr, sub-jaxprs included."""
    shapes = set()
    for eqn in jaxpr.jaxpr.eqns if hasattr(jaxpr, "jaxpr") else jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    shapes |= dot_shapes(sub)
    return shapes


class LearnerModelTest(parameterized.TestCase):
    @parameterized.product(model_type=("bert", "distilbert"), pooling=("cls", "mean"), packed=(False, True))
    def test_logits_equal_the_plain_model(self, model_type, pooling, packed):
        model, params = fixture(model_type, pooling)
        method = learners_method(model)
        trainable, frozen = method.init(params, jax.random.key(1))
        b = packed_batch() if packed else padded_batch()
        assembled = method.assemble(trainable, frozen)
        np.testing.assert_allclose(logits(method.model, assembled, b), logits(model, params, b), atol=1e-5)
        # With dropout on, the same key drops the same entries (the fixtures' dropout is 0.1).
        train_out = [steps._apply(m, p, b, deterministic=False, rng=jax.random.key(5))
                     for m, p in ((method.model, assembled), (model, params))]
        np.testing.assert_allclose(*train_out, atol=1e-5)

    def test_every_node_a_learner(self):
        model, params = fixture()
        method = learners_method(model, fraction=1.0)
        trainable, frozen = method.init(params, jax.random.key(1))
        rest = tree_paths.flatten(frozen)["encoder/layer_0/intermediate/dense/kernel"]
        self.assertEqual(np.shape(rest), (HIDDEN, 0))
        b = padded_batch()
        np.testing.assert_allclose(logits(method.model, method.assemble(trainable, frozen), b),
                                   logits(model, params, b), atol=1e-5)
        jax.tree.map(np.testing.assert_array_equal, method.merged(trainable, frozen), params)

    @parameterized.parameters(("bert", "cls", False), ("bert", "cls", True), ("distilbert", "mean", True))
    def test_gradient_is_the_dense_gradient_on_the_learner_slices(self, model_type, pooling, packed):
        model, params = fixture(model_type, pooling)
        method = learners_method(model, train_attention=True)
        trainable, frozen = method.init(params, jax.random.key(1))
        b = packed_batch() if packed else padded_batch()
        dense = jax.grad(lambda p: loss_fn(model, p, b))(params)
        ours = jax.grad(lambda t: loss_fn(method.model, method.assemble(t, frozen), b))(trainable)
        expected = tree_paths.flatten(learners.split_nodes(dense, nodes_of(params)))
        got = tree_paths.flatten(ours)
        self.assertIn("encoder/layer_1/output/learner/kernel", got)
        for path, g in got.items():
            np.testing.assert_allclose(g, expected[path], atol=1e-6, rtol=1e-5, err_msg=path)
        self.assertGreater(np.abs(got["encoder/layer_0/intermediate/learner/kernel"]).max(), 0)

    def test_no_gradient_of_the_frozen_kernels_is_computed(self):
        model, params = fixture()
        method = learners_method(model)  # Attention frozen.
        trainable, frozen = method.init(params, jax.random.key(1))
        b = padded_batch()
        learner_grad = jax.grad(lambda t, f: loss_fn(method.model, method.assemble(t, f), b))
        dense_grad = jax.grad(lambda p: loss_fn(model, p, b))
        ours = dot_shapes(jax.make_jaxpr(learner_grad)(trainable, frozen))
        full = dot_shapes(jax.make_jaxpr(dense_grad)(params))
        # The check can fail: the dense gradient forms the [H, F] and [F, H] kernel cotangents.
        self.assertTrue({(HIDDEN, WIDTH), (WIDTH, HIDDEN)} <= full, full)
        self.assertTrue({(HIDDEN, K), (K, HIDDEN)} <= ours, ours)  # The learners' own.
        frozen_shapes = {(HIDDEN, WIDTH - K), (WIDTH - K, HIDDEN), (HIDDEN, WIDTH), (WIDTH, HIDDEN),
                         (HIDDEN, HIDDEN)}  # FFN remainder, dense FFN, attention / pooler kernels.
        self.assertEqual(ours & frozen_shapes, set())
        flops = [jax.jit(f).lower(*args).compile().cost_analysis()
                 for f, args in ((learner_grad, (trainable, frozen)), (dense_grad, (params,)))]
        flops = [(c[0] if isinstance(c, list) else c)["flops"] for c in flops]
        self.assertLess(flops[0], flops[1])


class LearnersMethodTest(parameterized.TestCase):
    def test_what_trains_and_the_groups(self):
        model, params = fixture()
        method = learners_method(model, head_lr=1e-2)
        trainable, frozen = method.init(params, jax.random.key(0))
        paths, fixed = tree_paths.flatten(trainable), tree_paths.flatten(frozen)
        self.assertEqual(np.shape(paths["encoder/layer_0/intermediate/learner/kernel"]), (HIDDEN, K))
        self.assertEqual(np.shape(paths["encoder/layer_0/intermediate/learner/bias"]), (K,))
        self.assertEqual(np.shape(paths["encoder/layer_0/output/learner/kernel"]), (K, HIDDEN))
        self.assertEqual(np.shape(fixed["encoder/layer_0/intermediate/dense/kernel"]), (HIDDEN, WIDTH - K))
        self.assertEqual(np.shape(fixed["encoder/layer_0/output/dense/kernel"]), (WIDTH - K, HIDDEN))
        self.assertIn("encoder/layer_0/intermediate/dense/bias", paths)  # train_biases.
        self.assertIn("embeddings/layer_norm/scale", paths)  # train_layer_norms.
        self.assertIn("encoder/layer_0/attention/query/kernel", fixed)
        self.assertIn("embeddings/word_embeddings/embedding", fixed)
        self.assertEqual(method.cache_start(trainable), 0)
        schedules = method.optimizer(trainable, 10).schedules
        self.assertEqual(sorted(schedules), ["head", "learners", "train"])
        self.assertGreater(schedules["head"](5), schedules["learners"](5))
        method = learners_method(model, train_biases=False, train_layer_norms=False)
        trainable, _ = method.init(params, jax.random.key(0))
        others = sorted(p for p in tree_paths.flatten(trainable) if "/learner/" not in p)
        self.assertEqual(others, ["classifier/bias", "classifier/kernel"])
        trainable, _ = learners_method(model, train_attention=True).init(params, jax.random.key(0))
        self.assertIn("encoder/layer_1/attention/output/dense/kernel", tree_paths.flatten(trainable))

    def test_merge_is_exact_and_needs_init(self):
        model, params = fixture()
        method = learners_method(model)
        with self.assertRaisesRegex(methods.MethodError, "call it first"):
            method.merged({}, {})
        trainable, frozen = method.init(params, jax.random.key(0))
        jax.tree.map(np.testing.assert_array_equal, jax.jit(method.merged)(trainable, frozen), params)

    @parameterized.parameters(
        ({"fraction": 1.5}, r"^config.learners.fraction=1.5: must be in \(0, 1\]$"),
        ({"fraction": 0.0}, r"config.learners.fraction=0.0: must be in"),
        ({"select": "biggest"}, r"config.learners.select='biggest'; valid: magnitude, random, movement"),
        ({"select": "movement"}, r"config.learners.select='movement' needs the nodes a priming phase chose"),
    )
    def test_bad_options_name_the_field(self, options, message):
        model, _ = fixture()
        with self.assertRaisesRegex(methods.MethodError, message):
            learners_method(model, **options)

    @parameterized.named_parameters(
        ("missing", None, "nodes file not found"),
        ("bad_json", "{layer_0: [1]", "not valid JSON"),
        ("not_lists", {"layer_0": "1,2"}, "expected a JSON object"),
        ("wrong_layers", {"layer_0": SIX, "layer_7": SIX}, r"missing \['layer_1'\], unknown \['layer_7'\]"),
        ("out_of_range", {"layer_0": SIX, "layer_1": [1, 2, 3, 4, 5, 64]}, "layer_1 has node 64 outside 0..63"),
        ("negative", {"layer_0": [-1, 2, 3, 4, 5, 6], "layer_1": SIX}, "layer_0 has a negative node index -1"),
        ("duplicate", {"layer_0": [1, 1, 2, 3, 4, 5], "layer_1": SIX}, "layer_0 lists node 1 twice"),
        ("count", {"layer_0": SIX[:5], "layer_1": SIX}, "layer_0 has 5 nodes; fraction=0.1 of 64 needs 6"),
    )
    def test_bad_nodes_files(self, body, message):
        path = pathlib.Path(self.create_tempdir().full_path) / "nodes.json"
        if body is not None:
            path.write_text(body if isinstance(body, str) else json.dumps(body))
        model, _ = fixture()
        with self.assertRaisesRegex(methods.MethodError, f"^{re.escape(str(path))}: .*{message}"):
            learners_method(model, select="movement", nodes_file=str(path))


class SelectionTest(parameterized.TestCase):
    def one_layer(self, w1, w2, b1=None):
        w1 = np.asarray(w1, np.float32)
        b1 = np.zeros(w1.shape[1], np.float32) if b1 is None else np.asarray(b1, np.float32)
        return {"encoder": {"layer_0": {"intermediate": {"dense": {"kernel": w1, "bias": b1}},
                                        "output": {"dense": {"kernel": np.asarray(w2, np.float32)}}}}}

    def test_magnitude_and_movement_pick_the_top_k(self):
        # Node norms: W1 columns 1, 2, 3, 0.5, 4; W2 rows 4, 1, 1, 2, 0.1 -> scores 4, 2, 3, 1, 0.4.
        params = self.one_layer([[1, 2, 0, 0.5, 4], [0, 0, 3, 0, 0]], [[4, 0], [0, 1], [1, 0], [0, 2], [0.1, 0]])
        scores = learners.node_scores(params, "magnitude")
        np.testing.assert_allclose(scores["layer_0"], [4, 2, 3, 1, 0.4], rtol=1e-6)
        np.testing.assert_array_equal(learners.choose_nodes(scores, 0.4)["layer_0"], [0, 2])
        moved = self.one_layer([[1, 2, 0, 0.5, 4], [0, 0, 3, 0, 1]], [[4, 0], [0, 1], [1, 0], [0, 2], [0.1, -2]],
                               b1=[0, 0, 0, 0.5, 0])  # Node 4 moves by 1 + 2, node 3 by 0.5.
        scores = learners.node_scores(moved, "movement", reference=params)
        np.testing.assert_allclose(scores["layer_0"], [0, 0, 0, 0.5, 3])
        np.testing.assert_array_equal(learners.choose_nodes(scores, 0.4)["layer_0"], [3, 4])

    def test_random_is_deterministic_in_the_key(self):
        _, params = fixture()
        def pick(seed):
            scores = learners.node_scores(params, "random", key=jax.random.key(seed))
            return learners.choose_nodes(scores, 0.1)

        a, b, c = pick(1), pick(1), pick(2)
        for layer in ("layer_0", "layer_1"):
            np.testing.assert_array_equal(a[layer], b[layer])
        self.assertFalse(all(np.array_equal(a[layer], c[layer]) for layer in a))
        model, _ = fixture()
        method = learners_method(model, select="random")
        t1, _ = method.init(params, jax.random.key(1))
        kernel = tree_paths.flatten(t1)["encoder/layer_1/intermediate/learner/kernel"]
        dense = params["encoder"]["layer_1"]["intermediate"]["dense"]["kernel"]
        np.testing.assert_array_equal(kernel, dense[:, a["layer_1"]])

    @parameterized.parameters((64, 0.1), (1536, 0.1), (1536, 0.01), (3, 0.1), (10, 1.0), (7, 0.5))
    def test_counts(self, width, fraction):
        scores = {"layer_0": np.random.default_rng(0).random(width)}
        nodes = learners.choose_nodes(scores, fraction)["layer_0"]
        self.assertLen(nodes, max(1, round(fraction * width)))
        self.assertTrue(np.all(np.diff(nodes) > 0))

    def test_nodes_file_round_trip_gives_the_nodes(self):
        model, params = fixture()
        nodes = {"layer_0": np.arange(58, 64), "layer_1": np.array([9, 3, 0, 40, 41, 63])}
        path = pathlib.Path(self.create_tempdir().full_path) / "nodes.json"
        learners.write_nodes_file(path, nodes)
        back = learners.read_nodes_file(path, widths={"layer_0": 64, "layer_1": 64}, fraction=0.1)
        np.testing.assert_array_equal(back["layer_1"], [0, 3, 9, 40, 41, 63])
        method = learners_method(model, select="movement", nodes_file=str(path))
        trainable, _ = method.init(params, jax.random.key(0))
        np.testing.assert_array_equal(tree_paths.flatten(trainable)["encoder/layer_0/intermediate/learner/bias"],
                                      params["encoder"]["layer_0"]["intermediate"]["dense"]["bias"][58:])


class LearnersTrainTest(absltest.TestCase):
    def test_frozen_kernels_stay_and_the_task_round_trips(self):
        config = tiny_config("learners")
        workdir = pathlib.Path(self.create_tempdir().full_path)
        final = train.train_and_evaluate(config, workdir)
        self.assertEqual(final["method"], "learners")
        state, _ = checkpoint.load_state_dict(workdir)
        saved = tree_paths.flatten(state["params"])
        self.assertNotIn("encoder/layer_0/intermediate/dense/kernel", saved)
        self.assertEqual(final["stored_bytes"], (workdir / learners.TASK_FILE).stat().st_size)
        run_config = train.load_run_config(workdir)
        bundle = train.load_model(run_config, 2)
        initial, merged = train.task_params(run_config, state["params"])
        nodes = nodes_of(initial)
        for layer, n in nodes.items():
            rest = np.setdiff1d(np.arange(WIDTH), n)
            for path, take in (("intermediate/dense/kernel", lambda w, i: w[:, i]),
                               ("output/dense/kernel", lambda w, i: w[i])):
                before, after = (np.asarray(tree_paths.flatten(tree)[f"encoder/{layer}/{path}"])
                                 for tree in (initial, merged))
                np.testing.assert_array_equal(take(after, rest), take(before, rest))  # Bit-identical.
                self.assertFalse(np.array_equal(take(after, n), take(before, n)))  # The learners trained.
        # The merged dense model computes what the learner model computes.
        method = methods.create(run_config, bundle.model)
        _, frozen = method.init(bundle.params, train.method_key(run_config))
        b = padded_batch(length=16)
        np.testing.assert_allclose(logits(method.model, method.assemble(state["params"], frozen), b),
                                   logits(bundle.model, merged, b), atol=1e-5)
        # The export (learner slices, node indices, head, biases, LayerNorms) rebuilds the merged model.
        dense = method.import_task(workdir, bundle.params)
        jax.tree.map(np.testing.assert_array_equal, dense, merged)
        # `fft export` of the checkpoint writes the same task.
        out = pathlib.Path(self.create_tempdir().full_path)
        report = train.export_run(workdir, out_dir=out)
        self.assertEqual(report["step"], final["steps"])
        jax.tree.map(np.testing.assert_array_equal, method.import_task(out, bundle.params), merged)


if __name__ == "__main__":
    absltest.main()
