"""Tests for the pooling choice of the classifiers (`create_model(..., pooling=...)`,
`config.model.pooling`): 'cls' (the first token; BERT's pooler) and 'mean' (the mean of each
example's real tokens, sentence-transformers style).

The MiniLM fixture comes from `scripts/make_pooling_fixtures.py` (transformers + torch, run in a
separate venv); these tests never import torch.
"""

import functools
import json
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import traverse_util

from fft import errors, models, train
from fft.data import glue, tokenize
from fft.models import bert, loading
from tests import packed_reference
from tests.train_test import tiny_config

_FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
_TINY_DIRS = {"bert": _FIXTURES / "tiny_bert_cls", "distilbert": _FIXTURES / "tiny_distilbert"}


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(tree, sep="/")


def _run(model, params, *args, method=None, **kwargs):
    """Deterministic `model.apply` under jit (eager apply is slow on CPU)."""
    fn = jax.jit(functools.partial(model.apply, deterministic=True, method=method, **kwargs))
    return np.asarray(fn({"params": params}, *args))


def _masked_mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sum(hidden * mask) / sum(mask) over the sequence, in float64."""
    m = mask.astype(np.float64)[:, :, None]
    return (hidden.astype(np.float64) * m).sum(1) / m.sum(1)


class MiniLMMeanTest(absltest.TestCase):
    """The packaged all-MiniLM-L6-v2 with mean pooling, against torch's sentence-transformers
    style mean of transformers' BertModel (scripts/make_pooling_fixtures.py)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pretrained = loading.load_pretrained(loading.resolve_model_dir("minilm"))
        cls.model = models.create_model("bert", cls.pretrained.model_config, 2, pooling="mean")
        cls.params = loading.init_params(cls.model, jax.random.key(0), cls.pretrained.params)
        cls.fixture = np.load(_FIXTURES / "pooling" / "minilm_mean.npz")
        cls.batch = tuple(cls.fixture[k] for k in ("input_ids", "attention_mask", "token_type_ids"))

    def test_fixture_has_padding(self):
        lengths = self.fixture["attention_mask"].sum(1)
        self.assertEqual(len(lengths), 8)
        self.assertGreater(len(set(lengths.tolist())), 4)
        self.assertLess(lengths.min(), self.fixture["input_ids"].shape[1])

    def test_fixture_is_fft_encoding_of_the_stated_pairs(self):
        """The fixture's tokens are what fft's own pipeline makes of the real GLUE pairs it names."""
        from scripts import fixture_inputs

        pairs, sources = fixture_inputs.read_pairs()
        self.assertEqual(sources, [str(s) for s in self.fixture["source"]])
        tokenizer = tokenize.load_tokenizer(loading.resolve_model_dir("minilm"))
        enc = tokenize.encode(tokenizer, [glue.Example(a, b, 0) for a, b in pairs], 128)
        for i, (ids, types) in enumerate(zip(enc.input_ids, enc.token_type_ids)):
            n = int(self.fixture["attention_mask"][i].sum())
            np.testing.assert_array_equal(ids, self.fixture["input_ids"][i, :n])
            np.testing.assert_array_equal(types, self.fixture["token_type_ids"][i, :n])

    def test_pool_matches_torch_mean_pooling(self):
        pooled = _run(self.model, self.params, *self.batch, method=self.model.pool)
        self.assertEqual(pooled.dtype, np.float32)
        np.testing.assert_allclose(pooled, self.fixture["mean_embedding"], atol=1e-5, rtol=0)

    def test_logits_classify_the_mean(self):
        logits = _run(self.model, self.params, *self.batch)
        head = self.params["classifier"]
        expected = self.fixture["mean_embedding"] @ head["kernel"] + head["bias"]
        np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)

    def test_no_pooler_params_and_the_checkpoint_is_loaded(self):
        self.assertEqual(self.model.pooling, "mean")
        self.assertIn("pooler", self.pretrained.params)  # The checkpoint has one ...
        self.assertEqual(sorted(self.params), ["classifier", "embeddings", "encoder"])  # ... unused.
        body = _flat({k: v for k, v in self.pretrained.params.items() if k != "pooler"})
        flat = _flat(self.params)
        self.assertEqual(set(flat) - set(body), {"classifier/kernel", "classifier/bias"})
        for path, value in body.items():
            np.testing.assert_array_equal(flat[path], value, err_msg=path)
        # The head draws as with cls pooling (same seed, same head paths).
        cls_model = models.create_model("bert", self.pretrained.model_config, 2)
        cls_params = loading.init_params(cls_model, jax.random.key(0), self.pretrained.params)
        self.assertIn("pooler", cls_params)
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(self.params["classifier"][leaf], cls_params["classifier"][leaf])


class LoadingTest(absltest.TestCase):
    """Mean-pooled models drop the checkpoint's pooler silently and nothing else."""

    def setUp(self):
        super().setUp()
        self.pretrained = {t: loading.load_pretrained(d) for t, d in _TINY_DIRS.items()}

    def _model(self, model_type, pooling):
        return models.create_model(model_type, self.pretrained[model_type].model_config, 3, pooling=pooling)

    def test_pooler_is_ignored_without_warning(self):
        model = self._model("bert", "mean")
        self.assertEqual(model.unused_pretrained, ("pooler",))
        with warnings.catch_warnings(record=True) as caught, self.assertNoLogs(level="WARNING"):
            warnings.simplefilter("always")
            params = loading.init_params(model, jax.random.key(0), self.pretrained["bert"].params)
        self.assertEqual(caught, [])
        self.assertNotIn("pooler", params)
        # The trained tree of a mean-pooled model (no pooler) reloads as well.
        again = loading.init_params(model, jax.random.key(1), params)
        self.assertEqual(_flat(again).keys(), _flat(params).keys())

    def test_other_unexpected_weights_are_still_rejected(self):
        model = self._model("bert", "mean")
        extra = {**self.pretrained["bert"].params, "pooler2": {"dense": {"bias": np.zeros(32, np.float32)}}}
        with self.assertRaisesRegex(loading.CheckpointError, r"unexpected \['pooler2/dense/bias'\]"):
            loading.init_params(model, jax.random.key(0), extra)
        # DistilBERT never has a pooler: one in its tree is unexpected, whatever the pooling.
        pooler = {"dense": {"kernel": np.zeros((32, 32), np.float32), "bias": np.zeros(32, np.float32)}}
        for pooling in bert.POOLINGS:
            with self.subTest(pooling=pooling), self.assertRaisesRegex(loading.CheckpointError, "pooler/dense"):
                loading.init_params(
                    self._model("distilbert", pooling), jax.random.key(0),
                    {**self.pretrained["distilbert"].params, "pooler": pooler},
                )

    def test_cls_pooling_is_the_default_and_keeps_the_pooler(self):
        config = self.pretrained["bert"].model_config
        default = models.create_model("bert", config, 3)
        explicit = models.create_model("bert", config, 3, pooling="cls")
        self.assertEqual(default.pooling, "cls")
        self.assertEqual(default, explicit)
        self.assertEqual(default.unused_pretrained, ())
        params = loading.init_params(default, jax.random.key(0), self.pretrained["bert"].params)
        self.assertIn("pooler", params)
        # HF's BertForSequenceClassification (its weights, our seed's head) pools the same way.
        ref = np.load(_TINY_DIRS["bert"] / "reference.npz")
        batch = (ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
        np.testing.assert_allclose(
            _run(default, params, *batch, method=default.pool), ref["pooler_output"], atol=1e-5, rtol=0
        )

    def test_with_adapters_keeps_the_pooling(self):
        model = models.with_adapters(self._model("bert", "mean"), bert.AdapterSpec(4))
        self.assertEqual(model.pooling, "mean")
        params = loading.init_params(model, jax.random.key(0), self.pretrained["bert"].params)
        self.assertNotIn("pooler", params)


class MeanPoolingTest(parameterized.TestCase):
    """Mean pooling on the tiny fixture models: the math, packed rows, the feature-cache path."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pretrained = {t: loading.load_pretrained(d) for t, d in _TINY_DIRS.items()}

    def _setup(self, model_type, pooling="mean"):
        pretrained = self.pretrained[model_type]
        model = models.create_model(model_type, pretrained.model_config, 3, pooling=pooling)
        params = loading.init_params(model, jax.random.key(0), pretrained.params)
        return model, params

    def test_distilbert_mean_matches_numpy(self):
        model, params = self._setup("distilbert")
        ref = np.load(_TINY_DIRS["distilbert"] / "reference.npz")
        batch = (ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
        self.assertGreater(len(set(ref["attention_mask"].sum(1).tolist())), 1)  # Real padding.
        hidden = _run(model, params, *batch, method=model.encode)
        expected = _masked_mean(hidden, ref["attention_mask"])
        pooled = _run(model, params, *batch, method=model.pool)
        np.testing.assert_allclose(pooled, expected, atol=1e-6, rtol=0)
        # ... and against transformers' hidden states of the fixture.
        np.testing.assert_allclose(
            pooled, _masked_mean(ref["last_hidden_state"], ref["attention_mask"]), atol=1e-5, rtol=0
        )
        # The head: pre_classifier -> ReLU -> (dropout) -> classifier.
        pre, head = params["pre_classifier"]["dense"], params["classifier"]
        expected_logits = np.maximum(expected @ pre["kernel"] + pre["bias"], 0) @ head["kernel"] + head["bias"]
        np.testing.assert_allclose(_run(model, params, *batch), expected_logits, atol=1e-5, rtol=0)
        # DistilBERT's parameters do not depend on the pooling.
        _, cls_params = self._setup("distilbert", "cls")
        self.assertEqual(_flat(params).keys(), _flat(cls_params).keys())

    def test_bert_mean_ignores_padding(self):
        model, params = self._setup("bert")
        ref = np.load(_TINY_DIRS["bert"] / "reference.npz")
        ids, mask, types = ref["input_ids"], ref["attention_mask"], ref["token_type_ids"]
        pooled = _run(model, params, ids, mask, types, method=model.pool)
        hidden = _run(model, params, ids, mask, types, method=model.encode)
        np.testing.assert_allclose(pooled, _masked_mean(hidden, mask), atol=1e-6, rtol=0)
        # Garbage in the padding changes nothing; a row alone, unpadded, pools the same.
        noisy = np.where(mask > 0, ids, 7)
        np.testing.assert_allclose(_run(model, params, noisy, mask, types, method=model.pool), pooled, atol=1e-6)
        short = int(mask[2].sum())
        alone = _run(model, params, ids[2:, :short], mask[2:, :short], types[2:, :short], method=model.pool)
        np.testing.assert_allclose(alone[0], pooled[2], atol=1e-5)
        # No mask: every token counts; an all-padding row gives zeros, not NaN.
        np.testing.assert_allclose(
            _run(model, params, ids, None, types, method=model.pool),
            _run(model, params, ids, None, types, method=model.encode).mean(1), atol=1e-6,
        )
        empty = _run(model, params, ids, np.zeros_like(mask), types, method=model.pool)
        np.testing.assert_array_equal(empty, 0.0)

    @parameterized.named_parameters(("bert", "bert"), ("distilbert", "distilbert"))
    def test_packed_rows_match_one_example_per_row(self, model_type):
        model, params = self._setup(model_type)
        enc = packed_reference.encoded(24, max_len=30, vocab=self.pretrained[model_type].model_config.vocab_size)
        packed, rows = packed_reference.packed_and_rows(enc)
        self.assertLess(packed["input_ids"].shape[0], 12)  # Really packed.
        self.assertFalse((packed["index"] >= 0).all())  # Empty slots too (ignored, but finite).
        packed_reference.assert_logits_match(model, params, packed, rows)

    def test_packed_gradient_matches(self):
        model, params = self._setup("bert")
        enc = packed_reference.encoded(24, seed=1, max_len=30, vocab=self.pretrained["bert"].model_config.vocab_size)
        packed_reference.assert_gradients_match(model, params, *packed_reference.packed_and_rows(enc))

    @parameterized.named_parameters(("bert", "bert"), ("distilbert", "distilbert"))
    def test_feature_cache_path_pools_the_same(self, model_type):
        model, params = self._setup(model_type)
        ref = np.load(_TINY_DIRS[model_type] / "reference.npz")
        ids, mask, types = ref["input_ids"], ref["attention_mask"], ref["token_type_ids"]
        prefix = jax.jit(functools.partial(model.apply, method=model.prefix, num_layers=1))
        hidden = prefix({"params": params}, ids, mask, types)
        cached = _run(model, params, hidden, mask, method=model.from_prefix, start=1)
        np.testing.assert_allclose(cached, _run(model, params, ids, mask, types), atol=1e-5, rtol=0)


class ConfigTest(absltest.TestCase):
    def test_unknown_pooling_names_the_value_and_the_valid_ones(self):
        config = loading.load_pretrained(_TINY_DIRS["bert"]).model_config
        with self.assertRaisesRegex(
            models.ModelConfigError, r"config\.model\.pooling='max' is not a pooling; valid: 'cls', 'mean'"
        ) as caught:
            models.create_model("bert", config, 2, pooling="max")
        self.assertIsInstance(caught.exception, errors.FftError)
        self.assertIsInstance(caught.exception, ValueError)
        with self.assertRaisesRegex(ValueError, "Unknown pooling 'max'"):  # Built directly.
            ids = jnp.ones((1, 4), jnp.int32)
            bert.BertForSequenceClassification(config, 2, pooling="max").init(
                jax.random.key(0), ids, deterministic=True
            )

    def test_config_default_and_load_model(self):
        config = tiny_config()
        self.assertEqual(config.model.pooling, "auto")  # Random init: no folder to ask, so cls.
        self.assertEqual(train.load_model(config, 2).model.pooling, "cls")
        self.assertEqual(train.with_concrete_pooling(config).model.pooling, "cls")
        self.assertEqual(config.model.pooling, "auto")  # with_concrete_pooling copies.
        config.model.pooling = "avg"
        with self.assertRaisesRegex(models.ModelConfigError, "config.model.pooling='avg'"):
            train.load_model(config, 2)
        # A run config from before the field builds its model with cls pooling.
        del config.model["pooling"]
        self.assertEqual(train.load_model(config, 2).model.pooling, "cls")

    def test_tiny_run_records_the_concrete_pooling(self):
        workdir = pathlib.Path(self.create_tempdir().full_path)
        train.train_and_evaluate(tiny_config(), workdir)
        self.assertEqual(train.load_run_config(workdir).model.pooling, "cls")

    def test_tiny_training_with_mean_pooling(self):
        config = tiny_config(**{"model.pooling": "mean"})
        self.assertTrue(config.data.packing)
        bundle = train.load_model(config, 2)
        self.assertEqual(bundle.model.pooling, "mean")
        self.assertNotIn("pooler", bundle.params)
        final = train.train_and_evaluate(config, self.create_tempdir().full_path)
        self.assertEqual(final["steps"], 6)
        self.assertBetween(final["eval"]["dev"]["accuracy"], 0.0, 1.0)


def _write_sentence_transformers_folder(root: pathlib.Path, modes: dict | str | None, *, path="1_Pooling"):
    """modules.json (Transformer, Pooling at `path`, Normalize) and the pooling module's config."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": path, "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (root / "modules.json").write_text(json.dumps(modules))
    if modes is not None:
        (root / path).mkdir()
        text = modes if isinstance(modes, str) else json.dumps(modes)
        (root / path / "config.json").write_text(text)


def _modes(**on) -> dict:
    names = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
    return {"word_embedding_dimension": 32, **{f"pooling_mode_{n}": bool(on.get(n)) for n in names}}


class AutoPoolingTest(absltest.TestCase):
    """`pooling='auto'` (the config default) reads the folder's sentence-transformers pooling."""

    def test_packaged_minilm_is_mean(self):
        folder = loading.resolve_model_dir("minilm")
        self.assertEqual(loading.folder_pooling(folder), "mean")
        self.assertEqual(loading.resolve_pooling("auto", folder), "mean")
        self.assertEqual(loading.resolve_pooling("cls", folder), "cls")  # An explicit choice wins.

    def test_plain_hugging_face_folder_is_cls(self):
        self.assertIsNone(loading.folder_pooling(_TINY_DIRS["bert"]))
        self.assertEqual(loading.resolve_pooling("auto", _TINY_DIRS["bert"]), "cls")
        self.assertEqual(loading.resolve_pooling("auto", None), "cls")

    def test_sentence_transformers_modes(self):
        cases = [(_modes(mean_tokens=True), "mean"), (_modes(cls_token=True), "cls"),
                 (_modes(max_tokens=True), None), (_modes(mean_tokens=True, max_tokens=True), None),
                 (_modes(), None), (None, None)]
        for modes, expected in cases:
            root = pathlib.Path(self.create_tempdir().full_path)
            _write_sentence_transformers_folder(root, modes, path="pool_module")
            self.assertEqual(loading.folder_pooling(root), expected, modes)
            self.assertEqual(loading.resolve_pooling("auto", root), expected or "cls", modes)

    def test_malformed_files_name_the_file(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        _write_sentence_transformers_folder(root, "{not json")
        with self.assertRaisesRegex(loading.ModelNotFoundError, r"1_Pooling/config\.json: not readable JSON"):
            loading.folder_pooling(root)
        (root / "modules.json").write_text('{"0": "x"}')
        with self.assertRaisesRegex(loading.ModelNotFoundError, r"modules\.json: expected a JSON list"):
            loading.folder_pooling(root)

    def test_config_auto_with_a_pretrained_folder(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        for f in _TINY_DIRS["bert"].iterdir():
            if f.is_file():
                (root / f.name).write_bytes(f.read_bytes())
        config = tiny_config()
        config.model.random_init.enabled = False
        config.model.name = str(root)
        self.assertEqual(train.load_model(config, 2).model.pooling, "cls")
        _write_sentence_transformers_folder(root, _modes(mean_tokens=True))
        bundle = train.load_model(config, 2)
        self.assertEqual(bundle.model.pooling, "mean")
        self.assertNotIn("pooler", bundle.params)
        self.assertEqual(train.with_concrete_pooling(config).model.pooling, "mean")


if __name__ == "__main__":
    absltest.main()
