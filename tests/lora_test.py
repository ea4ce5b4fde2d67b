"""LoRA as a method: step 0 is the pretrained model, side and merge modes agree, frozen leaves get
no gradient, the merged model is the dense task model, and bad options name their field."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs import glue as glue_config
from fft import methods, models, steps, train, tree_paths
from fft.methods import lora
from tests.train_test import tiny_config

CFG = models.bert.BertConfig(
    vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
    max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0,
)


def tiny(num_labels=3):
    model = models.create_model("bert", CFG, num_labels)
    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.device_get(model.init(jax.random.key(0), ids, ids, ids, deterministic=True)["params"])
    return model, params


def batch(seed=0, rows=4, length=12):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 100, (rows, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
            "labels": rng.integers(0, 3, rows).astype(np.int32), "weights": np.ones(rows, np.float32)}


def lora_method(model, **options):
    config = glue_config.get_config("task=rte,tiny,method=lora")
    config.lora.update(options)
    return methods.create(config, model)


def randomize_b(trainable, seed=1):
    """LoRA factors with nonzero B (training would get there), so the update is not zero."""
    flat = tree_paths.flatten(trainable)
    rng = np.random.default_rng(seed)
    for p in flat:
        if p.startswith("lora/") and p.endswith("/b"):
            flat[p] = rng.normal(0, 1.0, np.shape(flat[p])).astype(np.float32)
    return tree_paths.unflatten(flat)


def logits(model, params, b):
    return model.apply({"params": params}, b["input_ids"], b["attention_mask"], b["token_type_ids"],
                       deterministic=True)


class LoraTest(parameterized.TestCase):
    @parameterized.parameters("side", "merge")
    def test_step_zero_is_the_pretrained_model(self, mode):
        model, params = tiny()
        method = lora_method(model, mode=mode)
        trainable, frozen = method.init(params, jax.random.key(3))
        b = batch()
        np.testing.assert_array_equal(
            logits(method.model, method.assemble(trainable, frozen), b), logits(model, params, b)
        )

    def test_trainable_tree_holds_factors_and_head_only(self):
        model, params = tiny()
        trainable, frozen = lora_method(model, rank=4).init(params, jax.random.key(3))
        paths = tree_paths.flatten(trainable)
        self.assertEqual(sorted(p for p in paths if not p.startswith("lora/")), ["classifier/bias", "classifier/kernel"])
        self.assertEqual(np.shape(paths["lora/encoder/layer_1/attention/value/a"]), (32, 4))
        self.assertEqual(np.shape(paths["lora/encoder/layer_1/attention/value/b"]), (4, 32))
        self.assertFalse(np.any(paths["lora/encoder/layer_1/attention/value/b"]))
        bound = 1 / np.sqrt(32)
        self.assertLessEqual(np.abs(paths["lora/encoder/layer_0/attention/query/a"]).max(), bound)
        self.assertEqual(len([p for p in paths if p.startswith("lora/")]), 2 * 2 * 2)  # 2 layers x q,v x A,B
        self.assertNotIn("classifier", frozen)
        self.assertIn("kernel", frozen["encoder"]["layer_0"]["attention"]["query"])

    def test_all_linear_preset_and_extra_trained_leaves(self):
        model, params = tiny()
        trainable, _ = lora_method(model, targets="all_linear", train="pooler/.*;.*/bias").init(
            params, jax.random.key(3)
        )
        modules = {p.rsplit("/", 1)[0] for p in tree_paths.flatten(trainable) if p.startswith("lora/")}
        self.assertEqual(len(modules), 2 * 6 + 1)  # Six Dense per layer and the pooler.
        self.assertIn("pooler/dense/kernel", tree_paths.flatten(trainable))
        self.assertIn("encoder/layer_0/output/dense/bias", tree_paths.flatten(trainable))

    def test_side_and_merge_agree_on_logits_loss_and_gradients(self):
        model, params = tiny()
        side, merge = lora_method(model, mode="side"), lora_method(model, mode="merge")
        trainable, frozen = side.init(params, jax.random.key(3))
        trainable = randomize_b(trainable)
        b = batch()
        out_side = logits(side.model, side.assemble(trainable, frozen), b)
        out_merge = logits(merge.model, merge.assemble(trainable, frozen), b)
        out_dense = logits(model, side.merged(trainable, frozen), b)
        np.testing.assert_allclose(out_side, out_merge, atol=2e-5)
        np.testing.assert_allclose(out_dense, out_merge, atol=1e-6)
        self.assertGreater(np.abs(out_side - logits(model, params, b)).max(), 1e-4)  # B != 0 matters.

        def loss(method, tr):
            out = steps._apply(method.model, method.assemble(tr, frozen), b, deterministic=True)
            return steps.weighted_mean(steps.example_losses(out, b["labels"], False), b["weights"])

        g_side = jax.grad(functools.partial(loss, side))(trainable)
        g_merge = jax.grad(functools.partial(loss, merge))(trainable)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-5), g_side, g_merge)
        self.assertGreater(float(jnp.abs(g_side["lora"]["encoder"]["layer_0"]["attention"]["query"]["a"]).max()), 0)

    def test_dropout_on_the_lora_input_only_in_training(self):
        model, params = tiny()
        method = lora_method(model, dropout=0.5)
        trainable, frozen = method.init(params, jax.random.key(3))
        trainable = randomize_b(trainable)
        b = batch()
        assembled = method.assemble(trainable, frozen)
        args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
        det = method.model.apply({"params": assembled}, *args, deterministic=True)
        r1 = method.model.apply({"params": assembled}, *args, deterministic=False, rngs={"dropout": jax.random.key(1)})
        r2 = method.model.apply({"params": assembled}, *args, deterministic=False, rngs={"dropout": jax.random.key(2)})
        self.assertGreater(np.abs(r1 - r2).max(), 1e-4)  # Model dropout is 0: only LoRA's differs.
        np.testing.assert_allclose(det, logits(model, method.merged(trainable, frozen), b), atol=2e-5)

    def test_per_example_factors(self):
        model, params = tiny()
        method = lora_method(model)
        trainable, frozen = method.init(params, jax.random.key(3))
        tasks = [randomize_b(trainable, seed=s) for s in (1, 2)]
        b = batch(rows=4)
        task_ids = np.array([0, 1, 1, 0])
        stacked = jax.tree.map(lambda *xs: np.stack(xs), *[t["lora"] for t in tasks])
        per_example = jax.tree.map(lambda x: x[task_ids], stacked)
        params_pe = {**method.assemble(tasks[0], frozen), "lora": per_example}
        out = logits(method.model, params_pe, b)
        for i, t in enumerate(task_ids):
            one = logits(model, method.merged(tasks[t], frozen), b)[i]
            np.testing.assert_allclose(out[i], one, atol=2e-5)

    @parameterized.parameters(
        ({"rank": 0}, "config.lora.rank=0"),
        ({"rank": 33}, r"config.lora.rank=33 must be in 1..32"),
        ({"targets": r"encoder/layer_\d+/attention/nothing"}, "config.lora.targets rule .* matches no Dense"),
        ({"targets": "classifier"}, "matches no Dense"),
        ({"init": "zeros"}, "config.lora.init='zeros'"),
        ({"mode": "merge", "dropout": 0.1}, "config.lora.dropout needs"),
        ({"train": "nothing/.*"}, "config.lora.train rule"),
    )
    def test_bad_options_name_the_field(self, options, message):
        model, params = tiny()
        with self.assertRaisesRegex(methods.MethodError, message):
            lora_method(model, **options).init(params, jax.random.key(0))

    def test_cache_start_is_the_lowest_target(self):
        model, params = tiny()
        method = lora_method(model, targets=r"encoder/layer_1/attention/(query|value)")
        trainable, _ = method.init(params, jax.random.key(0))
        self.assertEqual(method.cache_start(trainable), 1)
        trainable, _ = lora_method(model).init(params, jax.random.key(0))
        self.assertEqual(method.cache_start(trainable), 0)


class LoraPeftExportTest(absltest.TestCase):
    def test_export_writes_a_peft_folder_that_loads_back(self):
        from fft import peft_io
        from fft.models import loading

        fixture = pathlib.Path(__file__).resolve().parent / "fixtures" / "tiny_bert_cls"
        pre = loading.load_pretrained(fixture)
        model = models.create_model(pre.model_type, pre.model_config, 3)
        params = loading.init_params(model, jax.random.key(0), pre.params)
        config = glue_config.get_config("task=rte,method=lora")
        config.model.name = str(fixture)
        config.lora.rank = 4
        method = methods.create(config, model)
        trainable, frozen = method.init(params, jax.random.key(1))
        trainable = randomize_b(trainable)
        out = pathlib.Path(self.create_tempdir().full_path)
        report = method.export(trainable, out, {"task": "rte"})
        self.assertEqual(report["peft_dir"], lora.PEFT_DIR)
        peft_model, peft_params = peft_io.load(out / lora.PEFT_DIR)
        ids = np.array([[2, 5, 9, 14, 3, 0, 0]], np.int32)
        args = (ids, (ids > 0).astype(np.int32), np.zeros_like(ids))
        ours = model.apply({"params": method.merged(trainable, frozen)}, *args, deterministic=True)
        theirs = peft_model.apply({"params": peft_params}, *args, deterministic=True)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


class LoraTrainTest(absltest.TestCase):
    def test_trains_exports_and_reimports_the_dense_model(self):
        config = tiny_config("lora", **{"lora.rank": 4, "lora.dropout": 0.1})
        workdir = pathlib.Path(self.create_tempdir().full_path)
        final = train.train_and_evaluate(config, workdir)
        self.assertEqual(final["method"], "lora")
        from fft import checkpoint

        state, _ = checkpoint.load_state_dict(workdir)
        saved = tree_paths.flatten(state["params"])
        self.assertTrue(all(p.startswith(("lora/", "classifier/")) for p in saved), sorted(saved))
        self.assertEqual(final["trainable_params"], sum(np.size(v) for v in saved.values()))
        self.assertEqual(final["stored_bytes"], (workdir / lora.DELTA_FILE).stat().st_size)
        # Per-group learning rates are logged.
        from tests.train_test import event_scalars

        tags = event_scalars(workdir)
        self.assertIn("train/learning_rate/lora", tags)
        self.assertIn("train/learning_rate/head", tags)
        # The exported task, merged into the step-0 model, reproduces the dev metrics.
        bundle = train.load_model(config, 2)
        dense = methods.create(train.load_run_config(workdir), bundle.model).import_task(workdir, bundle.params)
        _, merged = train.task_params(train.load_run_config(workdir), state["params"])
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), dense, merged)
        data = train.load_data(config, __import__("fft").data.tokenize.load_tokenizer(bundle.tokenizer_dir))
        from fft import sharding

        eval_step = jax.jit(functools.partial(steps.eval_step, model=bundle.model, is_regression=False))
        metrics = train.evaluate(
            eval_step, jax.device_put(dense), {}, data.evals["dev"], batch_size=config.eval_batch_size,
            buckets=data.buckets, mesh=sharding.make_mesh(config.mesh), task=data.task,
        )
        self.assertAlmostEqual(metrics["loss"], final["eval"]["dev"]["loss"], places=5)

    def test_feature_cache_with_lora_on_the_top_layer(self):
        config = tiny_config("lora", **{"lora.targets": r"encoder/layer_1/attention/(query|value)",
                                        "feature_cache": True, "data.packing": False})
        final = train.train_and_evaluate(config, self.create_tempdir().full_path)
        self.assertTrue(final["feature_cache"])


if __name__ == "__main__":
    absltest.main()
