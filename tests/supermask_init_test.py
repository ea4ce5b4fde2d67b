"""scripts/supermask_init.py: per-kind sparsity of finished supermask runs and the FFN-out ratio,
from a synthetic grid table and run folders (the init statistics need the packaged model and are
exercised by running the script)."""

import json

import pytest

from scripts import supermask_init


def sparsity(ffn_out: float, other: float) -> dict[str, float]:
    out = {"total": 0.1}
    for layer in range(2):
        for suffix in supermask_init.KINDS:
            out[f"encoder/layer_{layer}/{suffix}"] = ffn_out if suffix == "output/dense/kernel" else other
    return out


def write_run(root, rel, init, ffn_out, other):
    workdir = root / rel
    workdir.mkdir(parents=True)
    (workdir / "final_metrics.json").write_text(json.dumps({"export": {"sparsity": sparsity(ffn_out, other)}}))
    (workdir / "config.json").write_text(json.dumps({"supermask": {"init": init}, "model": {"pooling": "mean"}}))
    return rel


def test_kinds_and_ratio(tmp_path, monkeypatch):
    monkeypatch.setattr(supermask_init, "ROOT", tmp_path)
    rows = []
    for setting, init, ffn_out, other, score in (("sm-mag", "magnitude", 0.27, 0.075, 0.2041),
                                                  ("sm-rank", "rank", 0.10, 0.11, 0.2634)):
        rel = write_run(tmp_path, f"runs/{setting}", init, ffn_out, other)
        rows.append({"task": "cola", "setting": setting, "method": "supermask", "seeds": [0], "workdirs": [rel],
                     "split": "dev", "metric": "matthews_corrcoef",
                     "eval": {"dev": {"matthews_corrcoef": {"values": [score]}}}})
    rows.append({"task": "cola", "setting": "head", "method": "head", "seeds": [0], "workdirs": ["x"]})
    grids = tmp_path / "grids"
    grids.mkdir()
    (grids / "g.json").write_text(json.dumps({"rows": rows}))
    out = supermask_init.run_rows(["g", "absent"], grids)
    assert [r["init"] for r in out] == ["magnitude", "rank"]
    mag, rank = out
    assert mag["sparsity"]["FFN out"] == pytest.approx(0.27)
    assert mag["sparsity"]["query"] == pytest.approx(0.075)
    assert mag["ffn_out_ratio"] == pytest.approx(0.27 / 0.075)
    assert rank["ffn_out_ratio"] == pytest.approx(0.10 / 0.11)
    assert rank["score"] == pytest.approx(26.34)
    text = supermask_init.markdown({"max_over_median_abs_w": {k: 1.0 for k in supermask_init.KINDS.values()},
                                    "inits": {}, "settings": {"init_scale": 1.0, "initial_sparsity": 0.05,
                                                              "score_lr": 1e-3}}, out, "cmd")
    assert "| g | cola | sm-mag | magnitude | mean | 0 | 20.41 |" in text
    assert "3.60 |" in text


def test_by_kind_ignores_other_leaves():
    values = {"encoder/layer_0/output/dense/kernel": 0.2, "encoder/layer_1/output/dense/kernel": 0.4,
              "classifier/kernel": 0.9, "encoder/layer_0/attention/output/dense/kernel": 0.1}
    kinds = supermask_init.by_kind(values)
    assert kinds == {"attn out": pytest.approx(0.1), "FFN out": pytest.approx(0.3)}
