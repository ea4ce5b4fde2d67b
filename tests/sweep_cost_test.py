"""fft.sweep.cost: wall time of finished runs and the estimate for the rest, from stand-in run
folders (no training), and `fft sweep GRID --cost`."""

import dataclasses
import io
import json
import pathlib

import pytest

from fft import sweep
from fft.sweep import cost


def finished_run(folder: pathlib.Path, *, task, method, wall, train, examples, epochs, fraction=1.0,
                 validation=0.0, priming_wall=None, priming_steps=0, steps=100):
    folder.mkdir(parents=True)
    (folder / "sweep_point.json").write_text("{}")
    (folder / "config.json").write_text(json.dumps(
        {"task": task, "method": method, "data": {"train_fraction": fraction, "validation_fraction": validation}}))
    (folder / "final_metrics.json").write_text(json.dumps(
        {"task": task, "method": method, "wall_seconds": wall, "train_seconds_total": train,
         "train_examples": examples, "epochs": epochs, "steps": steps}))
    if priming_wall is not None:
        (folder / "priming").mkdir()
        (folder / "priming" / "final_metrics.json").write_text(
            json.dumps({"wall_seconds": priming_wall, "steps": priming_steps}))


def point(task, method, fraction=1.0, **fields):
    return sweep.Point(task, method, method, {}, 1e-3, fraction, 0, f"task={task},method={method},tiny",
                       {"num_epochs": 3.0, **fields}, "dev", f"{task}/{method}/frac{fraction:g}/seed0")


def test_estimates_from_finished_runs(tmp_path):
    root = tmp_path / "sweeps"
    # full on rte: 1000 train examples at 90% of train (validation 0.1), 3 epochs, 300 s training.
    finished_run(root / "a/rte/full/s0", task="rte", method="full", wall=330.0, train=300.0, examples=900,
                 epochs=3.0, validation=0.1)
    finished_run(root / "a/rte/full/s1", task="rte", method="full", wall=350.0, train=300.0, examples=900,
                 epochs=3.0, validation=0.1)
    finished_run(root / "a/cola/full/s0", task="cola", method="full", wall=240.0, train=200.0, examples=2000,
                 epochs=3.0)
    finished_run(root / "a/cola/bitfit/s0", task="cola", method="bitfit", wall=140.0, train=100.0,
                 examples=2000, epochs=3.0)
    # A primed run: phase 2 saw 80 of 100 steps' worth; wall adds phase 1's.
    finished_run(root / "a/cola/learners/s0", task="cola", method="learners", wall=200.0, train=150.0,
                 examples=2000, epochs=2.4, priming_wall=50.0, priming_steps=20, steps=80)
    refs = cost.references(root)
    assert len(refs) == 5
    learners = next(r for r in refs if r["method"] == "learners")
    assert learners["wall"] == 250.0 and learners["work"] == pytest.approx(2000 * 3.0)
    rte = next(r for r in refs if r["task"] == "rte")
    assert rte["full_examples"] == pytest.approx(1000.0)
    model = cost.Model(refs)
    # rte full: overhead median(30, 50) = 40, rate 300 / 2700 per example-epoch; at 50% of 1000 x 3.
    assert model.estimate(point("rte", "full", 0.5), 3.0) == pytest.approx(40.0 + 300 / 2700 * 1000 * 0.5 * 3)
    # rte bitfit has no run: bitfit's cola rate x rte's full rate / the full rate over tasks.
    full_any = sorted([300 / 2700, 300 / 2700, 200 / 6000])[1]
    expect = 100 / 6000 * (300 / 2700) / full_any * 1000 * 3
    assert model.estimate(point("rte", "bitfit"), 3.0) == pytest.approx(40.0 + expect)
    # A time budget: overhead + calibration + the budget.
    assert model.estimate(point("cola", "full", time_budget_s=60.0), 3.0) == pytest.approx(40.0 + 15.0 + 60.0)
    assert model.estimate(point("mrpc", "full"), 3.0) is None  # No reference of the task.

    grid_dir = root / "a"
    points = [point("cola", "full"), point("rte", "full", 0.5)]
    points[0] = dataclasses.replace(points[0], rel="cola/full/s0")  # Finished above.
    c = cost.grid_cost(points, grid_dir, model)
    assert c["done"] == [("full", 240.0)] and c["todo"][0][0] == "full"
    lines = cost.cost_lines("a", c, len(refs))
    assert lines[0].startswith("sweep a: 2 runs; 1 finished in 0.07 h of wall time; 1 to run, about 0.06 h")


def test_cost_flag_on_a_grid(tmp_path):
    grid = tmp_path / "g.py"
    grid.write_text("def get_config():\n    return " + repr(
        {"name": "g", "base": "tiny", "tasks": ["rte"], "methods": ["full"], "lrs": [1e-3], "seeds": [0, 1]}) + "\n")
    root = tmp_path / "sweeps"
    finished_run(root / "other/rte/full/s0", task="rte", method="full", wall=100.0, train=90.0, examples=100,
                 epochs=3.0)
    out = io.StringIO()
    assert sweep.main([str(grid), "--root", str(root), "--cost"], out=out) == 0
    text = out.getvalue()
    assert text.startswith("sweep g: 2 runs; 0 finished in 0.00 h of wall time; 2 to run, about ")
    assert "(from 1 finished runs)" in text


def test_runner_eta_from_estimates(tmp_path):
    """The ETA sums the pending runs' estimates (and what is left of the running ones), scaled by
    how this sweep's finished runs compared with theirs; without estimates it waits for runs."""
    import types

    from fft import progress
    from fft.sweep.runner import Runner

    a, b, c = point("rte", "full"), point("cola", "full"), point("stsb", "full")
    now = [1000.0]
    runner = Runner(types.SimpleNamespace(name="g"), [a, b, c], tmp_path, jobs=1, out=io.StringIO(),
                    clock=lambda: now[0])
    runner.pending = [a, b]
    runner.running = [types.SimpleNamespace(point=c, started=960.0)]
    runner.estimates = {a.rel: 100.0, b.rel: 200.0, c.rel: 100.0}
    # No run finished here yet: 100 + 200 + (100 - 40 s already running).
    assert runner.status().endswith(f"ETA {progress.format_seconds(360.0)}")
    runner.measured = [(100.0, 150.0)]  # Runs take 1.5x their estimate here.
    assert runner.status().endswith(f"ETA {progress.format_seconds(540.0)}")
    del runner.estimates[a.rel]  # A point without an estimate: the mean of finished runs instead.
    runner.durations = [120.0]
    assert runner.status().endswith(f"ETA {progress.format_seconds(2 * 120.0 + 80.0)}")


def test_grids_status_table(tmp_path):
    from scripts import grids_status

    grid = tmp_path / "g.py"
    grid.write_text("def get_config():\n    return " + repr(
        {"name": "g", "base": "tiny", "tasks": ["rte"], "methods": ["full"], "lrs": [1e-3], "seeds": [0, 1]}) + "\n")
    broken = tmp_path / "needs_selection.py"
    broken.write_text("def get_config():\n    raise FileNotFoundError('results/selection.json is missing')\n")
    root = tmp_path / "sweeps"
    finished_run(root / "g/rte/full/lr1e-3/frac1/seed0", task="rte", method="full", wall=3600.0, train=3000.0,
                 examples=100, epochs=3.0)
    rows = grids_status.status_rows([str(grid), str(broken)], root)
    assert rows[0]["runs"] == 2 and rows[0]["finished"] == 1 and rows[0]["spent_h"] == pytest.approx(1.0)
    assert rows[0]["left_h"] > 0 and rows[0]["unknown"] == 0
    assert "selection.json is missing" in rows[1]["error"]
    text = grids_status.markdown(rows, 1)
    assert "| g | 2 | 1 | 1.00 |" in text and "not expandable yet" in text
