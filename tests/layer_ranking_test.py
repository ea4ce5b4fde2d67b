"""fft.layer_ranking: the gradient ranking of encoder layers, on the tiny random-init BERT (2 layers).

Checks that the ranking is a deterministic permutation of the layers, that the written JSON is
what `partition.ranked_layers` and the `critical` preset read, that the per-layer numbers equal
a direct jax.grad computation on the same examples (bucketed here, packed in the module), and
that the statistics behave as documented where the answer is known by construction.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest

from configs import glue as glue_config
from fft import layer_ranking, models, partition, train, tree_paths
from fft.data import batching, tokenize
from fft.models import bert, loading
from tests.train_test import tiny_config

SETTINGS = layer_ranking.Settings(batches=2, warmup_steps=20, warmup_examples=32)
LAYERS = ["layer_0", "layer_1"]


def _tiny_model(config):
    fields = {k: v for k, v in config.model.random_init.items() if k not in ("enabled", "tokenizer")}
    return models.create_model("bert", bert.BertConfig(**fields), 2, jnp.float32, loading.config_pooling(config.model))


def _layer_leaves(flat, layer: int):
    return [v for k, v in flat.items() if k.startswith(f"encoder/layer_{layer}/")]


class LayerRankingTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.config = tiny_config()
        cls.result = layer_ranking.rank(cls.config, SETTINGS)

    def test_ranking_is_a_deterministic_permutation_of_the_layers(self):
        result = self.result
        self.assertCountEqual(result.ranking, LAYERS)
        self.assertCountEqual(result.layers(), [0, 1])
        scores = [result.groups[g]["score"] for g in result.ranking]
        self.assertEqual(scores, sorted(scores, reverse=True))
        self.assertTrue(all(s > 0 for s in scores))
        self.assertLen(result.batch_indices, SETTINGS.batches)
        self.assertTrue(all(len(i) == self.config.batch_size for i in result.batch_indices))
        warm = result.info["head_warmup"]
        self.assertEqual(warm["fit_examples"] + warm["held_examples"], SETTINGS.warmup_examples)
        self.assertFalse(warm["overlaps_measured"])
        again = layer_ranking.rank(tiny_config(), SETTINGS)  # Same seed: the same numbers.
        self.assertEqual(again.ranking, result.ranking)
        self.assertEqual(again.groups, result.groups)
        for a, b in zip(again.batch_indices, result.batch_indices):
            np.testing.assert_array_equal(a, b)

    def test_json_is_what_critical_reads(self):
        path = self.create_tempdir().full_path + "/rte_gradient.json"
        layer_ranking.write(self.result, path)
        with open(path) as f:
            report = json.load(f)  # Strict JSON.
        self.assertEqual([r["group"] for r in report["ranking"]], self.result.ranking)
        self.assertEqual([r["rank"] for r in report["ranking"]], [1, 2])
        self.assertEqual(report["settings"]["batches"], SETTINGS.batches)
        self.assertEqual(set(report["alternatives"]), set(layer_ranking.ALTERNATIVES))
        self.assertIn("head", report["other_groups"])
        self.assertEqual(partition.ranked_layers(path), self.result.layers())
        top = self.result.layers()[0]
        rules = partition.preset_rules("critical:1", 2, distances_file=path)
        self.assertIn(f"encoder/layer_(?:{top})", rules[1][0])

    def test_scores_match_direct_gradients(self):
        """Recomputes each layer's numbers with jax.grad of a hand-written loss on the measured
        examples, batched by length buckets instead of packed."""
        config, result = self.config, self.result
        model = _tiny_model(config)
        data = train.load_data(config, tokenize.load_tokenizer(loading.resolve_model_dir("minilm")))

        @jax.jit
        def grad(params, batch):
            def loss(p):
                logits = model.apply({"params": p}, batch["input_ids"], batch["attention_mask"],
                                     batch["token_type_ids"], deterministic=True)
                losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
                return jnp.sum(losses * batch["weights"]) / jnp.sum(batch["weights"])

            return jax.grad(loss)(params)

        grads = []
        for indices in result.batch_indices:
            encoded = data.train.select(np.sort(indices))
            (batch,) = batching.eval_batches(encoded, len(indices), buckets=(config.data.max_length,))
            batch.pop("index")
            grads.append(tree_paths.flatten(jax.device_get(grad(result.params, batch))))
        theta = tree_paths.flatten(result.params)
        for layer in (0, 1):
            g1, g2 = (_layer_leaves(g, layer) for g in grads)
            norms = [math.sqrt(sum(float(np.sum(np.square(x))) for x in g)) for g in (g1, g2)]
            l1 = [sum(float(np.sum(np.abs(x))) for x in g) for g in (g1, g2)]
            inner = sum(float(np.vdot(a, b)) for a, b in zip(g1, g2))  # Two batches: E[g]^2 estimate.
            param_norm = math.sqrt(sum(float(np.sum(np.square(x))) for x in _layer_leaves(theta, layer)))
            got = result.groups[f"layer_{layer}"]
            np.testing.assert_allclose(got["grad_norm"], np.mean(norms), rtol=2e-4)
            np.testing.assert_allclose(got["adam_step"], np.mean(l1), rtol=2e-4)
            np.testing.assert_allclose(got["param_norm"], param_norm, rtol=1e-5)
            np.testing.assert_allclose(got["score"], param_norm * np.mean(norms), rtol=2e-4)
            signal = math.copysign(math.sqrt(abs(inner)), inner)
            np.testing.assert_allclose(got["signal_norm"], signal, rtol=2e-3, atol=1e-6 * np.mean(norms))
            self.assertEqual(got["params"], sum(x.size for x in _layer_leaves(theta, layer)))

    def test_a_layer_that_cannot_change_the_loss_ranks_last(self):
        """With layer 1's output layer-norm scale at 0, layer 1 outputs a constant: nothing in
        layer 0 reaches the loss, so its gradients and score are exactly 0 (the unchanged model
        measured on the same batches scores both layers above 0)."""
        config, result = self.config, self.result
        data = train.load_data(config, tokenize.load_tokenizer(loading.resolve_model_dir("minilm")))
        steps = batching.num_train_batches(data.train, config.batch_size)
        data = train.with_packing(config, data, train.total_steps(config, steps) / steps, 1)
        batches = list(layer_ranking.measured_batches(data, config, SETTINGS.batches))
        for got, want in zip(batches, result.batch_indices):  # The batches rank() measured.
            np.testing.assert_array_equal(got["index"][got["index"] >= 0], want)
        params = jax.tree.map(np.asarray, result.params)
        layer_norm = params["encoder"]["layer_1"]["output"]["layer_norm"]
        layer_norm["scale"] = np.zeros_like(layer_norm["scale"])
        groups, _ = layer_ranking.measure(_tiny_model(config), params, batches, is_regression=False)
        self.assertEqual(layer_ranking.order(groups), ["layer_1", "layer_0"])
        self.assertEqual(groups["layer_0"]["score"], 0.0)
        self.assertEqual(groups["layer_0"]["adam_step"], 0.0)
        self.assertGreater(groups["layer_1"]["score"], 0.0)
        self.assertGreater(result.groups["layer_0"]["score"], 0.0)

    def test_statistics_on_constructed_gradients(self):
        """Layer a: the same gradient on every batch (all signal); layer b: larger gradients that
        cancel (all noise). The score measures a step's reach on its batch (b first); the signal
        estimate is unbiased (exactly ||g|| for a, negative for b); rescaling a layer's weights
        leaves score and signal_score alone but not the relative gradient norm."""
        n = 4
        g_a = np.full(10, 0.5)  # ||g|| = sqrt(2.5) on every batch.
        g_b = [(-1) ** i * np.arange(10.0) for i in range(n)]  # Sums to 0.

        def stats(gs, theta_sq, c=1.0):
            gs = [g / c for g in gs]  # theta -> c theta gives g -> g / c.
            return layer_ranking.statistics(
                c * c * theta_sq, [float(g @ g) for g in gs], [float(np.abs(g).sum()) for g in gs],
                float(np.sum(gs, axis=0) @ np.sum(gs, axis=0)), 10)

        a, b = stats([g_a] * n, 4.0), stats(g_b, 4.0)
        self.assertGreater(b["score"], a["score"])
        self.assertGreater(a["signal_score"], b["signal_score"])
        np.testing.assert_allclose(a["signal_norm"], math.sqrt(2.5))
        np.testing.assert_allclose(a["consistency"], 1.0)
        self.assertLess(b["signal_norm"], 0.0)
        np.testing.assert_allclose(b["consistency"], -1 / (n - 1))
        np.testing.assert_allclose(a["score"], 2.0 * math.sqrt(2.5))
        np.testing.assert_allclose(a["adam_step"], 5.0)
        scaled = stats([g_a] * n, 4.0, c=10.0)
        for key in ("score", "signal_score", "consistency"):
            np.testing.assert_allclose(scaled[key], a[key], rtol=1e-12)
        np.testing.assert_allclose(scaled["rel_grad_norm"], a["rel_grad_norm"] / 100, rtol=1e-12)
        groups = {"layer_0": a, "layer_1": b, "head": {**a, "score": 1e9}}
        self.assertEqual(layer_ranking.order(groups), ["layer_1", "layer_0"])  # Layers only.
        self.assertEqual(layer_ranking.order(groups, "signal_score"), ["layer_0", "layer_1"])
        with self.assertRaises(ValueError):
            layer_ranking.statistics(1.0, [], [], 0.0, 1)

    def test_any_method_is_measured_as_full(self):
        config = glue_config.get_config("task=cola,method=critical,tiny")
        config.critical.distances_file = "results/rankings/cola_gradient.json"
        full = layer_ranking.full_config(config)
        self.assertEqual(full.method, "full")
        self.assertNotIn("critical", full)
        self.assertFalse(full.feature_cache)
        self.assertEqual(full.task, "cola")
        with self.assertRaises(ValueError):
            layer_ranking.Settings(batches=0)


if __name__ == "__main__":
    absltest.main()
