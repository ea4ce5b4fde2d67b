"""scripts/select_hparams.py: the best mean validation score over the grid's tasks wins; dev rows
and incomplete candidates are refused."""

import json

import pytest

from scripts import select_hparams


def row(task, setting, method, lr, mean, split="validation", options=None):
    return {"task": task, "setting": setting, "method": method, "lr": lr, "mean": mean,
            "split": split, "options": options or {}}


def test_best_mean_over_tasks_wins_and_incomplete_candidates_are_not_eligible(tmp_path):
    rows = [
        row("rte", "full", "full", 2e-5, 60.0), row("stsb", "full", "full", 2e-5, 80.0),
        row("rte", "full", "full", 5e-5, 64.0), row("stsb", "full", "full", 5e-5, 79.0),
        row("rte", "full", "full", 1e-4, 70.0), row("stsb", "full", "full", 1e-4, None),  # missing
        row("rte", "lora-rank4", "lora", 5e-4, 55.0, options={"rank": 4}),
        row("stsb", "lora-rank4", "lora", 5e-4, 85.0, options={"rank": 4}),
        row("rte", "lora-rank8", "lora", 5e-4, 56.0, options={"rank": 8}),
        row("stsb", "lora-rank8", "lora", 5e-4, 83.0, options={"rank": 8}),
        row("rte", "bitfit", "bitfit", 1e-3, None), row("stsb", "bitfit", "bitfit", 1e-3, 70.0),
    ]
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"rows": rows}))
    assert select_hparams.main(["--table", str(table), "--out", str(tmp_path / "sel")]) == 0
    chosen = json.loads((tmp_path / "sel.json").read_text())["methods"]
    assert (chosen["full"]["lr"], chosen["full"]["score"]) == (5e-5, 71.5)
    assert chosen["full"]["eligible"] == 2
    assert chosen["lora"]["options"] == {"rank": 4}
    assert chosen["bitfit"]["setting"] is None
    text = (tmp_path / "sel.md").read_text()
    assert "| **full** | 5e-05 | 64.00 | 79.00 | **71.50** |" in text
    assert "missing" in text and "not chosen" in text


def test_a_best_rate_at_the_edge_of_the_grid_is_flagged(tmp_path):
    rows = [row(t, "full", "full", lr, score) for lr, score in ((2e-5, 60.0), (5e-5, 62.0), (1e-4, 65.0))
            for t in ("rte", "stsb")]
    rows += [row(t, "bitfit", "bitfit", lr, score) for lr, score in ((3e-4, 60.0), (1e-3, 66.0), (3e-3, 61.0))
             for t in ("rte", "stsb")]
    rows += [row(t, "head", "head", 1e-3, 50.0) for t in ("rte", "stsb")]
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"rows": rows}))
    assert select_hparams.main(["--table", str(table), "--out", str(tmp_path / "sel")]) == 0
    chosen = json.loads((tmp_path / "sel.json").read_text())["methods"]
    assert chosen["full"]["lr_at_edge"] == "highest"
    assert chosen["bitfit"]["lr_at_edge"] is None
    assert chosen["head"]["lr_at_edge"] is None  # One rate: no edge to speak of.
    assert "the highest tried for this setting" in (tmp_path / "sel.md").read_text()


def test_dev_rows_are_refused(tmp_path):
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"rows": [row("rte", "full", "full", 2e-5, 60.0, split="dev")]}))
    with pytest.raises(SystemExit, match="never reads dev"):
        select_hparams.main(["--table", str(table), "--out", str(tmp_path / "sel")])


def test_a_crossed_option_at_the_edge_is_flagged(tmp_path):
    """score_lr tried at 3 values and chosen at the lowest: flagged; initial_sparsity at 2 values:
    not (either choice is an end); rank in the middle: not."""
    rows = []
    for sparsity in (0.05, 0.1):
        for score_lr, score in ((3e-4, 70.0), (1e-3, 69.0), (3e-3, 65.0)):
            setting = f"supermask-s{sparsity}-lr{score_lr}"
            options = {"init": "rank", "initial_sparsity": sparsity, "score_lr": score_lr}
            rows += [row(t, setting, "supermask", 1e-3, score + sparsity, options=options) for t in ("rte", "stsb")]
    for rank, score in ((4, 60.0), (8, 62.0), (16, 61.0)):
        rows += [row(t, f"lora-rank{rank}", "lora", 1e-3, score, options={"rank": rank}) for t in ("rte", "stsb")]
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"rows": rows}))
    assert select_hparams.main(["--table", str(table), "--out", str(tmp_path / "sel")]) == 0
    chosen = json.loads((tmp_path / "sel.json").read_text())["methods"]
    assert chosen["supermask"]["options"] == {"init": "rank", "initial_sparsity": 0.1, "score_lr": 3e-4}
    assert chosen["supermask"]["options_at_edge"] == {"score_lr": "lowest"}
    assert chosen["lora"]["options_at_edge"] == {}
    assert "The chosen score_lr (0.0003) is the lowest tried" in (tmp_path / "sel.md").read_text()

