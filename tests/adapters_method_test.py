"""Adapters as a method: step 0 is the pretrained model, what trains, bad options, and a run
whose distances report the adapters as new groups and whose exported task reproduces it."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs import glue as glue_config
from fft import analyze, methods, models, sharding, steps, train, tree_paths
from fft.data import tokenize
from fft.models import loading
from tests.lora_test import batch, logits, tiny
from tests.train_test import tiny_config

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def adapters_method(model, **options):
    config = glue_config.get_config("task=rte,tiny,method=adapters")
    config.adapters.update(options)
    return methods.create(config, model)


class AdaptersMethodTest(parameterized.TestCase):
    @parameterized.parameters("houlsby", "pfeiffer")
    def test_step_zero_is_the_pretrained_model(self, placement):
        model, params = tiny()
        method = adapters_method(model, placement=placement, size=4)
        trainable, frozen = method.init(params, jax.random.key(3))
        b = batch()
        np.testing.assert_allclose(
            logits(method.model, method.assemble(trainable, frozen), b), logits(model, params, b), atol=1e-6
        )

    def test_what_trains(self):
        model, params = tiny()
        trainable, frozen = adapters_method(model, placement="pfeiffer", size=4).init(params, jax.random.key(0))
        paths = tree_paths.flatten(trainable)
        adapters = sorted(p for p in paths if loading.is_new_param(p))
        self.assertEqual(len(adapters), 2 * 4)  # 2 layers x down/up x kernel/bias, FFN only.
        self.assertTrue(all(p.startswith("encoder/layer_") and "/output/adapter/" in p
                            and "/attention/" not in p for p in adapters), adapters)
        self.assertEqual(np.shape(paths["encoder/layer_1/output/adapter/down/kernel"]), (32, 4))
        self.assertFalse(np.any(paths["encoder/layer_1/output/adapter/up/kernel"]))
        others = sorted(p for p in paths if not loading.is_new_param(p))
        self.assertTrue(all(p.startswith("classifier/") or "layer_norm/" in p for p in others), others)
        self.assertIn("encoder/layer_0/attention/query/kernel", tree_paths.flatten(frozen))
        trainable, _ = adapters_method(model, size=4, train_layer_norms=False).init(params, jax.random.key(0))
        paths = tree_paths.flatten(trainable)
        self.assertEqual(len([p for p in paths if loading.is_new_param(p)]), 2 * 2 * 4)  # Houlsby.
        self.assertEqual(sorted(p for p in paths if not loading.is_new_param(p)),
                         ["classifier/bias", "classifier/kernel"])

    def test_new_leaves_are_seeded(self):
        model, params = tiny()
        method = adapters_method(model, size=4)
        a, _ = method.init(params, jax.random.key(1))
        b, _ = method.init(params, jax.random.key(1))
        c, _ = method.init(params, jax.random.key(2))
        path = "encoder/layer_0/output/adapter/down/kernel"
        np.testing.assert_array_equal(tree_paths.flatten(a)[path], tree_paths.flatten(b)[path])
        self.assertFalse(np.array_equal(tree_paths.flatten(a)[path], tree_paths.flatten(c)[path]))

    def test_distilbert(self):
        pre = loading.load_pretrained(FIXTURES / "tiny_distilbert")
        model = models.create_model(pre.model_type, pre.model_config, 2)
        params = loading.init_params(model, jax.random.key(0), pre.params)
        method = adapters_method(model, size=4)
        trainable, frozen = method.init(params, jax.random.key(0))
        self.assertIn("pre_classifier/dense/kernel", tree_paths.flatten(trainable))
        ids = jnp.array([[5, 6, 7, 8, 0, 0]], jnp.int32)
        mask = (ids > 0).astype(jnp.int32)
        out = method.model.apply({"params": method.assemble(trainable, frozen)}, ids, mask, None, deterministic=True)
        ref = model.apply({"params": params}, ids, mask, None, deterministic=True)
        np.testing.assert_allclose(out, ref, atol=1e-6)

    @parameterized.parameters(
        ({"size": 0}, r"config.adapters.size=0 must be an integer >= 1"),
        ({"size": 33}, r"config.adapters: .*size"),
        ({"placement": "middle", "size": 4}, r"config.adapters.placement='middle'; valid: houlsby, pfeiffer"),
        ({"activation": "sigmoidish", "size": 4}, r"config.adapters: .*activation"),
        ({"train": "nothing/.*", "size": 4}, "config.adapters.train rule"),
    )
    def test_bad_options_name_the_field(self, options, message):
        model, params = tiny()
        with self.assertRaisesRegex(methods.MethodError, message):
            adapters_method(model, **options).init(params, jax.random.key(0))


class AdaptersTrainTest(absltest.TestCase):
    def test_trains_reports_new_groups_and_round_trips(self):
        config = tiny_config("adapters", **{"adapters.size": 8})
        workdir = pathlib.Path(self.create_tempdir().full_path)
        final = train.train_and_evaluate(config, workdir)
        self.assertEqual(final["method"], "adapters")
        initial, finetuned, _ = analyze.run_params(workdir)
        new = [p for p in finetuned if p not in initial]
        self.assertTrue(new and all(loading.is_new_param(p) for p in new), new)
        from fft import distances

        table = distances.grouped(initial, finetuned, distances.DEFAULT_LAYER_GROUPS)
        self.assertIn("new/layer_0", table)
        self.assertTrue(np.isfinite(table["total"]["rel_l1"]))
        # The exported task reproduces the dev metrics on the adapted model.
        run_config = train.load_run_config(workdir)
        bundle = train.load_model(run_config, 2)
        method = methods.create(run_config, bundle.model)
        dense = method.import_task(workdir, bundle.params)
        data = train.load_data(run_config, tokenize.load_tokenizer(bundle.tokenizer_dir))
        eval_step = jax.jit(functools.partial(steps.eval_step, model=method.model, is_regression=False))
        metrics = train.evaluate(
            eval_step, jax.device_put(dense), {}, data.evals["dev"], batch_size=config.eval_batch_size,
            buckets=data.buckets, mesh=sharding.make_mesh(config.mesh), task=data.task,
        )
        self.assertAlmostEqual(metrics["loss"], final["eval"]["dev"]["loss"], places=5)

    def test_feature_cache_is_refused_when_every_layer_has_adapters(self):
        config = tiny_config("adapters", feature_cache=True)
        with self.assertRaisesRegex(ValueError, "feature_cache=True: needs frozen embeddings"):
            train.train_and_evaluate(config, self.create_tempdir().full_path)


if __name__ == "__main__":
    absltest.main()
