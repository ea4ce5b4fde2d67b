"""Tests for fft.peft_io: LoRA tasks to and from Hugging Face PEFT.

The fixtures under tests/fixtures/peft/ come from `scripts/make_peft_fixtures.py` (torch + peft, run
in a separate venv): adapters saved by PEFT with PEFT's logits, and folders written by
`fft.peft_io.save` with the logits PEFT computes after loading them. These tests never import torch
or peft.
"""

import dataclasses
import functools
import importlib.util
import json
import pathlib
import shutil
import struct

import jax
import numpy as np
import pytest
from flax import traverse_util
from safetensors import numpy as safetensors_numpy

from fft import models, peft_io
from fft.models import loading

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_FIXTURES = _ROOT / "tests" / "fixtures"
_PEFT = _FIXTURES / "peft"
_TINY = _FIXTURES / "tiny_bert_cls"
_TOL = 1e-4
_PEFT_FIXTURES = (
    "peft_tiny_qv",
    "peft_tiny_all_rslora",
    "peft_tiny_pooler_patterns",
    "peft_minilm_qv",
)
_FFT_SAVED = ("fft_saved_tiny", "fft_saved_minilm")
_Q0 = "base_model.model.bert.encoder.layer.0.attention.self.query"


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_peft_fixtures", _ROOT / "scripts" / "make_peft_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_peft_fixtures = _script()


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    """Fixture configs name the tiny base model by its path relative to the repository root."""
    monkeypatch.chdir(_ROOT)


@functools.cache
def _pretrained(base: str) -> loading.Pretrained:
    return loading.load_pretrained(loading.resolve_model_dir(base))


@functools.cache
def _apply_fn(model):
    @jax.jit
    def run(params, ids, mask, types):
        return model.apply({"params": params}, ids, mask, types, deterministic=True)

    return run


def _logits(model, params, ref) -> np.ndarray:
    batch = (ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
    return np.asarray(_apply_fn(model)(params, *(b.astype(np.int32) for b in batch)))


def _base_of(name: str) -> str:
    return str(_TINY) if "tiny" in name else make_peft_fixtures.MINILM_NAME


def _copy(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    out = tmp_path / name
    shutil.copytree(_PEFT / name, out)
    return out


def _edit_weights(folder: pathlib.Path, edit) -> None:
    path = folder / peft_io.WEIGHTS_NAME
    tensors = safetensors_numpy.load_file(path)
    edit(tensors)
    safetensors_numpy.save_file(tensors, path, metadata={"format": "pt"})


def _edit_config(folder: pathlib.Path, **changes) -> None:
    path = folder / peft_io.CONFIG_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# --- PEFT -> fft ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _PEFT_FIXTURES)
def test_load_matches_peft_logits(name, record_property):
    ref = np.load(_PEFT / f"{name}.npz")
    # MiniLM resolves its base from the config's 'sentence-transformers/all-MiniLM-L6-v2'.
    base = None if "minilm" in name else _TINY
    model, params = peft_io.load(_PEFT / name, base)
    got = _logits(model, params, ref)
    assert got.shape == ref["logits"].shape
    diff = float(np.max(np.abs(got - ref["logits"])))
    print(f"PEFT -> fft {name}: max abs logit diff {diff:.3g}")
    record_property("max_abs_logit_diff", diff)
    assert diff < _TOL
    # The adapter matters: without its LoRA factors the logits move far more than the tolerance.
    task = peft_io.read(_PEFT / name)
    bare = peft_io.merge(
        loading.init_params(model, jax.random.key(0), _pretrained(_base_of(name)).params),
        dataclasses.replace(task, lora={}, lora_bias={}),
    )
    assert np.max(np.abs(_logits(model, bare, ref) - ref["logits"])) > 100 * _TOL


def test_load_resolves_relative_base_path():
    """Tiny fixtures record base_model_name_or_path 'tests/fixtures/tiny_bert_cls'."""
    ref = np.load(_PEFT / "peft_tiny_qv.npz")
    model, params = peft_io.load(_PEFT / "peft_tiny_qv")
    assert np.max(np.abs(_logits(model, params, ref) - ref["logits"])) < _TOL


def test_load_accepts_loaded_base_model():
    ref = np.load(_PEFT / "peft_tiny_all_rslora.npz")
    model, params = peft_io.load(_PEFT / "peft_tiny_all_rslora", _pretrained(str(_TINY)))
    assert np.max(np.abs(_logits(model, params, ref) - ref["logits"])) < _TOL


def test_read_layout_scales_patterns_and_biases():
    task = peft_io.read(_PEFT / "peft_tiny_pooler_patterns")
    assert task.num_labels == 3
    # rank_pattern: layer 1's query r=3, intermediate r=5; alpha_pattern: output dense alpha 4.
    assert task.lora["encoder/layer_1/attention/query"][0].shape == (32, 3)
    assert task.lora["encoder/layer_0/intermediate/dense"][1].shape == (5, 64)
    assert task.scale["encoder/layer_0/attention/query"] == pytest.approx(16 / 2)
    assert task.scale["encoder/layer_1/attention/query"] == pytest.approx(16 / 3)
    assert task.scale["encoder/layer_0/intermediate/dense"] == pytest.approx(16 / 5)
    assert task.scale["encoder/layer_0/output/dense"] == pytest.approx(4 / 2)
    assert task.scale["encoder/layer_1/attention/output/dense"] == pytest.approx(4 / 2)
    assert "pooler/dense" not in task.lora  # pooler is in modules_to_save, so PEFT skips it.
    assert {"pooler/dense/kernel", "pooler/dense/bias", "classifier/kernel"} <= set(
        task.modules_to_save
    )
    assert "encoder/layer_0/attention/query/bias" in task.biases  # bias='lora_only'.
    assert set(task.lora_bias) == set(task.lora)  # lora_bias=True.
    # fft layout: A [in, r] is lora_A.weight transposed.
    stored = safetensors_numpy.load_file(_PEFT / "peft_tiny_pooler_patterns" / peft_io.WEIGHTS_NAME)
    np.testing.assert_array_equal(
        task.lora["encoder/layer_0/attention/query"][0], stored[f"{_Q0}.lora_A.weight"].T
    )
    rslora = peft_io.read(_PEFT / "peft_tiny_all_rslora")
    assert rslora.scale["pooler/dense"] == pytest.approx(16 / np.sqrt(2))
    assert "embeddings/layer_norm/bias" in rslora.biases  # bias='all'.


def test_read_bfloat16_adapter(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)
    tensors = safetensors_numpy.load_file(folder / peft_io.WEIGHTS_NAME)
    header, blobs, offset = {}, [], 0
    for name, value in sorted(tensors.items()):
        bits = (value.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(bits)],
        }
        blobs.append(bits)
        offset += len(bits)
    head = json.dumps(header).encode()
    (folder / peft_io.WEIGHTS_NAME).write_bytes(
        struct.pack("<Q", len(head)) + head + b"".join(blobs)
    )
    got = peft_io.read(folder).lora["encoder/layer_0/attention/query"][0]
    want = peft_io.read(_PEFT / "peft_tiny_qv").lora["encoder/layer_0/attention/query"][0]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-6)


# --- fft -> PEFT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _FFT_SAVED)
def test_save_writes_the_fixture_files(name, tmp_path):
    kwargs = make_peft_fixtures.fft_saved_task(name)
    written = peft_io.save(tmp_path / name, **kwargs)
    files = sorted(p.name for p in (tmp_path / name).iterdir())
    assert files == [peft_io.CONFIG_NAME, peft_io.WEIGHTS_NAME]
    assert written == sum((tmp_path / name / f).stat().st_size for f in files)
    for f in files:
        assert (tmp_path / name / f).read_bytes() == (_PEFT / name / f).read_bytes(), f


@pytest.mark.parametrize("name", _FFT_SAVED)
def test_saved_task_matches_peft_logits(name, record_property):
    """fft's own logits for the task (merged by hand) equal PEFT's on the folder fft wrote."""
    kwargs = make_peft_fixtures.fft_saved_task(name)
    ref = np.load(_PEFT / f"{name}.npz")
    pretrained = _pretrained(kwargs["base_model_name_or_path"])
    num_labels = kwargs["modules_to_save"]["classifier/bias"].shape[0]
    model = models.create_model("bert", pretrained.model_config, num_labels)
    flat = traverse_util.flatten_dict(
        loading.init_params(model, jax.random.key(0), pretrained.params), sep="/"
    )
    for module, (a, b) in kwargs["lora"].items():
        flat[f"{module}/kernel"] = (
            flat[f"{module}/kernel"] + kwargs["alpha"] / kwargs["rank"] * a @ b
        )
    flat.update(kwargs["modules_to_save"])
    got = _logits(model, traverse_util.unflatten_dict(flat, sep="/"), ref)
    diff = float(np.max(np.abs(got - ref["logits"])))
    print(f"fft -> PEFT {name}: max abs logit diff {diff:.3g}")
    record_property("max_abs_logit_diff", diff)
    assert diff < _TOL
    # And reading the folder back gives the same model.
    model, params = peft_io.load(_PEFT / name, pretrained)
    assert np.max(np.abs(_logits(model, params, ref) - ref["logits"])) < _TOL


def test_save_read_round_trip(tmp_path):
    kwargs = make_peft_fixtures.fft_saved_task("fft_saved_tiny")
    peft_io.save(tmp_path, **kwargs)
    task = peft_io.read(tmp_path)
    assert set(task.lora) == set(kwargs["lora"])
    for module, (a, b) in kwargs["lora"].items():
        np.testing.assert_array_equal(task.lora[module][0], a)
        np.testing.assert_array_equal(task.lora[module][1], b)
        assert task.scale[module] == kwargs["alpha"] / kwargs["rank"]
    assert set(task.modules_to_save) == set(kwargs["modules_to_save"])
    config = json.loads((tmp_path / peft_io.CONFIG_NAME).read_text())
    # Suffixes that pick exactly the adapted layers under PEFT's matching.
    assert config["target_modules"] == [
        "layer.0.output.dense",
        "layer.1.attention.output.dense",
        "query",
        "value",
    ]
    assert config["modules_to_save"] == ["classifier", "bert.pooler.dense"]


def test_save_key_names(tmp_path):
    kwargs = make_peft_fixtures.fft_saved_task("fft_saved_tiny")
    peft_io.save(tmp_path, **kwargs)
    keys = set(safetensors_numpy.load_file(tmp_path / peft_io.WEIGHTS_NAME))
    assert f"{_Q0}.lora_A.weight" in keys
    assert "base_model.model.bert.encoder.layer.0.output.dense.lora_B.weight" in keys
    assert "base_model.model.bert.encoder.layer.1.attention.output.dense.lora_A.weight" in keys
    assert "base_model.model.bert.pooler.dense.weight" in keys
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= keys


# --- Errors ---------------------------------------------------------------------------------------


def test_missing_config(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)
    (folder / peft_io.CONFIG_NAME).unlink()
    with pytest.raises(peft_io.AdapterNotFoundError, match="adapter_config.json is missing"):
        peft_io.load(folder, _TINY)


def test_missing_weights(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)
    (folder / peft_io.WEIGHTS_NAME).unlink()
    with pytest.raises(peft_io.AdapterNotFoundError, match="adapter_model.safetensors is missing"):
        peft_io.read(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(peft_io.AdapterNotFoundError, match="does not exist"):
        peft_io.read(tmp_path / "nope")


def test_not_lora(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)
    _edit_config(folder, peft_type="IA3")
    with pytest.raises(peft_io.AdapterError, match="peft_type 'IA3' is not supported"):
        peft_io.read(folder)


def test_dora_is_refused(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)
    _edit_config(folder, use_dora=True)
    with pytest.raises(peft_io.AdapterError, match="DoRA"):
        peft_io.read(folder)


def test_non_bert_base_model(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)
    _edit_config(folder, base_model_name_or_path=str(_FIXTURES / "tiny_distilbert"))
    with pytest.raises(peft_io.AdapterError, match="model_type is 'distilbert'"):
        peft_io.load(folder)


def test_non_bert_module_names(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)

    def to_llama(tensors):
        for key in list(tensors):
            tensors[
                key.replace("bert.encoder.layer", "model.layers").replace(
                    "attention.self.query", "self_attn.q_proj"
                )
            ] = tensors.pop(key)

    _edit_weights(folder, to_llama)
    with pytest.raises(
        peft_io.AdapterError, match=r"names module 'model\.layers\.0\..*another architecture"
    ):
        peft_io.read(folder)


def test_factor_shape_mismatch_names_tensor_and_shapes(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)

    def shrink(tensors):
        tensors[f"{_Q0}.lora_A.weight"] = tensors[f"{_Q0}.lora_A.weight"][:, :16].copy()

    _edit_weights(folder, shrink)
    with pytest.raises(peft_io.AdapterError) as err:
        peft_io.load(folder, _TINY)
    message = str(err.value)
    assert f"{_Q0}.lora_A.weight" in message
    assert "(4, 16)" in message and "(4, 32)" in message


def test_rank_mismatch_between_factors(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)

    def cut(tensors):
        tensors[f"{_Q0}.lora_B.weight"] = tensors[f"{_Q0}.lora_B.weight"][:, :3].copy()

    _edit_weights(folder, cut)
    with pytest.raises(
        peft_io.AdapterError, match=r"Rank mismatch: .*query\.lora_A\.weight.*lora_B"
    ):
        peft_io.read(folder)


def test_rank_disagrees_with_config(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)
    _edit_config(folder, r=8)
    with pytest.raises(peft_io.AdapterError, match="r=8"):
        peft_io.read(folder)


def test_classifier_shape_mismatch(tmp_path):
    folder = _copy("peft_tiny_qv", tmp_path)

    def widen(tensors):
        tensors["base_model.model.classifier.weight"] = np.zeros((3, 48), np.float32)

    _edit_weights(folder, widen)
    with pytest.raises(peft_io.AdapterError, match=r"classifier\.weight.*\(48, 3\).*\(32, 3\)"):
        peft_io.load(folder, _TINY)


def test_save_rejects_wrong_factor_shape(tmp_path):
    kwargs = make_peft_fixtures.fft_saved_task("fft_saved_tiny")
    a, b = kwargs["lora"]["encoder/layer_0/attention/query"]
    kwargs["lora"]["encoder/layer_0/attention/query"] = (a[:16], b)
    with pytest.raises(peft_io.AdapterError, match=r"encoder/layer_0/attention/query.*\[16, 32\]"):
        peft_io.save(tmp_path, **kwargs)


def test_save_needs_classifier(tmp_path):
    kwargs = make_peft_fixtures.fft_saved_task("fft_saved_tiny")
    del kwargs["modules_to_save"]["classifier/bias"]
    with pytest.raises(peft_io.AdapterError, match="classifier"):
        peft_io.save(tmp_path, **kwargs)


def test_name_mapping_round_trips():
    for path in (
        "encoder/layer_11/attention/query",
        "encoder/layer_0/attention/output/dense",
        "encoder/layer_3/intermediate/dense",
        "encoder/layer_3/output/dense",
        "pooler/dense",
        "embeddings/layer_norm",
        "classifier",
    ):
        name, kind = peft_io.fft_to_hf_module(path)
        assert peft_io.hf_to_fft_module(name) == (path, kind)
    assert peft_io.fft_to_hf_module("encoder/layer_3/output/dense")[0] == (
        "bert.encoder.layer.3.output.dense"
    )
    with pytest.raises(peft_io.AdapterError, match="not the path of a BERT module"):
        peft_io.fft_to_hf_module("encoder/layer_0/attention/q_proj")
