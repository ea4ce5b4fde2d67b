"""Tests for bottleneck adapters in fft.models: identity at init, parameter paths, a NumPy
reference of one encoder layer, per-example weights, packed rows, loading and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import traverse_util
from scipy import special

from fft import models
from fft.models import bert, distilbert, loading

HIDDEN, LAYERS, HEADS, INTERMEDIATE, VOCAB = 32, 2, 4, 64, 64
HOULSBY = bert.AdapterSpec(size=8)
PFEIFFER = bert.AdapterSpec(size=4, sites=("ffn",))
_SUB = ("down/kernel", "down/bias", "up/kernel", "up/bias")


def tiny_config(model_type, adapter=None):
    common = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_layers": LAYERS, "num_heads": HEADS}
    common.update(intermediate_size=INTERMEDIATE, max_position_embeddings=32, adapter=adapter)
    if model_type == "bert":
        return bert.BertConfig(**common)
    return distilbert.DistilBertConfig(**common)


def tiny_model(model_type, num_labels=3, dtype=jnp.float32):
    return models.create_model(model_type, tiny_config(model_type), num_labels, dtype)


def flat(tree):
    return traverse_util.flatten_dict(tree, sep="/")


def unflat(d):
    return traverse_util.unflatten_dict(d, sep="/")


def init(model, seed=0, shape=(2, 8)):
    ids = jnp.zeros(shape, jnp.int32)
    return model.init(jax.random.key(seed), ids, ids, ids, deterministic=True)["params"]


def batch(seed=0, shape=(3, 9)):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, shape).astype(np.int32)
    mask = np.ones(shape, np.int32)
    mask[1, 6:] = 0  # one padded row
    ids[1, 6:] = 0
    types = (np.arange(shape[1]) >= shape[1] // 2).astype(np.int32)[None].repeat(shape[0], 0)
    return ids, mask, types


@functools.cache
def logits_fn(model):
    return jax.jit(
        lambda p, ids, mask, types: model.apply({"params": p}, ids, mask, types, deterministic=True)
    )


def randomize_adapters(params, seed=1, scale=0.3):
    """Random non-zero values for every adapter leaf (the others unchanged)."""
    rng = np.random.default_rng(seed)
    out = {
        p: (scale * rng.normal(size=v.shape)).astype(np.float32) if loading.is_new_param(p) else v
        for p, v in flat(params).items()
    }
    return unflat(out)


def adapter_paths(spec, num_layers=LAYERS):
    blocks = {"attention": "attention/output", "ffn": "output"}
    return {
        f"encoder/layer_{i}/{blocks[site]}/adapter/{sub}"
        for i in range(num_layers)
        for site in spec.sites
        for sub in _SUB
    }


class IdentityAndPathsTest(parameterized.TestCase):
    @parameterized.parameters("bert", "distilbert")
    def test_identity_at_init(self, model_type):
        base = tiny_model(model_type)
        adapted = models.with_adapters(base, HOULSBY)
        ids, mask, types = batch()
        # The adapter model's own init, its shared weights given to the plain model. Op by op
        # (eager) the adapter adds exactly 0; jit may fuse the two graphs differently, so there
        # the logits agree to float32 rounding.
        params = init(adapted, seed=3)
        shared = unflat({p: v for p, v in flat(params).items() if not loading.is_new_param(p)})
        apply = lambda m, p: m.apply({"params": p}, ids, mask, types, deterministic=True)
        np.testing.assert_array_equal(apply(adapted, params), apply(base, shared))
        want = logits_fn(base)(shared, ids, mask, types)
        got = logits_fn(adapted)(params, ids, mask, types)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        # And through loading: the same pretrained tree, adapters initialised by init_params.
        pretrained = {k: v for k, v in init(base).items() if k not in base.head_names}
        p_base = loading.init_params(base, jax.random.key(5), pretrained)
        p_adapted = loading.init_params(adapted, jax.random.key(5), pretrained)
        np.testing.assert_array_equal(apply(adapted, p_adapted), apply(base, p_base))
        want = logits_fn(base)(p_base, ids, mask, types)
        got = logits_fn(adapted)(p_adapted, ids, mask, types)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        # Non-zero adapters do change the output.
        moved = logits_fn(adapted)(randomize_adapters(p_adapted), ids, mask, types)
        self.assertGreater(float(np.abs(np.asarray(moved) - np.asarray(want)).max()), 1e-3)

    @parameterized.product(model_type=("bert", "distilbert"), kind=("houlsby", "pfeiffer"))
    def test_param_paths_and_shapes(self, model_type, kind):
        spec = HOULSBY if kind == "houlsby" else PFEIFFER
        base = tiny_model(model_type)
        adapted = models.with_adapters(base, spec)
        self.assertEqual(adapted.config.adapter, spec)
        self.assertIsNone(base.config.adapter)
        base_shapes = {p: v.shape for p, v in flat(init(base)).items()}
        shapes = {p: v.shape for p, v in flat(init(adapted)).items()}
        dtypes = {v.dtype for v in flat(init(adapted)).values()}
        self.assertEqual(dtypes, {jnp.dtype(jnp.float32)})
        new = {p: s for p, s in shapes.items() if p not in base_shapes}
        self.assertEqual({p: shapes[p] for p in base_shapes}, base_shapes)
        self.assertEqual(set(new), adapter_paths(spec))
        self.assertLen(new, LAYERS * len(spec.sites) * 4)
        want = {
            "down/kernel": (HIDDEN, spec.size),
            "down/bias": (spec.size,),
            "up/kernel": (spec.size, HIDDEN),
            "up/bias": (HIDDEN,),
        }
        for path, shape in new.items():
            self.assertEqual(shape, want[path.split("/adapter/")[1]], path)
        if kind == "pfeiffer":
            self.assertNotIn("encoder/layer_0/attention/output/adapter/up/kernel", shapes)
        # Removing the adapters gives back the plain model's tree.
        removed = models.with_adapters(adapted, None)
        self.assertEqual({p: v.shape for p, v in flat(init(removed)).items()}, base_shapes)

    def test_flax_init_is_near_identity(self):
        params = flat(init(models.with_adapters(tiny_model("bert"), HOULSBY), seed=2))
        kernels = [v for p, v in params.items() if p.endswith("adapter/down/kernel")]
        self.assertLen(kernels, 4)
        for k in kernels:
            self.assertBetween(float(np.std(k)), 0.01, 0.03)
        self.assertFalse(np.array_equal(kernels[0], kernels[1]))
        for p, v in params.items():
            if loading.is_new_param(p) and not p.endswith("down/kernel"):
                np.testing.assert_array_equal(v, 0.0, err_msg=p)

    def test_bfloat16_compute_keeps_float32_params(self):
        module = bert.Adapter(HOULSBY, jnp.bfloat16)
        y = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, HIDDEN)), jnp.float32)
        params = module.init(jax.random.key(0), y)["params"]
        self.assertEqual({v.dtype for v in flat(params).values()}, {np.dtype(np.float32)})
        params = randomize_adapters(params)
        out = module.apply({"params": params}, y)
        self.assertEqual(out.dtype, jnp.bfloat16)
        want = np_bottleneck(np.asarray(y, np.float64), params, "relu")
        np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=0.1, rtol=0.02)


# --- A NumPy (float64) encoder layer, written from the BERT/adapter papers, not the flax code. ---

NP_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


def np_linear(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_layer_norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def np_bottleneck(y, p, act):
    return y + np_linear(NP_ACTIVATIONS[act](np_linear(y, p["down"])), p["up"])


def np_output_block(x, residual, p, act, eps):
    """dense -> adapter (if any) -> + residual -> layer norm."""
    y = np_linear(x, p["dense"])
    if "adapter" in p:
        y = np_bottleneck(y, p["adapter"], act)
    return np_layer_norm(y + residual, p["layer_norm"], eps)


def np_encoder_layer(x, key_mask, p, heads, hidden_act, adapter_act, eps):
    b, s, h = x.shape
    d = h // heads
    att = p["attention"]

    def split(t):  # [b, s, h] -> [b, heads, s, d]
        return t.reshape(b, s, heads, d).transpose(0, 2, 1, 3)

    q, k, v = (split(np_linear(x, att[n])) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    scores = np.where(key_mask[:, None, None, :] > 0, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, h)
    x = np_output_block(context, x, att["output"], adapter_act, eps)
    inner = NP_ACTIVATIONS[hidden_act](np_linear(x, p["intermediate"]["dense"]))
    return np_output_block(inner, x, p["output"], adapter_act, eps)


class ReferenceTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("houlsby_relu", ("attention", "ffn"), "relu", "gelu"),
        ("pfeiffer_silu", ("ffn",), "silu", "relu"),
        ("attention_only_gelu", ("attention",), "gelu", "gelu"),
    )
    def test_layer_matches_numpy(self, sites, adapter_act, hidden_act):
        adapter = bert.AdapterSpec(size=6, sites=sites, activation=adapter_act)
        spec = bert.EncoderSpec(
            num_layers=1,
            num_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            hidden_act=hidden_act,
            hidden_dropout=0.1,
            attention_dropout=0.1,
            layer_norm_eps=1e-12,
            adapter=adapter,
        )
        layer = bert.Layer(spec, jnp.float32)
        rng = np.random.default_rng(7)
        x = rng.normal(size=(2, 7, HIDDEN)).astype(np.float32)
        mask = np.ones((2, 7), np.int32)
        mask[0, 5:] = 0
        bias = bert.attention_bias(jnp.asarray(mask), 7)
        shapes = layer.init(jax.random.key(0), x, bias, deterministic=True)["params"]
        # Every leaf random and non-zero (layer-norm scales around 1).
        params = {}
        for path, v in flat(shapes).items():
            centre = 1.0 if path.endswith("layer_norm/scale") else 0.0
            params[path] = (centre + 0.2 * rng.normal(size=v.shape)).astype(np.float32)
        self.assertEqual(sum("adapter" in p for p in params), 4 * len(sites))
        params = unflat(params)
        got = jax.jit(lambda p: layer.apply({"params": p}, x, bias, deterministic=True))(params)
        want = np_encoder_layer(
            x.astype(np.float64), mask, params, HEADS, hidden_act, adapter_act, 1e-12
        )
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
        # The adapters matter: the same layer without them differs.
        plain = {p: v for p, v in flat(params).items() if "adapter" not in p}
        without = np_encoder_layer(x, mask, unflat(plain), HEADS, hidden_act, adapter_act, 1e-12)
        self.assertGreater(float(np.abs(without - want).max()), 1e-2)


class AdapterApplyTest(parameterized.TestCase):
    def _params(self, rng, lead=()):
        def draw(*shape):
            return jnp.asarray(0.5 * rng.normal(size=(*lead, *shape)), jnp.float32)

        return {
            "down": {"kernel": draw(HIDDEN, 5), "bias": draw(5)},
            "up": {"kernel": draw(5, HIDDEN), "bias": draw(HIDDEN)},
        }

    @parameterized.parameters(((4, 6, HIDDEN),), ((4, HIDDEN),), ((4, 2, 3, HIDDEN),))
    def test_per_example_weights(self, shape):
        rng = np.random.default_rng(0)
        y = jnp.asarray(rng.normal(size=shape), jnp.float32)
        stacked = self._params(rng, lead=(shape[0],))
        got = bert.adapter_apply(stacked, y, "gelu")
        self.assertEqual(got.shape, y.shape)
        for b in range(shape[0]):
            own = jax.tree.map(lambda a, b=b: a[b], stacked)
            want = bert.adapter_apply(own, y[b : b + 1], "gelu")[0]
            np.testing.assert_allclose(got[b], want, atol=1e-6, rtol=1e-6)
            ref = np_bottleneck(np.asarray(y[b], np.float64), own, "gelu")
            np.testing.assert_allclose(got[b], ref, atol=1e-5, rtol=0)

    def test_shared_weights_and_module(self):
        rng = np.random.default_rng(1)
        y = jnp.asarray(rng.normal(size=(3, 5, HIDDEN)), jnp.float32)
        params = self._params(rng)
        got = bert.Adapter(bert.AdapterSpec(5), jnp.float32).apply({"params": params}, y)
        ref = np_bottleneck(np.asarray(y, np.float64), params, "relu")
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(bert.adapter_apply(params, y), got, atol=0, rtol=0)
        with self.assertRaisesRegex(ValueError, "per-example"):
            bad = jax.tree.map(lambda a: a[None, None], params)
            bert.adapter_apply(bad, y)


class PackedTest(parameterized.TestCase):
    @parameterized.parameters("bert", "distilbert")
    def test_packed_rows_match_single_examples(self, model_type):
        model = models.with_adapters(tiny_model(model_type), HOULSBY)
        params = randomize_adapters(init(model), scale=0.2)
        rng = np.random.default_rng(3)
        lengths = (5, 7)
        examples = [rng.integers(1, VOCAB, n).astype(np.int32) for n in lengths]
        types = [(np.arange(n) >= n // 2).astype(np.int32) for n in lengths]
        row_len = 16
        ids, tt = np.zeros((1, row_len), np.int32), np.zeros((1, row_len), np.int32)
        seg, pos = np.zeros((1, row_len), np.int32), np.zeros((1, row_len), np.int32)
        start, cls = 0, []
        for s, (e, t) in enumerate(zip(examples, types)):
            ids[0, start : start + len(e)], tt[0, start : start + len(e)] = e, t
            seg[0, start : start + len(e)] = s + 1
            pos[0, start : start + len(e)] = np.arange(len(e))
            cls.append(start)
            start += len(e)
        packing = bert.Packing(jnp.asarray(seg), jnp.asarray(pos), jnp.asarray([cls], jnp.int32))
        packed = jax.jit(
            lambda p: model.apply({"params": p}, ids, None, tt, deterministic=True, packing=packing)
        )(params)
        self.assertEqual(packed.shape, (2, 3))
        for s, (e, t) in enumerate(zip(examples, types)):
            alone = model.apply({"params": params}, e[None], None, t[None], deterministic=True)
            np.testing.assert_allclose(packed[s], alone[0], atol=2e-5, rtol=0)


class LoadingTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.base = tiny_model("bert")
        self.model = models.with_adapters(self.base, HOULSBY)
        self.pretrained = {k: v for k, v in init(self.base).items() if k != "classifier"}

    def test_is_new_param(self):
        self.assertTrue(loading.is_new_param("encoder/layer_0/output/adapter/up/kernel"))
        self.assertTrue(loading.is_new_param("encoder/layer_3/attention/output/adapter/down/bias"))
        self.assertFalse(loading.is_new_param("encoder/layer_0/output/dense/kernel"))
        self.assertFalse(loading.is_new_param("classifier/kernel"))
        self.assertFalse(loading.is_new_param("encoder/layer_0/output/adapter"))

    def test_init_params_initialises_adapters(self):
        params = flat(loading.init_params(self.model, jax.random.key(3), self.pretrained))
        again = flat(loading.init_params(self.model, jax.random.key(3), self.pretrained))
        other = flat(loading.init_params(self.model, jax.random.key(4), self.pretrained))
        plain = flat(loading.init_params(self.base, jax.random.key(3), self.pretrained))
        self.assertEqual(set(params) - set(plain), adapter_paths(HOULSBY))
        for path, value in params.items():
            self.assertEqual(value.dtype, np.float32, path)
            np.testing.assert_array_equal(value, again[path], err_msg=path)  # deterministic
            if path in plain:  # pretrained weights and the head: as without adapters
                np.testing.assert_array_equal(value, plain[path], err_msg=path)
        downs = sorted(p for p in params if p.endswith("adapter/down/kernel"))
        for path in downs:
            self.assertBetween(float(np.std(params[path])), 0.01, 0.03)
            self.assertFalse(np.array_equal(params[path], other[path]))  # drawn from rng
        self.assertFalse(np.array_equal(params[downs[0]], params[downs[1]]))
        for path in adapter_paths(HOULSBY) - set(downs):
            np.testing.assert_array_equal(params[path], 0.0, err_msg=path)

    def test_given_adapters_are_used(self):
        trained = randomize_adapters(
            loading.init_params(self.model, jax.random.key(0), self.pretrained)
        )
        given = {k: v for k, v in trained.items() if k != "classifier"}
        params = flat(loading.init_params(self.model, jax.random.key(1), given))
        for path, value in flat(given).items():
            np.testing.assert_array_equal(params[path], value, err_msg=path)

    def test_missing_and_unexpected_leaves_still_fail(self):
        broken = flat(self.pretrained)
        del broken["encoder/layer_1/intermediate/dense/bias"]
        with self.assertRaisesRegex(
            loading.CheckpointError, "missing.*encoder/layer_1/intermediate/dense/bias"
        ):
            loading.init_params(self.model, jax.random.key(0), unflat(broken))
        with_adapters = flat(loading.init_params(self.model, jax.random.key(0), self.pretrained))
        with self.assertRaisesRegex(loading.CheckpointError, "unexpected.*adapter"):
            loading.init_params(self.base, jax.random.key(0), unflat(with_adapters))
        wrong = flat(self.pretrained)
        wrong["encoder/layer_0/output/adapter/up/kernel"] = np.zeros((3, HIDDEN), np.float32)
        with self.assertRaisesRegex(loading.CheckpointError, "adapter/up/kernel"):
            loading.init_params(self.model, jax.random.key(0), unflat(wrong))


class SpecErrorsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("size_zero", {"size": 0}, "size"),
        ("size_float", {"size": 2.5}, "size"),
        ("size_bool", {"size": True}, "size"),
        ("sites_empty", {"size": 4, "sites": ()}, "sites"),
        ("sites_unknown", {"size": 4, "sites": ("attention", "intermediate")}, "sites"),
        ("sites_repeated", {"size": 4, "sites": ("ffn", "ffn")}, "sites"),
        ("activation", {"size": 4, "activation": "tanhh"}, "activation"),
    )
    def test_bad_fields_name_the_field(self, kwargs, field):
        with self.assertRaisesRegex(ValueError, f"AdapterSpec.{field}"):
            bert.AdapterSpec(**kwargs)

    def test_sites_become_a_tuple(self):
        self.assertEqual(bert.AdapterSpec(4, sites=["ffn"]).sites, ("ffn",))
        self.assertEqual(bert.AdapterSpec(4).sites, ("attention", "ffn"))
        self.assertEqual(hash(bert.AdapterSpec(4, ["ffn"])), hash(bert.AdapterSpec(4, ("ffn",))))

    @parameterized.parameters("bert", "distilbert")
    def test_size_above_hidden_and_wrong_type(self, model_type):
        model = tiny_model(model_type)
        with self.assertRaisesRegex(ValueError, "AdapterSpec.size 33 exceeds.*hidden_size 32"):
            models.with_adapters(model, bert.AdapterSpec(HIDDEN + 1))
        with self.assertRaisesRegex(ValueError, "AdapterSpec.size"):
            tiny_config(model_type, adapter=bert.AdapterSpec(HIDDEN + 1))
        with self.assertRaisesRegex(TypeError, "AdapterSpec"):
            models.with_adapters(model, {"size": 4})
        self.assertEqual(
            models.with_adapters(model, bert.AdapterSpec(HIDDEN)).config.adapter.size, HIDDEN
        )


class GradientTest(absltest.TestCase):
    def test_gradient_reaches_adapters(self):
        model = models.with_adapters(tiny_model("bert"), HOULSBY)
        ids, mask, types = batch()
        labels = jnp.asarray([0, 1, 2])

        @jax.jit
        def grads(p):
            def loss(p):
                logits = model.apply({"params": p}, ids, mask, types, deterministic=True)
                return -jnp.mean(
                    jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)
                )

            return jax.grad(loss)(p)

        params = init(model)
        at_init = flat(grads(params))
        for path in adapter_paths(HOULSBY):
            norm = float(np.linalg.norm(at_init[path]))
            if "/up/" in path:  # up receives the bottleneck's activations
                self.assertGreater(norm, 1e-6, path)
            else:  # down feeds through the zero up-projection: no gradient until up moves
                self.assertEqual(norm, 0.0, path)
        moved = flat(grads(randomize_adapters(params, scale=0.1)))
        for path in adapter_paths(HOULSBY):
            self.assertGreater(float(np.linalg.norm(moved[path])), 1e-6, path)


if __name__ == "__main__":
    absltest.main()
