"""scripts/figures.py and fft.report.figures_data on synthetic grid tables and workdirs: time to
target (reached, not reached, primed runs offset by phase 1, several seeds, ratio to full), the
figures get written (with missing cells), and a missing time-budget table is skipped. No training."""

import json
import math

import pytest

from fft import stats
from fft.report import figures_data as fd
from scripts import figures

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(root, rel, points, final=None, priming=None, budget=None):
    """A run's workdir: curve.json from [(seconds, score fraction)], final_metrics.json, config.json;
    priming = (phase 1 points, phase 1 train_seconds) adds <workdir>/priming/curve.json."""
    workdir = root / rel
    workdir.mkdir(parents=True)

    def curve(path, pts):
        path.write_text(json.dumps({"points": [
            {"step": 10 * (i + 1), "train_seconds": s, "timed": True,
             "eval": {"dev": {"matthews_corrcoef": v, "loss": 0.5}}} for i, (s, v) in enumerate(pts)]}))

    if points is not None:
        curve(workdir / "curve.json", points)
    doc = {"eval": {"dev": {"matthews_corrcoef": final if final is not None else points[-1][1]}},
           "train_seconds": points[-1][0] if points else 1.0}
    if priming is not None:
        (workdir / "priming").mkdir()
        curve(workdir / "priming" / "curve.json", priming[0])
        doc["priming"] = {"train_seconds": priming[1], "workdir": str(workdir / "priming")}
    (workdir / "final_metrics.json").write_text(json.dumps(doc))
    (workdir / "config.json").write_text(json.dumps({"task": "cola", "time_budget_s": budget}))
    return rel


def row(task, setting, finals, workdirs=(), method=None, planned=3, fraction=1.0, lr=1e-3):
    """A table row as fft.sweep.tables writes it; finals = {seed: fraction} of finished seeds."""
    seeds = sorted(finals)
    values = [finals[s] for s in seeds]
    mean, sd = stats.mean_sd([100 * v for v in values])
    return {"task": task, "setting": setting, "method": method or setting, "options": {}, "lr": lr,
            "fraction": fraction, "split": "dev", "metric": "matthews_corrcoef",
            "mean": mean, "sd": sd, "n": len(seeds), "planned": planned, "seeds": seeds,
            "eval": {"dev": {"matthews_corrcoef": {"mean": None, "sd": None, "values": values}}} if seeds else {},
            "workdirs": list(workdirs)}


def run_row(root, setting, runs, method=None):
    """A row from {seed: (points, priming or None)}: finals are the last phase-2 points."""
    workdirs = [write_run(root, f"runs/g/cola/{setting}/seed{s}", pts, priming=pr)
                for s, (pts, pr) in sorted(runs.items())]
    return row("cola", setting, {s: pts[-1][1] for s, (pts, _) in runs.items()}, workdirs, method)


@pytest.fixture
def core(tmp_path):
    full = run_row(tmp_path, "full", {0: ([(60, 0.40), (120, 0.50), (180, 0.50)], None),
                                      1: ([(60, 0.45), (240, 0.50)], None)})
    bitfit = run_row(tmp_path, "bitfit", {0: ([(60, 0.30), (120, 0.49999), (180, 0.55)], None),
                                          1: ([(60, 0.30), (120, 0.40)], None)})
    fast = run_row(tmp_path, "fast", {0: ([(60, 0.50)], None), 1: ([(60, 0.1), (120, 0.6)], None),
                                      2: ([(60, 0.1), (120, 0.2), (180, 0.7)], None)})
    learners = run_row(tmp_path, "learners", {0: ([(20, 0.48), (40, 0.55)], ([(30, 0.40), (60, 0.45)], 60.0)),
                                              1: ([(20, 0.30), (40, 0.52)], ([(30, 0.51)], 30.0))})
    return {"grid": "core", "rows": [full, bitfit, fast, learners, row("cola", "lora", {})]}


def test_time_to_target_reached_and_not_reached(core, tmp_path):
    result = fd.time_to_target(core, "cola", "bitfit", 50.0, root=tmp_path)
    assert result["seconds"] == {0: 180, 1: None}  # 49.999 at 120 s is below the target.
    assert (result["reached"], result["n"], result["mean_s"], result["sd_s"]) == (1, 2, 180, None)
    assert result["final_mean"] == pytest.approx(47.5)
    missing = fd.time_to_target(core, "cola", "lora", 50.0, root=tmp_path)
    assert (missing["reached"], missing["n"], missing["mean_s"]) == (0, 0, None)


def test_time_to_target_primed_runs_offset_by_phase_one(core, tmp_path):
    result = fd.time_to_target(core, "cola", "learners", 50.0, root=tmp_path)
    # Seed 0: phase 1 never reaches 50; phase 2's 40 s point comes after phase 1's 60 s.
    # Seed 1: phase 1's 30 s point (51) already reaches it.
    assert result["seconds"] == {0: 100.0, 1: 30.0}
    curve = fd.run_curve(tmp_path / core["rows"][3]["workdirs"][0], "dev", "matthews_corrcoef")
    assert [t for t, _ in curve] == [30, 60, 80, 100]
    assert [v for _, v in curve] == pytest.approx([40.0, 45.0, 48.0, 55.0])


def test_time_to_target_several_seeds_and_ratio_to_full(core, tmp_path):
    result = fd.task_time_to_target(core, "cola", root=tmp_path)
    assert result["target"] == pytest.approx(50.0)
    by = {r["setting"]: r for r in result["settings"]}
    assert by["full"]["seconds"] == {0: 120, 1: 240} and result["full_seconds"] == 180
    fast = by["fast"]
    assert fast["seconds"] == {0: 60, 1: 120, 2: 180}
    assert (fast["mean_s"], fast["sd_s"], fast["reached"], fast["n"]) == (120, 60, 3, 3)
    assert fast["ratio"] == pytest.approx(120 / 180)
    assert by["full"]["ratio"] == pytest.approx(1.0) and by["lora"]["ratio"] is None


def test_seed_without_curve_is_not_counted(tmp_path):
    rel = write_run(tmp_path, "runs/g/cola/full/seed0", [(60, 0.5)])
    (tmp_path / rel / "curve.json").unlink()
    table = {"rows": [row("cola", "full", {0: 0.5, 1: 0.5}, [rel, "runs/gone/seed1"])]}
    result = fd.time_to_target(table, "cola", "full", 50.0, root=tmp_path)
    assert result["no_curve"] == [0, 1] and result["n"] == 0 and result["mean_s"] is None


def test_mean_curve_only_where_every_seed_has_a_point():
    times, means = fd.mean_curve([[(10, 40.0), (30, 60.0), (50, 70.0)], [(20, 50.0), (40, 80.0)]])
    assert times == [20, 30, 40]
    assert means == [45.0, 55.0, 70.0]


def test_time_to_target_markdown_and_json(core, tmp_path):
    out = tmp_path / "ttt"
    figures.write_time_to_target({"core": (tmp_path / "core.json", core)}, out, tmp_path)
    md = (out.with_suffix(".md")).read_text()
    assert "upper bounds" in md and "this machine" in md
    assert "| bitfit | 1/2 | 180.0 |" in md and "1: not reached" in md
    assert "| fast | 3/3 | 120.0 ± 60.0 | 0.67 |" in md
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["grids"][0]["tasks"][0]["full_seconds"] == 180


def fraction_table():
    rows = []
    for task in ("mrpc", "cola"):
        for method in ("full", "bitfit"):
            for f in (0.1, 0.3, 0.5, 1.0):
                missing = (task, method, f) == ("cola", "bitfit", 0.3)
                finals = {} if missing else {0: 0.4 + f / 4, 1: 0.42 + f / 4}
                rows.append(row(task, method, finals, fraction=f, planned=2 if f < 1 else 3))
    return {"grid": "data_fraction", "rows": rows}


def test_data_fraction_figure_with_missing_cell(tmp_path):
    table = fraction_table()
    series = fd.fraction_series(table, "cola")["bitfit"]
    assert [p["fraction"] for p in series if p["mean"] is None] == [0.3]
    path = figures.plot_data_fraction(table, tmp_path / "data_fraction.png")
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 1000


def test_curves_figure_with_missing_cell(core, tmp_path):
    path = figures.plot_curves(core, tmp_path / "curves_core.png", tmp_path)
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 1000
    empty = {"grid": "x", "rows": [row("cola", "lora", {})]}
    assert figures.plot_curves(empty, tmp_path / "curves_x.png", tmp_path) is None
    assert not (tmp_path / "curves_x.png").exists()


def test_budget_series_reads_each_runs_budget(tmp_path):
    rows = []
    for budget in (60, 120):
        workdirs = [write_run(tmp_path, f"runs/tb/cola/full-{budget}s/seed{s}", [(budget, 0.3 + s / 10 + budget / 1000)],
                              budget=budget) for s in (0, 1)]
        rows.append(row("cola", f"full-{budget}s", {0: 0.3 + budget / 1000, 1: 0.4 + budget / 1000},
                        workdirs, method="full"))
    series, skipped = fd.budget_series({"rows": rows}, "cola", tmp_path)
    assert skipped == 0 and list(series) == ["full"]
    assert [p["budget"] for p in series["full"]] == [60.0, 120.0]
    assert series["full"][0]["mean"] == pytest.approx(41.0) and series["full"][1]["n"] == 2
    assert series["full"][0]["sd"] == pytest.approx(math.sqrt(50))
    path = figures.plot_time_budget({"rows": rows}, tmp_path / "tb.png", tmp_path)
    assert path.read_bytes().startswith(PNG)


def test_main_writes_figures_and_skips_missing_time_budget(core, tmp_path, capsys):
    grids, out = tmp_path / "grids", tmp_path / "figs"
    grids.mkdir()
    (grids / "core.json").write_text(json.dumps(core))
    (grids / "data_fraction.json").write_text(json.dumps(fraction_table()))
    assert figures.main(["--grids", str(grids), "--out", str(out), "--root", str(tmp_path),
                         "--time-to-target", str(tmp_path / "ttt")]) == 0
    printed = capsys.readouterr().out
    assert "skipped time_budget.png" in printed and "skipped curves_time_budget.png" in printed
    assert not (out / "time_budget.png").exists()
    for name in ("data_fraction.png", "curves_core.png"):
        assert (out / name).stat().st_size > 1000
    assert (tmp_path / "ttt.md").is_file() and (tmp_path / "ttt.json").is_file()
    readme = (out / "README.md").read_text()
    assert "| curves_core.png |" in readme and "not generated" in readme.split("time_budget.png |")[1]
