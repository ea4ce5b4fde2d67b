"""Tests for fft.supermask: binarizers, init sparsity, gradients, assemble + optimizer."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from fft import supermask as sm
from fft import tree_paths

LAYER = "encoder/layer_0/intermediate/dense"


def _bert_like(key, hidden=8, ffn=16, layers=2):
    """A small tree with BERT's parameter names (embeddings, encoder, pooler, classifier)."""
    shapes = {"embeddings/word_embeddings/embedding": (30, hidden)}
    for i in range(layers):
        p = f"encoder/layer_{i}"
        for name in (
            "attention/query",
            "attention/key",
            "attention/value",
            "attention/output/dense",
        ):
            shapes[f"{p}/{name}/kernel"] = (hidden, hidden)
            shapes[f"{p}/{name}/bias"] = (hidden,)
        shapes[f"{p}/attention/output/layer_norm/scale"] = (hidden,)
        shapes[f"{p}/intermediate/dense/kernel"] = (hidden, ffn)
        shapes[f"{p}/intermediate/dense/bias"] = (ffn,)
        shapes[f"{p}/output/dense/kernel"] = (ffn, hidden)
        shapes[f"{p}/output/dense/bias"] = (hidden,)
    shapes["pooler/dense/kernel"] = (hidden, hidden)
    shapes["classifier/kernel"] = (hidden, 3)
    shapes["classifier/bias"] = (3,)
    keys = jax.random.split(key, len(shapes))
    return tree_paths.unflatten(
        {p: jax.random.normal(k, s, jnp.float32) for k, (p, s) in zip(keys, shapes.items())}
    )


def _toy(key, d_in=4, d_hidden=8):
    """Toy regression tree shaped like one BERT FFN matrix plus a classifier head."""
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "encoder": {
            "layer_0": {
                "intermediate": {
                    "dense": {
                        "kernel": jax.random.normal(k1, (d_in, d_hidden)),
                        "bias": 0.1 * jax.random.normal(k2, (d_hidden,)),
                    }
                }
            }
        },
        "classifier": {"kernel": 0.1 * jax.random.normal(k3, (d_hidden, 1)), "bias": jnp.zeros(1)},
    }


def _toy_forward(params, x):
    dense = params["encoder"]["layer_0"]["intermediate"]["dense"]
    hidden = x @ dense["kernel"] + dense["bias"]
    return hidden @ params["classifier"]["kernel"] + params["classifier"]["bias"]


class BinarizerTest(parameterized.TestCase):
    @parameterized.parameters(jnp.float32, jnp.bfloat16)
    def test_binarize_forward_is_exactly_zero_one(self, dtype):
        scores = jnp.array([-1.0, -1e-8, 0.0, 1e-8, 0.3, 2.0], jnp.float32)
        mask = sm.binarize(scores, 0.0, dtype)
        self.assertEqual(mask.dtype, dtype)
        np.testing.assert_array_equal(np.asarray(mask, np.float32), [0, 0, 0, 1, 1, 1])

    def test_binarize_backward_is_straight_through(self):
        scores = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
        c = jax.random.normal(jax.random.PRNGKey(1), (5, 7))
        grad_s, grad_t = jax.grad(lambda s, t: jnp.sum(sm.binarize(s, t) * c), argnums=(0, 1))(
            scores, jnp.float32(0.2)
        )
        np.testing.assert_array_equal(grad_s, c)
        self.assertEqual(float(grad_t), 0.0)

    def test_binarize_backward_casts_to_score_dtype(self):
        scores = jnp.linspace(-1, 1, 6)
        c = jnp.arange(6, dtype=jnp.bfloat16)
        grad = jax.grad(lambda s: jnp.sum(sm.binarize(s, 0.0, jnp.bfloat16) * c).astype(float))(
            scores
        )
        self.assertEqual(grad.dtype, jnp.float32)
        np.testing.assert_array_equal(grad, np.arange(6, dtype=np.float32))

    @parameterized.parameters(((4, 5), 0.5), ((7,), 0.01), ((3, 3, 3), 0.9), ((10, 10), 1.0))
    def test_topk_keeps_exactly_k(self, shape, keep_fraction):
        scores = jax.random.normal(jax.random.PRNGKey(2), shape)
        mask = np.asarray(sm.topk_mask(scores, keep_fraction))
        k = sm.num_kept(scores.size, keep_fraction)
        self.assertEqual(k, max(1, round(keep_fraction * scores.size)))
        self.assertEqual(mask.sum(), k)
        self.assertTrue(set(np.unique(mask)) <= {0.0, 1.0})
        kept, dropped = np.asarray(scores)[mask == 1], np.asarray(scores)[mask == 0]
        if dropped.size:
            self.assertGreaterEqual(kept.min(), dropped.max())

    def test_topk_ties_are_deterministic_lower_index_first(self):
        scores = jnp.array([1.0, 2.0, 1.0, 1.0, 0.0])
        np.testing.assert_array_equal(sm.topk_mask(scores, 0.6), [1, 1, 1, 0, 0])
        np.testing.assert_array_equal(sm.topk_mask(jnp.zeros(6), 0.5), [1, 1, 1, 0, 0, 0])

    def test_topk_traced_keep_fraction_and_gradient(self):
        scores = jax.random.normal(jax.random.PRNGKey(3), (6, 5))
        counts = jax.jit(lambda s, f: jnp.sum(sm.topk_mask(s, f)))(scores, jnp.float32(0.4))
        self.assertEqual(int(counts), 12)
        c = jnp.arange(30.0).reshape(6, 5)
        grad = jax.grad(lambda s: jnp.sum(sm.topk_mask(s, 0.4) * c))(scores)
        np.testing.assert_array_equal(grad, c)


class InitTest(parameterized.TestCase):
    def test_default_rules_select_encoder_matrices(self):
        params = _bert_like(jax.random.PRNGKey(0))
        paths = sm.masked_paths(params, sm.MaskConfig().all_rules)
        self.assertLen(paths, 12)  # 2 layers x (q, k, v, attention output, intermediate, output)
        self.assertTrue(all(p.startswith("encoder/") and p.endswith("/kernel") for p in paths))
        extra = sm.MaskConfig(extra_rules=(sm.EMBEDDING_RULE, sm.POOLER_RULE)).all_rules
        self.assertLen(sm.masked_paths(params, extra), 14)

    def test_no_match_raises_naming_rules(self):
        params = {"classifier": {"kernel": jnp.ones((2, 2))}}
        with self.assertRaisesRegex(ValueError, "encoder/layer_"):
            sm.init_scores(None, params, sm.MaskConfig())

    def test_config_validation_and_dict_round_trip(self):
        with self.assertRaisesRegex(ValueError, "mode"):
            sm.MaskConfig(mode="soft")
        with self.assertRaisesRegex(ValueError, "initial_sparsity"):
            sm.MaskConfig(initial_sparsity=1.0)
        config = sm.MaskConfig(mode="topk", keep_fraction=0.9, extra_rules=[sm.POOLER_RULE])
        self.assertEqual(sm.MaskConfig.from_dict(config.to_dict()), config)
        hash(config)  # Usable as a jit static argument.

    # Sparsity is exact (tolerance 0): the init ranks entries (ties by index), masks exactly
    # round(initial_sparsity * n) of them and clamps their scores to the right side of threshold.
    @parameterized.parameters(
        [(init, sparsity, 0.0) for init in sm.INITS for sparsity in (0.01, 0.05, 0.1)]
        + [(init, 0.05, 0.5) for init in sm.INITS]
        + [("uniform", 0.0, 0.0), ("magnitude", 0.0, 0.5), ("rank", 0.0, 0.0)]
    )
    def test_initial_sparsity_is_met_exactly(self, init, initial_sparsity, threshold):
        params = _bert_like(jax.random.PRNGKey(1), hidden=16, ffn=40)
        config = sm.MaskConfig(init=init, initial_sparsity=initial_sparsity, threshold=threshold)
        scores = sm.init_scores(jax.random.PRNGKey(2), params, config)
        flat = tree_paths.flatten(scores)
        self.assertLen(flat, 12)
        stats = sm.sparsity(scores, config)
        for path, s in flat.items():
            self.assertEqual(s.dtype, jnp.float32)
            n0 = round(initial_sparsity * s.size)
            self.assertEqual(int(np.sum(np.asarray(s) <= threshold)), n0, path)
            self.assertAlmostEqual(float(stats[path]), n0 / s.size, delta=1e-7)
            self.assertLessEqual(float(np.max(np.abs(np.asarray(s) - threshold))), 1.01 * 0.05)
        total = sum(round(initial_sparsity * s.size) for s in flat.values())
        self.assertAlmostEqual(
            float(stats["total"]), total / sum(s.size for s in flat.values()), delta=1e-6
        )

    def test_magnitude_init_masks_the_smallest_weights(self):
        params = _bert_like(jax.random.PRNGKey(3))
        config = sm.MaskConfig(init="magnitude", initial_sparsity=0.25)
        scores = tree_paths.flatten(sm.init_scores(None, params, config))
        flat = tree_paths.flatten(params)
        for path, s in scores.items():
            w, m = np.abs(np.asarray(flat[path])), np.asarray(s) > 0.0
            self.assertLessEqual(w[~m].max(), w[m].min())
            # Scores grow with |w|.
            self.assertTrue(
                np.all(np.diff(np.asarray(s).reshape(-1)[np.argsort(w.reshape(-1))]) >= 0)
            )

    def test_rank_init_orders_like_magnitude_with_one_spread_for_every_tensor(self):
        params = _bert_like(jax.random.PRNGKey(3), hidden=16, ffn=40)
        flat = tree_paths.flatten(params)
        # One outlier per tensor squeezes the magnitude init's scores against the threshold.
        outlier = {p: np.asarray(w).copy() for p, w in flat.items()}
        for w in outlier.values():
            w.reshape(-1)[0] = 1000.0 * np.abs(w).max()
        params = tree_paths.unflatten(outlier)
        config = sm.MaskConfig(init="rank", initial_sparsity=0.25, init_scale=1.0)
        by_rank = tree_paths.flatten(sm.init_scores(None, params, config))
        by_magnitude = tree_paths.flatten(
            sm.init_scores(None, params, dataclasses.replace(config, init="magnitude")))
        for path, s in by_rank.items():
            s = np.asarray(s).reshape(-1)
            w = np.abs(outlier[path]).reshape(-1)
            # The same masked set as 'magnitude', scores in the same order as |w|.
            np.testing.assert_array_equal(s > 0.0, np.asarray(by_magnitude[path]).reshape(-1) > 0.0)
            self.assertTrue(np.all(np.diff(s[np.argsort(w, kind="stable")]) > 0))
            # Evenly spread: sorted scores step by 1/n (scale 1), whatever the outlier.
            np.testing.assert_allclose(np.diff(np.sort(s)), 1.0 / s.size, rtol=1e-3, atol=1e-6)
            median_distance = np.median(np.abs(np.asarray(by_magnitude[path])))
            self.assertLess(median_distance, 1e-2)  # vs ~0.3 for 'rank':
            self.assertGreater(np.median(np.abs(s)), 0.2)

    def test_init_is_seeded_and_topk_starts_from_the_same_mask(self):
        params = _bert_like(jax.random.PRNGKey(4))
        config = sm.MaskConfig(init="uniform", initial_sparsity=0.1)
        a = sm.init_scores(None, params, config)
        b = sm.init_scores(jax.random.PRNGKey(config.seed), params, config)
        c = sm.init_scores(None, params, sm.MaskConfig(init="uniform", seed=1))
        chex_equal = jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)
        self.assertTrue(all(jax.tree.leaves(chex_equal)))
        self.assertFalse(
            all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, c)))
        )
        for init in sm.INITS:
            thr = sm.MaskConfig(init=init, initial_sparsity=0.1)
            topk = sm.MaskConfig(init=init, initial_sparsity=0.1, mode="topk", keep_fraction=0.9)
            scores = sm.init_scores(None, params, thr)
            for x, y in zip(
                jax.tree.leaves(sm.masks(scores, thr)), jax.tree.leaves(sm.masks(scores, topk))
            ):
                np.testing.assert_array_equal(x, y)


class ApplyMasksTest(parameterized.TestCase):
    def test_score_gradient_is_weight_times_effective_gradient(self):
        key = jax.random.PRNGKey(5)
        params = _toy(key)
        frozen = {"encoder": params["encoder"]}
        config = sm.MaskConfig(initial_sparsity=0.25)
        scores = sm.init_scores(None, frozen, config)
        x = jax.random.normal(jax.random.PRNGKey(6), (16, 4))
        y = jax.random.normal(jax.random.PRNGKey(7), (16, 1))

        def loss_of_params(p):
            return jnp.mean(
                jnp.square(_toy_forward({**p, "classifier": params["classifier"]}, x) - y)
            )

        effective = sm.apply_masks(frozen, scores, config)
        grad_w = jax.grad(loss_of_params)(effective)
        grad_s = jax.grad(lambda s: loss_of_params(sm.apply_masks(frozen, s, config)))(scores)
        w = frozen["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
        expected = w * grad_w["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
        got = grad_s["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        self.assertGreater(float(jnp.sum(got != 0)), 0)
        # Masked entries of the effective weight are zero, the others the pretrained values.
        m = np.asarray(
            sm.masks(scores, config)["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
        )
        eff = np.asarray(effective["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"])
        np.testing.assert_array_equal(eff, np.where(m == 1, np.asarray(w), 0.0))
        self.assertFalse(np.any(np.signbit(eff[m == 0])))  # Masked entries are +0.0.
        jitted = jax.jit(sm.apply_masks, static_argnums=2)(frozen, scores, config)
        eff_jit = np.asarray(jitted["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"])
        np.testing.assert_array_equal(eff_jit.view(np.uint32), eff.view(np.uint32))
        self.assertEqual(int((m == 0).sum()), 8)

    def test_unmasked_leaves_pass_through_and_errors_name_the_path(self):
        params = _bert_like(jax.random.PRNGKey(8))
        config = sm.MaskConfig()
        scores = sm.init_scores(None, params, config)
        out = sm.apply_masks(params, scores, config)
        self.assertIs(out["pooler"]["dense"]["kernel"], params["pooler"]["dense"]["kernel"])
        self.assertEqual(jax.tree.structure(out), jax.tree.structure(params))
        bad = tree_paths.unflatten({"encoder/layer_0/attention/query/kernel": jnp.zeros((3, 3))})
        with self.assertRaisesRegex(ValueError, "encoder/layer_0/attention/query/kernel"):
            sm.apply_masks(params, bad, config)
        missing = tree_paths.unflatten(
            {"encoder/layer_9/attention/query/kernel": jnp.zeros((8, 8))}
        )
        with self.assertRaisesRegex(ValueError, "layer_9"):
            sm.apply_masks(params, missing, config)

    def test_sparsity_is_jittable(self):
        params = _bert_like(jax.random.PRNGKey(9))
        config = sm.MaskConfig(mode="topk", keep_fraction=0.75)
        scores = sm.init_scores(None, params, config)
        stats = jax.jit(lambda s: sm.sparsity(s, config))(scores)
        self.assertIn("total", stats)
        for path, value in stats.items():
            self.assertEqual(value.dtype, jnp.float32)
            self.assertAlmostEqual(float(value), 0.25, delta=1e-6, msg=path)


class TrainingTest(parameterized.TestCase):
    def _setup(self, config, score_lr=2e-2, **opt_kwargs):
        params = _toy(jax.random.PRNGKey(10), d_in=6, d_hidden=10)
        trainable, frozen = sm.init_trainable(jax.random.PRNGKey(11), params, config)
        # Teacher: the same pretrained weights under a fixed 30%-sparse mask.
        w = frozen["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
        teacher_mask = jax.random.uniform(jax.random.PRNGKey(12), w.shape) > 0.3
        teacher = jax.tree.map(lambda x: x, params)
        teacher["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"] = w * teacher_mask
        x = jax.random.normal(jax.random.PRNGKey(13), (128, 6))
        y = _toy_forward(teacher, x)
        assemble = sm.make_assemble(config)
        tx = sm.make_optimizer(score_lr, 1e-2, 300, config=config, **opt_kwargs)

        def loss_fn(tr, fr):
            return jnp.mean(jnp.square(_toy_forward(assemble(tr, fr), x) - y))

        @jax.jit
        def step(tr, opt_state, fr):
            loss, grads = jax.value_and_grad(loss_fn)(tr, fr)
            updates, opt_state = tx.update(grads, opt_state, tr)
            return optax.apply_updates(tr, updates), opt_state, loss

        return trainable, frozen, tx, step

    @parameterized.parameters("threshold", "topk")
    def test_frozen_weights_unchanged_mask_learns_loss_decreases(self, mode):
        config = sm.MaskConfig(mode=mode, keep_fraction=0.7, initial_sparsity=0.05, init_scale=0.02)
        trainable, frozen, tx, step = self._setup(config)
        before = jax.tree.map(lambda a: np.array(a, copy=True), frozen)
        mask0 = sm.masks(trainable["scores"], config)
        opt_state = tx.init(trainable)
        self.assertIsInstance(opt_state.inner_states["scores"].inner_state, sm.ScoreOptState)
        losses = []
        for _ in range(300):
            trainable, opt_state, loss = step(trainable, opt_state, frozen)
            losses.append(float(loss))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(frozen)):
            np.testing.assert_array_equal(np.asarray(b).view(np.uint32), a.view(np.uint32))
        mask1 = sm.masks(trainable["scores"], config)
        changed = sum(
            int(jnp.sum(a != b)) for a, b in zip(jax.tree.leaves(mask0), jax.tree.leaves(mask1))
        )
        self.assertGreater(changed, 0)
        self.assertLess(np.mean(losses[-10:]), 0.5 * np.mean(losses[:10]))
        self.assertEqual(int(opt_state.inner_states["scores"].inner_state.count), 300)

    def test_l1_pull_reaches_target_sparsity(self):
        config = sm.MaskConfig(initial_sparsity=0.05, init_scale=0.02)
        trainable, frozen, tx, step = self._setup(
            config, l1=1.0, target_sparsity=sm.sparsity_schedule(0.05, 0.5, 100)
        )
        opt_state = tx.init(trainable)
        for _ in range(150):
            trainable, opt_state, _ = step(trainable, opt_state, frozen)
        self.assertGreaterEqual(float(sm.sparsity(trainable["scores"], config)["total"]), 0.45)
        with self.assertRaisesRegex(ValueError, "threshold mode"):
            sm.make_optimizer(1e-2, 1e-2, 10, config=sm.MaskConfig(mode="topk"), l1=1.0)

    def test_sparsity_schedule(self):
        linear = sm.sparsity_schedule(0.1, 0.5, 100)
        np.testing.assert_allclose(
            [float(linear(s)) for s in (0, 50, 100, 200)], [0.1, 0.3, 0.5, 0.5]
        )
        cubic = sm.sparsity_schedule(0.0, 0.8, 10, power=3)
        self.assertAlmostEqual(float(cubic(5)), 0.8 * (1 - 0.125), places=6)

    def test_score_optimizer_matches_adam_without_l1(self):
        params = {"a": jnp.linspace(-1.0, 1.0, 5)}
        grads = {"a": jnp.array([0.1, -0.2, 0.3, 0.0, 1.0])}
        ours, ref = sm.score_optimizer(1e-2), optax.adam(1e-2)
        s1, s2 = ours.init(params), ref.init(params)
        for _ in range(3):
            u1, s1 = ours.update(grads, s1, params)
            u2, s2 = ref.update(grads, s2, params)
            np.testing.assert_allclose(u1["a"], u2["a"], rtol=1e-6, atol=1e-9)


if __name__ == "__main__":
    absltest.main()
