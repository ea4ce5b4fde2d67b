"""scripts/claims.py and fft.report: paired differences and intervals agree with scipy, verdicts
follow the stated rules, missing cells and tables are reported as missing, the distance claims read
(stubbed or tiny) parameter trees through a cache keyed by workdir, and the layer rankings section
shows the layers each ranking picks as fft.partition would. No model is trained."""

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fft import stats
from fft.report import distances as report_distances
from fft.report import rankings, tables
from scripts import claims

FULL = {"cola": {0: 50.0, 1: 52.0, 2: 51.0}, "stsb": {0: 85.0, 1: 86.0, 2: 84.5},
        "rte": {0: 60.0, 1: 63.0, 2: 58.0}, "mrpc": {0: 80.0, 1: 81.0, 2: 82.0}}  # sst2: no row


def row(task, setting, scores, fraction=1.0, metric="accuracy", planned=3, seconds=10.0, params=None):
    seeds = sorted(scores)
    values = [scores[s] / 100 for s in seeds]
    mean, sd = stats.mean_sd(values)
    return {
        "task": task, "setting": setting, "method": setting, "options": {}, "lr": 1e-3,
        "fraction": fraction, "split": "dev", "metric": metric,
        "mean": None if mean is None else 100 * mean, "sd": None if sd is None else 100 * sd,
        "n": len(seeds), "planned": planned, "seeds": seeds,
        "eval": {"dev": {metric: {"mean": mean, "sd": sd, "values": values}}} if seeds else {},
        "trainable_params": params if seeds else None, "stored_bytes": None,
        "train_seconds": seconds if seeds else None,
        "workdirs": [f"runs/fake/{task}/{setting}/frac{fraction:g}/seed{s}" for s in seeds],
    }


def shifted(base, deltas):
    return {s: v + d for (s, v), d in zip(sorted(base.items()), deltas)}


def core_rows():
    rows = [row(t, "full", s) for t, s in FULL.items()]
    rows += [
        row("cola", "top3", shifted(FULL["cola"], [0.1, -0.2, 0.3])),  # tight, within ±2: holds
        row("cola", "supermask", shifted(FULL["cola"], [-10.0, -11.0, -9.0])),  # far below: fails
        row("cola", "critical2", shifted(FULL["cola"], [3.0, -3.0, 1.0])),  # wide: inconclusive
        row("stsb", "lora", {}),  # a planned cell with no finished run: missing
        row("mrpc", "lora", {1: 81.5}),  # one pair: no interval
        row("cola", "lora", {0: 50.5, 1: 51.5}),  # two of three seeds
    ]
    # Claim 6: sds per task (adapters / full / bitfit).
    rows += [
        row("cola", "adapters", {0: 40.0, 1: 50.0, 2: 60.0}),  # sd 10 vs full 1: holds
        row("cola", "bitfit", {0: 49.0, 1: 50.0, 2: 51.0}),  # sd 1
        row("stsb", "adapters", {0: 85.0, 1: 85.1, 2: 85.2}),  # sd 0.1: fails
        row("stsb", "bitfit", {0: 84.0, 1: 85.0, 2: 86.0}),
        row("rte", "adapters", {0: 50.0, 1: 60.0, 2: 70.0}),  # sd 10 vs 2.5: holds
        row("rte", "bitfit", {0: 58.0, 1: 59.0, 2: 60.0}),
    ]
    return rows


FRACTION_FULL = {0: 70.0, 1: 72.0, 2: 71.0}


def fraction_rows():
    rows = []
    for f in tables.FRACTIONS:
        rows.append(row("mrpc", "full", FRACTION_FULL, fraction=f))
    rows.append(row("mrpc", "bitfit", shifted(FRACTION_FULL, [0.2, -0.1, 0.0]), fraction=0.1))
    rows.append(row("mrpc", "bitfit", shifted(FRACTION_FULL, [3.5, 2.0, 2.8]), fraction=0.3))
    rows.append(row("mrpc", "bitfit", shifted(FRACTION_FULL, [-1.0, -2.0, -1.5]), fraction=0.5))
    # 1.0: bitfit missing. cola: full only at 0.3, with 2 seeds; stsb: absent.
    rows.append(row("cola", "full", {0: 30.0, 1: 35.0}, fraction=0.3))
    rows.append(row("cola", "bitfit", {0: 31.0, 1: 33.0, 2: 32.0}, fraction=0.3))
    return rows


def write_tables(folder, core=True, fractions=True, core_extra=(), fraction_extra=(), params=None, **more):
    """The core and data_fraction tables (core's rows with trainable_params from `params`, {(task,
    setting): count}); `more` = {grid name: rows} for other grids (time_budget, learners_ablation)."""
    folder.mkdir(parents=True, exist_ok=True)
    if core:
        rows = core_rows() + list(core_extra)
        for r in rows:
            if r["n"] and (r["task"], r["setting"]) in (params or {}):
                r["trainable_params"] = params[r["task"], r["setting"]]
        (folder / "core.json").write_text(json.dumps({"grid": "core", "rows": rows}))
    if fractions:
        rows = fraction_rows() + list(fraction_extra)
        (folder / "data_fraction.json").write_text(json.dumps({"grid": "data_fraction", "rows": rows}))
    for name, rows in more.items():
        (folder / f"{name}.json").write_text(json.dumps({"grid": name, "rows": rows}))


def layer_groups(layer_rel_l1, total_rel_l1=0.01, total_angle_deg=0.8):
    groups = {f"layer_{i}": {"rel_l1": v, "angle": 0.01} for i, v in enumerate(layer_rel_l1)}
    groups["embeddings"] = {"rel_l1": 0.001, "angle": 0.001}
    groups["total"] = {"rel_l1": total_rel_l1, "angle": math.radians(total_angle_deg)}
    return groups


def fake_distances(workdir):
    task = str(workdir).split("/fake/")[1].split("/")[0]
    seed = int(str(workdir)[-1])
    if task == "cola":  # spread 3x on every seed, close
        groups = layer_groups([0.01, 0.02, 0.03 + 0.001 * seed])
    elif task == "stsb":  # spread 1.2x, close
        groups = layer_groups([0.010, 0.011, 0.012])
    elif task == "rte":  # one seed far away
        groups = layer_groups([0.01, 0.05], total_rel_l1=0.2 if seed == 1 else 0.01)
    else:  # mrpc: angle too large on every seed
        groups = layer_groups([0.01, 0.05], total_angle_deg=30.0)
    return {"step": 100, "groups": groups}


def run(tmp_path, monkeypatch, *extra, compute=fake_distances, core=True, fractions=True, core_extra=(),
        **tables_kw):
    """scripts/claims.py on the synthetic tables; run workdirs (curves) under tmp_path/root."""
    grids = tmp_path / "grids"
    write_tables(grids, core=core, fractions=fractions, core_extra=core_extra, **tables_kw)
    monkeypatch.setattr(report_distances, "compute_run_distances", compute)
    out = tmp_path / "out" / "claims"
    argv = ["--grids", str(grids), "--out", str(out), "--selection", str(tmp_path / "none.json"),
            "--fallback-distances", str(tmp_path / "no_fallback"), "--rankings", str(tmp_path / "rankings"),
            "--root", str(tmp_path / "root"), *extra]
    assert claims.main(argv) == 0
    doc = json.loads((tmp_path / "out" / "claims.json").read_text())
    return {c["id"]: c for c in doc["claims"]}, doc, (tmp_path / "out" / "claims.md").read_text()


def cell(c, task, fraction=None):
    (found,) = [x for x in c["cells"] if x["task"] == task and fraction in (None, x.get("fraction"))]
    return found


def test_paired_differences_match_scipy_and_equivalence_verdicts(tmp_path, monkeypatch):
    by_id, _, text = run(tmp_path, monkeypatch)
    for cid, method, deltas in (("3a", "top3", [0.1, -0.2, 0.3]), ("4", "supermask", [-10.0, -11.0, -9.0]),
                                ("3b", "critical2", [3.0, -3.0, 1.0])):
        d = cell(by_id[cid], "cola")["diff"]
        m = np.array([v + x for v, x in zip(FULL["cola"].values(), deltas)])
        b = np.array(list(FULL["cola"].values()))
        low, high = scipy_stats.ttest_rel(m, b).confidence_interval(0.95)
        ref = scipy_stats.t.interval(0.95, 2, loc=np.mean(m - b), scale=scipy_stats.sem(m - b))
        assert d["n"] == 3 and d["mean"] == pytest.approx(np.mean(deltas), abs=1e-9)
        assert (d["low"], d["high"]) == pytest.approx((low, high), abs=1e-9)
        assert (d["low"], d["high"]) == pytest.approx(ref, abs=1e-9)
    assert cell(by_id["3a"], "cola")["verdict"] == "holds"
    assert cell(by_id["4"], "cola")["verdict"] == "fails"
    assert cell(by_id["3b"], "cola")["verdict"] == "inconclusive"
    # Differences 3, -3, 1 (mean 1/3, sd 3.06): how many pairs would decide at this mean and sd.
    need = cell(by_id["3b"], "cola")["pairs_to_decide"]
    assert need == stats.pairs_to_decide(1 / 3, float(np.std([3.0, -3.0, 1.0], ddof=1)), 2.0) and need > 3
    assert f"**inconclusive** (inconclusive at n=3; ~{need} pairs would decide at this mean and sd)" in text
    # The other tasks have full runs but no top3 run, sst2 has no row at all: missing, never filled.
    assert [cell(by_id["3a"], t)["verdict"] for t in tables.CORE_TASKS] == ["holds"] + ["missing"] * 4
    assert by_id["3a"]["verdict"] == "inconclusive"  # holds where measured, missing elsewhere
    assert by_id["4"]["verdict"] == "fails"
    top3 = np.array([50.1, 51.8, 51.3])
    assert f"| cola | 3 | 51.00 ± 1.00 (n=3) | {top3.mean():.2f} ± {top3.std(ddof=1):.2f} (n=3) |" in text
    assert "| sst2 | 0 | missing | missing | — | **missing** (no finished run of either) |" in text


def test_lora_missing_one_pair_and_partial_seeds(tmp_path, monkeypatch):
    by_id, _, _ = run(tmp_path, monkeypatch)
    lora = by_id["7"]
    assert cell(lora, "stsb")["verdict"] == "missing" and "the method" in cell(lora, "stsb")["note"]
    one = cell(lora, "mrpc")
    assert (one["diff"]["n"], one["diff"]["low"], one["verdict"]) == (1, None, "inconclusive")
    assert one["diff"]["mean"] == pytest.approx(0.5)
    two = cell(lora, "cola")
    assert two["diff"]["n"] == 2 and two["diff"]["seeds"] == [0, 1]
    d = np.array([0.5, -0.5])
    ref = scipy_stats.t.interval(0.95, 1, loc=d.mean(), scale=scipy_stats.sem(d))
    assert (two["diff"]["low"], two["diff"]["high"]) == pytest.approx(ref)
    assert two["verdict"] == "inconclusive" and "n=2 of 3" in two["note"]
    assert lora["verdict"] == "inconclusive"


def test_margin_option_changes_equivalence(tmp_path, monkeypatch):
    by_id, doc, text = run(tmp_path, monkeypatch, "--margin", "15")
    assert cell(by_id["4"], "cola")["verdict"] == "holds"  # [-12.5, -7.5] lies within ±15
    assert doc["protocol"]["margin"] == 15.0 and "±15 points" in text
    assert "--margin 15" in doc["protocol"]["command"]


def test_data_fraction_claims(tmp_path, monkeypatch):
    by_id, _, _ = run(tmp_path, monkeypatch)
    match, stable, beats = by_id["5a"], by_id["5b"], by_id["5c"]
    assert cell(match, "mrpc", 0.1)["verdict"] == "holds"
    assert cell(match, "mrpc", 0.3)["verdict"] == "inconclusive"  # [0.9, 4.6] straddles +2
    assert cell(match, "mrpc", 0.5)["verdict"] == "inconclusive"  # [-2.7, -0.3] straddles -2
    assert cell(match, "mrpc", 1.0)["verdict"] == "missing"
    assert cell(match, "stsb", 0.5)["verdict"] == "missing"
    # The 100% cells come from the core grid's rows (data_fraction does not rerun them).
    assert cell(match, "cola", 1.0)["verdict"] != "missing"
    assert match["verdict"] == "inconclusive" and match["counts"] == {
        "holds": 1, "fails": 0, "inconclusive": 5, "missing": 6}
    d = cell(beats, "mrpc", 0.3)["diff"]
    ref = scipy_stats.t.interval(0.95, 2, loc=np.mean([3.5, 2.0, 2.8]), scale=scipy_stats.sem([3.5, 2.0, 2.8]))
    assert (d["low"], d["high"]) == pytest.approx(ref)
    assert cell(beats, "mrpc", 0.3)["verdict"] == "holds"
    assert cell(beats, "mrpc", 0.5)["verdict"] == "fails"  # [-2.7, -0.3]: no gain
    assert cell(beats, "cola", 0.3)["verdict"] == "inconclusive"  # 2 pairs, wide
    assert beats["verdict"] == "fails"
    # Stability at 30%: mrpc sd 0.25 vs 1.0 holds; cola full has 2 seeds: inconclusive; stsb missing.
    assert [cell(stable, t)["verdict"] for t in ("mrpc", "cola", "stsb")] == ["holds", "inconclusive", "missing"]
    assert cell(stable, "mrpc")["method"]["sd"] == pytest.approx(np.std([73.5, 74.0, 73.8], ddof=1))
    assert stable["verdict"] == "inconclusive"  # 1 of 3 holds: no majority


def test_adapters_spread(tmp_path, monkeypatch):
    by_id, _, text = run(tmp_path, monkeypatch)
    c = by_id["6"]
    assert [cell(c, t)["verdict"] for t in tables.CORE_TASKS] == ["holds", "fails", "holds", "missing", "missing"]
    assert cell(c, "cola")["ratio_full"] == pytest.approx(10.0)
    assert cell(c, "rte")["ratio_full"] == pytest.approx(10.0 / np.std([60.0, 63.0, 58.0], ddof=1))
    assert c["verdict"] == "inconclusive"  # 2 of 5 hold: no majority
    assert "F(0.975; 2, 2) = 39.0" in text


def test_distance_claims_from_stubbed_runs_and_cache(tmp_path, monkeypatch):
    by_id, _, _ = run(tmp_path, monkeypatch)
    close, layers = by_id["1"], by_id["2"]
    assert [cell(close, t)["verdict"] for t in tables.CORE_TASKS] == ["holds", "holds", "inconclusive", "fails", "missing"]
    assert close["verdict"] == "fails"
    assert cell(close, "cola")["rel_l1"]["mean"] == pytest.approx(0.01)
    assert cell(close, "mrpc")["angle_deg"]["mean"] == pytest.approx(30.0)
    assert [cell(layers, t)["verdict"] for t in tables.CORE_TASKS] == ["holds", "fails", "holds", "holds", "missing"]
    assert cell(layers, "cola")["ratios"] == pytest.approx([3.0, 3.1, 3.2])
    assert cell(layers, "cola")["most_moved"] == ["layer_2"] * 3
    assert cell(layers, "stsb")["kruskal_p"] is not None
    cache = json.loads((tmp_path / "out" / "claims_distances.json").read_text())
    assert len(cache) == 12 and "runs/fake/cola/full/frac1/seed0" in cache

    def refuse(workdir):
        raise AssertionError(f"recomputed {workdir}")

    again, _, _ = run(tmp_path, monkeypatch, compute=refuse)  # all cached
    assert again["1"]["cells"] == close["cells"] and again["2"]["cells"] == layers["cells"]
    (tmp_path / "out" / "claims_distances.json").unlink()
    skipped, doc3, text = run(tmp_path, monkeypatch, "--no-distances", compute=refuse)
    assert skipped["1"]["verdict"] == "missing" and len(doc3["protocol"]["distances_not_loaded"]) == 12
    assert "--no-distances" in text


def test_distance_claims_with_tiny_parameter_trees(tmp_path, monkeypatch):
    from fft import analyze

    rng = np.random.default_rng(0)
    pre = {f"encoder/layer_{i}/dense/kernel": rng.normal(size=(8, 8)).astype(np.float32) for i in range(2)}
    ft = {k: v + (0.01 if "layer_0" in k else 0.03) * np.abs(v) * np.sign(rng.normal(size=v.shape))
          for k, v in pre.items()}
    ft = {k: v.astype(np.float32) for k, v in ft.items()}
    calls = []

    def run_params(workdir):
        calls.append(workdir)
        return pre, ft, 7

    monkeypatch.setattr(analyze, "run_params", run_params)
    out = report_distances.compute_run_distances(tmp_path)
    assert calls and out["step"] == 7
    groups = out["groups"]
    total = sum(np.abs(ft[k] - pre[k]).sum() for k in pre) / sum(np.abs(pre[k]).sum() for k in pre)
    assert groups["layer_0"]["rel_l1"] == pytest.approx(0.01, rel=1e-4)
    assert groups["layer_1"]["rel_l1"] == pytest.approx(0.03, rel=1e-4)
    assert groups["total"]["rel_l1"] == pytest.approx(total, rel=1e-4)
    ratio, most = report_distances.layer_spread(groups)
    assert ratio == pytest.approx(3.0, rel=1e-3) and most == "layer_1"


def test_missing_tables_and_fallback(tmp_path, monkeypatch):
    fallback = tmp_path / "fallback" / "cola"
    fallback.mkdir(parents=True)
    (fallback / "distances.json").write_text(json.dumps({"groups": layer_groups([0.02, 0.021])}))
    grids = tmp_path / "grids"
    grids.mkdir()
    monkeypatch.setattr(report_distances, "compute_run_distances", fake_distances)
    out = tmp_path / "out" / "claims"
    assert claims.main(["--grids", str(grids), "--out", str(out), "--selection", str(tmp_path / "none.json"),
                        "--fallback-distances", str(tmp_path / "fallback")]) == 0
    doc = json.loads((tmp_path / "out" / "claims.json").read_text())
    text = (tmp_path / "out" / "claims.md").read_text()
    assert all(c["verdict"] == "missing" for c in doc["claims"])
    assert all(x["verdict"] == "missing" for c in doc["claims"] for x in c["cells"])
    assert "`core`: **missing**" in text and "`pooling`: **missing**" in text
    assert doc["protocol"]["compute"]["runs"] == 0
    close = {c["id"]: c for c in doc["claims"]}["1"]
    assert [f["task"] for f in close["fallback"]] == ["cola"] and close["fallback"][0]["verdict"] == "holds"
    assert "never counted in the verdict" in text


def test_pooling_and_compute(tmp_path, monkeypatch):
    grids = tmp_path / "grids"
    write_tables(grids)
    pooling = [row("cola", "head-cls", {0: 10.0}, seconds=5.0), row("cola", "head-mean", {0: 12.0}, seconds=5.0),
               row("rte", "head-cls", {0: 50.0}), row("rte", "head-mean", {0: 50.0}),
               row("cola", "bitfit-cls", {0: 40.0}), row("cola", "bitfit-mean", {})]
    (grids / "pooling.json").write_text(json.dumps({"grid": "pooling", "rows": pooling}))
    monkeypatch.setattr(report_distances, "compute_run_distances", fake_distances)
    out = tmp_path / "out" / "claims"
    assert claims.main(["--grids", str(grids), "--out", str(out), "--selection", str(tmp_path / "none.json"),
                        "--fallback-distances", str(tmp_path / "none")]) == 0
    doc = json.loads((tmp_path / "out" / "claims.json").read_text())
    wins = doc["pooling"]["wins"]
    assert wins["head"] == {"cls": 0, "mean": 1, "tie": 1, "missing": 0}
    assert wins["bitfit"]["missing"] == 2  # cola: mean missing; rte: no rows
    comp = doc["protocol"]["compute"]
    core_runs = sum(r["n"] for r in core_rows())
    fraction_runs = sum(r["n"] for r in fraction_rows())
    assert comp["runs"] == core_runs + fraction_runs + 5
    assert comp["train_seconds"] == pytest.approx(10.0 * (core_runs + fraction_runs) + 5.0 * 2 + 10.0 * 3)
    assert comp["wall_seconds"] is None  # These rows predate wall_seconds: not made up.
    # With wall time in the rows (and a selection grid, counted too): hours per grid and in all.
    for name, rows in (("pooling", pooling), ("lr_selection", [row("rte", "full", {0: 60.0}, seconds=100.0)])):
        for r in rows:
            r["wall_seconds"] = 1800.0 * r["n"]
        (grids / f"{name}.json").write_text(json.dumps({"grid": name, "rows": rows}))
    for name, rows in (("core", core_rows()), ("data_fraction", fraction_rows())):
        for r in rows:
            r["wall_seconds"] = 360.0 * r["n"]
        (grids / f"{name}.json").write_text(json.dumps({"grid": name, "rows": rows}))
    assert claims.main(["--grids", str(grids), "--out", str(out), "--selection", str(tmp_path / "none.json"),
                        "--fallback-distances", str(tmp_path / "none")]) == 0
    comp = json.loads((tmp_path / "out" / "claims.json").read_text())["protocol"]["compute"]
    assert comp["grids"]["lr_selection"] == {"runs": 1, "planned": 3, "train_seconds": 100.0, "wall_seconds": 1800.0}
    assert comp["wall_seconds"] == pytest.approx(1800.0 * 6 + 360.0 * (core_runs + fraction_runs))
    text = (tmp_path / "out" / "claims.md").read_text()
    assert "lr_selection: 1/3 runs, 0.50 h of wall time, 100 s of training" in text


def gradient_file(folder, task, layers):
    """A gradient ranking as fft.layer_ranking writes it: layers first-ranked first, then the rest."""
    folder.mkdir(parents=True, exist_ok=True)
    rest = [i for i in range(6) if i not in layers]
    ranking = [{"group": f"layer_{i}", "rank": r + 1, "score": 10.0 - r} for r, i in enumerate([*layers, *rest])]
    path = folder / f"{task}_gradient.json"
    path.write_text(json.dumps({"kind": "gradient", "ranking": ranking, "other_groups": [{"group": "embeddings"}]}))
    return path


def delta_file(workdir, layers):
    from safetensors.numpy import save_file

    workdir.mkdir(parents=True)
    tensors = {f"encoder/layer_{i}/output/dense/kernel": np.zeros((2, 2), np.float32) for i in layers}
    tensors.update({"classifier/kernel": np.zeros((2, 2), np.float32),
                    "embeddings/layer_norm/scale": np.zeros(2, np.float32)})
    save_file(tensors, str(workdir / "task_delta.safetensors"))


def ranking_rows(tmp_path):
    """critical2-grad on cola (close to full), rte (close to full, where critical2 is 10 points
    below) and mrpc (1 seed); critical2 on rte. Seeds 0, 1 of rte's critical2-grad trained layers
    1 and 4 as its file says, seed 2 (a stale file) 1 and 5; the other runs left no delta."""
    folder = tmp_path / "rankings"
    gradient_file(folder, "cola", [3, 5])
    rte_file = gradient_file(folder, "rte", [4, 1])
    gradient_file(folder, "sst2", [5, 4])  # no sst2 run at all; stsb: no file
    rte_grad = row("rte", "critical2-grad", shifted(FULL["rte"], [0.1, -0.1, 0.0]))
    rte_grad["options"] = {"k": 2, "distances_file": str(rte_file)}
    rte_grad["workdirs"] = [str(tmp_path / "runs" / f"seed{s}") for s in range(3)]
    for s, layers in ((0, [1, 4]), (1, [1, 4]), (2, [1, 5])):
        delta_file(tmp_path / "runs" / f"seed{s}", layers)
    rte_dist = row("rte", "critical2", shifted(FULL["rte"], [-10.0, -11.0, -9.0]))
    rte_dist["options"] = {"k": 2, "distances_file": "runs/fake/rte/full/frac1/seed0"}
    return [row("cola", "critical2-grad", shifted(FULL["cola"], [0.2, -0.1, 0.1])), rte_grad, rte_dist,
            row("mrpc", "critical2-grad", {0: 81.0})]


def test_gradient_ranking_claim_and_rankings_section(tmp_path, monkeypatch):
    by_id, doc, text = run(tmp_path, monkeypatch, core_extra=ranking_rows(tmp_path))
    grad = by_id["3c"]
    assert [cell(grad, t)["verdict"] for t in tables.CORE_TASKS] == [
        "holds", "missing", "holds", "inconclusive", "missing"]
    assert grad["verdict"] == "inconclusive" and grad["method"] == "critical2-grad"
    d = cell(grad, "cola")["diff"]
    ref = scipy_stats.t.interval(0.95, 2, loc=np.mean([0.2, -0.1, 0.1]), scale=scipy_stats.sem([0.2, -0.1, 0.1]))
    assert (d["low"], d["high"]) == pytest.approx(ref)
    assert cell(by_id["3b"], "rte")["verdict"] == "fails"
    assert [c["id"] for c in doc["claims"]][2:6] == ["3a", "3b", "3c", "4"]

    section = {t["task"]: t for t in doc["rankings"]["tasks"]}
    assert list(section) == list(tables.CORE_TASKS) and doc["rankings"]["after"] == "3c"
    picks = {t: {k: r["layers"] for k, r in e["rankings"].items()} for t, e in section.items()}
    assert picks["cola"] == {"distance": [2, 1], "gradient": [3, 5], "top": [3, 4, 5]}
    assert picks["rte"] == {"distance": [1, 0], "gradient": [4, 1], "top": [3, 4, 5]}
    assert picks["stsb"]["gradient"] is None and section["stsb"]["rankings"]["gradient"]["note"] == "no ranking file"
    # sst2 never ran: its gradient file still names the layers; no full run, so no distance ranking.
    assert picks["sst2"] == {"distance": None, "gradient": [5, 4], "top": [3, 4, 5]}
    assert section["rte"]["rankings"]["gradient"]["trained"] == {"0": [1, 4], "1": [1, 4], "2": [1, 5]}
    assert section["rte"]["shared_layers"] == [1] and section["cola"]["shared_layers"] == []
    # gradient - distance, paired by seed: rte clearly higher; cola wide; mrpc has no critical2.
    g = section["rte"]["gradient_vs_distance"]
    assert g["reading"] == "gradient higher" and g["diff"]["mean"] == pytest.approx(10.0)
    ref = scipy_stats.t.interval(0.95, 2, loc=10.0, scale=scipy_stats.sem([10.1, 10.9, 9.0]))
    assert (g["diff"]["low"], g["diff"]["high"]) == pytest.approx(ref)
    assert section["cola"]["gradient_vs_distance"]["reading"] == "no difference shown"
    assert section["mrpc"]["gradient_vs_distance"]["reading"] == "missing"
    assert doc["rankings"]["readings"] == {"gradient higher": 1, "distance higher": 0,
                                           "no difference shown": 1, "missing": 3}

    rte_grad = (f"| gradient, before training | `critical2-grad` | 4, 1 | `{tmp_path}/rankings/rte_gradient.json` | "
                f"1, 4 (seeds 0, 1); 1, 5 (seed 2) | ")
    assert rte_grad in text
    assert ("| distance: moved most in the seed-0 full run | `critical2` | 1, 0 | `runs/fake/rte/full/frac1/seed0` "
            "| — | 50.33 ± 1.53 (n=3) | -10.00 [-12.48, -7.52] | claim 3b: **fails** |") in text
    assert ("| gradient, before training | `critical2-grad` | 5, 4 | `" + f"{tmp_path}/rankings/sst2_gradient.json"
            "` (planned) | — | missing | — | claim 3c: **missing** (no finished run of either) |") in text
    assert "| `critical2` | missing (no seed-0 full run to rank by) | — | — | missing |" in text
    assert "paired by seed): +10.00 [" in text and "3 pairs: **gradient higher**" in text
    assert text.index("## 3c.") < text.index("## 3a–3c side by side") < text.index("## 4.")


def test_rankings_without_core_table_or_distances(tmp_path, monkeypatch):
    """No core table: every score, difference and distance ranking is missing; the gradient
    ranking files still name their layers."""
    gradient_file(tmp_path / "rankings", "cola", [5, 4])
    by_id, doc, text = run(tmp_path, monkeypatch, "--no-distances", core=False)
    assert by_id["3c"]["verdict"] == "missing"
    cola = doc["rankings"]["tasks"][0]
    assert cola["rankings"]["gradient"]["layers"] == [5, 4] and cola["rankings"]["gradient"]["planned"]
    assert cola["rankings"]["distance"]["layers"] is None
    assert all(r["score"]["n"] == 0 and r["vs_full"] is None for t in doc["rankings"]["tasks"]
               for r in t["rankings"].values())
    assert doc["rankings"]["readings"]["missing"] == 5
    assert "| full fine-tuning | `full` | all | — | — | missing | — | — |" in text


def test_rankings_with_distances_not_loaded(tmp_path, monkeypatch):
    def refuse(workdir):
        raise AssertionError(f"computed {workdir}")

    _, doc, _ = run(tmp_path, monkeypatch, "--no-distances", compute=refuse)
    cola = doc["rankings"]["tasks"][0]["rankings"]["distance"]
    assert cola["layers"] is None and cola["note"] == "run's distances: distances not loaded"
    skipped = doc["protocol"]["distances_not_loaded"]
    assert len(skipped) == len(set(skipped)) == 12  # the seed-0 full runs asked twice, listed once


def test_ranking_readers_agree_with_fft_partition(tmp_path):
    from fft import distances, partition

    for path in sorted((tables.REPO / "results" / "rankings").glob("*_gradient.json")):
        names = rankings.ranking_names(json.loads(path.read_text()))
        assert rankings._layers(names, 6) == partition.ranked_layers(path), path
    groups = {"embeddings": {"rel_l1": 0.9}, "layer_1": {"rel_l1": 0.02}, "layer_0": {"rel_l1": 0.03},
              "layer_2": {"rel_l1": None}, "layer_3": {"rel_l1": 0.02}, "total": {"rel_l1": 0.5}}
    expected = [r["group"] for r in distances.rank_layers(groups, "rel_l1", include=r"layer_\d+")]
    assert report_distances.moved_ranking(groups) == expected == ["layer_0", "layer_1", "layer_3", "layer_2"]
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"groups": groups}))
    assert rankings._layers(rankings.ranking_names({"groups": groups}), 6) == partition.ranked_layers(path)
    for select in ("top3", "top1", "4,5", "0,3-5"):
        assert rankings.parse_select(select) == partition._parse_layers(select, 6)
    assert rankings.parse_select("top7") is None and rankings.parse_select("4-x") is None


# Issue 16: learners (8a-8c), time budgets (9a), spread across data amounts and budgets (9b), the
# other methods beside 5a/5c and the learners ablation section.

LEARNERS_COLA = {0: 51.0, 1: 52.9, 2: 52.1}  # full cola + [1.0, 0.9, 1.1]: tight, within ±2
PARAMS = {("cola", "full"): 22_700_000, ("cola", "bitfit"): 40_000, ("cola", "learners"): 10_000,
          ("cola", "adapters"): 80_000, ("cola", "lora"): 75_000,  # 8.0x, 7.5x: holds
          ("rte", "learners"): 10_000, ("rte", "adapters"): 80_000, ("rte", "lora"): 70_000,  # 7.0x: holds
          ("mrpc", "learners"): 10_000, ("mrpc", "adapters"): 100_000, ("mrpc", "lora"): 60_000,  # 6x: fails
          ("stsb", "learners"): 10_000, ("stsb", "adapters"): 90_000}  # stsb lora unfinished: missing


def learners_rows():
    return [row("cola", "learners", LEARNERS_COLA),
            row("stsb", "learners", shifted(FULL["stsb"], [-10.0, -11.0, -9.0])),  # fails
            row("rte", "learners", shifted(FULL["rte"], [3.0, -3.0, 1.0])),  # inconclusive
            row("mrpc", "learners", shifted(FULL["mrpc"], [0.5, 0.3, 0.4])),  # holds
            row("mrpc", "adapters", {0: 80.0, 1: 81.0, 2: 82.0}), row("rte", "lora", {0: 60.0, 1: 63.0, 2: 58.0})]


def test_learners_match_full_and_parameter_counts(tmp_path, monkeypatch):
    by_id, doc, text = run(tmp_path, monkeypatch, core_extra=learners_rows(), params=PARAMS)
    match = by_id["8a"]
    assert [cell(match, t)["verdict"] for t in tables.CORE_TASKS] == [
        "holds", "fails", "inconclusive", "holds", "missing"]
    assert match["verdict"] == "fails" and match["method"] == "learners"
    d = cell(match, "cola")["diff"]
    ref = scipy_stats.t.interval(0.95, 2, loc=1.0, scale=scipy_stats.sem([1.0, 0.9, 1.1]))
    assert d["mean"] == pytest.approx(1.0) and (d["low"], d["high"]) == pytest.approx(ref)
    params = {p["task"]: p for p in match["params"]}
    assert params["cola"] == {"task": "cola", "full": 22_700_000, "bitfit": 40_000, "adapters": 80_000,
                              "lora": 75_000, "learners": 10_000}
    assert params["stsb"]["lora"] is None and params["sst2"]["learners"] is None
    assert "| cola | 22,700,000 | 40,000 | 80,000 | 75,000 | 10,000 | 0.04% |" in text

    fewer = by_id["8b"]
    assert [cell(fewer, t)["verdict"] for t in tables.CORE_TASKS] == [
        "holds", "missing", "holds", "fails", "missing"]
    assert cell(fewer, "cola")["ratios"] == pytest.approx({"adapters": 8.0, "lora": 7.5})
    assert cell(fewer, "rte")["ratios"]["lora"] == pytest.approx(7.0)  # 7x exactly: holds (≤)
    assert cell(fewer, "stsb")["note"] == "no finished run of lora"
    assert fewer["verdict"] == "fails" and fewer["counts"] == {"holds": 2, "fails": 1, "inconclusive": 0, "missing": 2}
    assert "| mrpc | 10,000 | 100,000 | 60,000 | 10.0x | 6.0x | **fails** |" in text
    ids = [c["id"] for c in doc["claims"]]
    assert ids[-5:] == ["8a", "8b", "8c", "9a", "9b"]


def write_curve(root, workdir, points, priming=None, metric="accuracy"):
    """A run's curve.json as fft.budget writes it, points [(train seconds, score %)]; priming =
    (phase 1's points, its seconds) adds <workdir>/priming/curve.json as fft.priming does."""
    path = root / workdir
    path.mkdir(parents=True)

    def dump(file, pts):
        file.write_text(json.dumps({"points": [
            {"step": 10 * (i + 1), "train_seconds": t, "timed": True, "eval": {"dev": {metric: v / 100}}}
            for i, (t, v) in enumerate(pts)]}))

    dump(path / "curve.json", points)
    final = {"train_seconds": points[-1][0]}
    if priming is not None:
        (path / "priming").mkdir()
        dump(path / "priming" / "curve.json", priming[0])
        final["priming"] = {"train_seconds": priming[1]}
    (path / "final_metrics.json").write_text(json.dumps(final))


# Full cola (final 50, 52, 51: target 51): seed 0 never reaches it, seeds 1, 2 at 120 and 180 s.
FULL_COLA_CURVES = {0: [(60, 45.0), (120, 50.0)], 1: [(60, 48.0), (120, 51.5), (180, 52.0)],
                    2: [(60, 49.0), (180, 51.0)]}
SPEED_CASES = {  # learners' curves by seed (None: no curve), verdict, ratio, note
    "fast": ({0: ([(30, 51.0)], ([(30, 40.0)], 30.0)), 1: [(60, 50.0), (120, 52.9)], 2: [(60, 52.1)]},
             "holds", 80 / 150, ""),
    "at the bound": ({0: [(120, 51.0)], 1: [(120, 52.9)], 2: [(120, 52.1)]}, "holds", 0.8, ""),
    "slow": ({0: [(120, 51.0)], 1: [(180, 52.9)], 2: [(180, 52.1)]}, "fails", 160 / 150, ""),
    "never": ({0: [(60, 40.0), (120, 50.9)], 1: [(60, 45.0)], 2: [(60, 52.1)]}, "fails", 60 / 150,
              "learners never reach the target on 2 of 3 seeds"),
    "some": ({0: [(60, 50.9)], 1: [(60, 52.9)], 2: [(60, 52.1)]}, "inconclusive", 60 / 150,
             "learners never reach the target on 1 of 3 seeds"),
    "one curve": ({0: [(60, 51.0)], 1: None, 2: None}, "inconclusive", 60 / 150, "fewer than 2 curves"),
    "no curves": ({0: None, 1: None, 2: None}, "missing", None, "no curve.json for the learners' runs"),
}


@pytest.mark.parametrize("case", list(SPEED_CASES))
def test_learners_speed_on_cola(tmp_path, monkeypatch, case):
    curves, verdict, ratio, note = SPEED_CASES[case]
    root = tmp_path / "root"
    for seed, points in FULL_COLA_CURVES.items():
        write_curve(root, f"runs/fake/cola/full/frac1/seed{seed}", points)
    for seed, points in curves.items():
        if points is not None:
            pts, priming = points if isinstance(points, tuple) else (points, None)
            write_curve(root, f"runs/fake/cola/learners/frac1/seed{seed}", pts, priming)
    by_id, _, text = run(tmp_path, monkeypatch, core_extra=[row("cola", "learners", LEARNERS_COLA)])
    speed = by_id["8c"]
    (c,) = speed["cells"]
    assert (c["task"], c["verdict"], speed["verdict"]) == ("cola", verdict, verdict)
    assert c["target"] == pytest.approx(51.0) and note in c["note"]
    assert c["ratio"] == (None if ratio is None else pytest.approx(ratio))
    assert c["full"]["seconds"] == {"0": None, "1": 120, "2": 180} and c["full"]["mean_s"] == 150
    if case == "fast":  # seed 0's priming phase (30 s) counts: 30 + 30 s
        assert c["learners"]["seconds"] == {"0": 60.0, "1": 120, "2": 60}
        assert ("| cola | 51.00 | 150 ± 42 s (reached 2/3) | 80 ± 35 s (reached 3/3) | 0: 60, 1: 120, 2: 60 "
                "| 0.53 | **holds** |") in text
        assert "upper bounds" in text and "this machine" in text
    # The other core tasks: information, not counted.
    others = {o["task"]: o for o in speed["others"]}
    assert list(others) == ["stsb", "rte", "mrpc", "sst2"] and sum(speed["counts"].values()) == 1
    assert others["stsb"]["note"] == "no finished run of learners"
    assert others["sst2"]["note"] == "no finished run of full (no target)"


def test_learners_speed_without_full_curves(tmp_path, monkeypatch):
    write_curve(tmp_path / "root", "runs/fake/cola/learners/frac1/seed0", [(60, 52.0)])
    by_id, _, _ = run(tmp_path, monkeypatch, core_extra=[row("cola", "learners", LEARNERS_COLA)])
    (c,) = by_id["8c"]["cells"]
    assert (c["verdict"], c["note"]) == ("missing", "no curve.json for full's runs")
    assert c["full"]["no_curve"] == [0, 1, 2] and c["learners"]["n"] == 1


BUDGET_FULL = {0: 70.0, 1: 72.0, 2: 71.0}


def budget_rows():
    def at(task, method, label, scores):
        return row(task, f"{method}-{label}", scores)

    return [
        at("mrpc", "full", "b1_3ep", BUDGET_FULL),
        at("mrpc", "bitfit", "b1_3ep", shifted(BUDGET_FULL, [0.2, -0.1, 0.0])),  # holds
        at("mrpc", "adapters", "b1_3ep", {0: 60.0, 1: 70.0, 2: 80.0}),  # sd 10 vs 1: 9b holds
        at("mrpc", "lora", "b1_3ep", shifted(BUDGET_FULL, [-1.0, -1.0, -1.0])),
        at("mrpc", "learners", "b1_3ep", shifted(BUDGET_FULL, [0.5, 0.5, 0.6])),
        at("mrpc", "full", "b2_3ep", BUDGET_FULL),
        at("mrpc", "bitfit", "b2_3ep", shifted(BUDGET_FULL, [-10.0, -11.0, -9.0])),  # fails
        at("cola", "full", "b1ep", BUDGET_FULL),
        at("cola", "bitfit", "b1ep", shifted(BUDGET_FULL, [3.0, -3.0, 1.0])),  # inconclusive
        at("cola", "full", "b2ep", BUDGET_FULL),
        at("cola", "adapters", "b2ep", {0: 50.0, 1: 60.0, 2: 70.0}),  # 9b holds
        at("stsb", "full", "b2ep", BUDGET_FULL), at("stsb", "bitfit", "b2ep", {}),  # missing
    ]


FRACTION_ADAPTERS = [
    row("mrpc", "adapters", {0: 60.0, 1: 70.0, 2: 80.0}, fraction=0.1),  # sd 10 vs 1: holds
    row("mrpc", "adapters", {0: 71.0, 1: 71.5, 2: 72.0}, fraction=0.3),  # sd 0.5: fails
    row("mrpc", "adapters", {0: 70.0, 1: 71.5, 2: 73.0}, fraction=0.5),  # sd 1.5: inconclusive
    row("cola", "adapters", {0: 30.0, 1: 40.0, 2: 50.0}, fraction=0.3),  # full has 2 seeds: inconclusive
]


def test_bitfit_at_every_time_budget(tmp_path, monkeypatch):
    config = tmp_path / "root" / "runs/fake/mrpc/full-b1_3ep/frac1/seed0"
    config.mkdir(parents=True)
    (config / "config.json").write_text(json.dumps({"task": "mrpc", "time_budget_s": 41.7}))
    by_id, _, text = run(tmp_path, monkeypatch, time_budget=budget_rows())
    c = by_id["9a"]
    verdicts = {(x["task"], x["budget"]): x["verdict"] for x in c["cells"]}
    assert len(verdicts) == 12 and verdicts[("mrpc", "b1_3ep")] == "holds"
    assert verdicts[("mrpc", "b2_3ep")] == "fails" and verdicts[("cola", "b1ep")] == "inconclusive"
    assert verdicts[("stsb", "b2ep")] == "missing" and verdicts[("mrpc", "b2ep")] == "missing"
    assert c["verdict"] == "fails" and c["counts"] == {"holds": 1, "fails": 1, "inconclusive": 1, "missing": 9}
    d = next(x for x in c["cells"] if x["budget"] == "b1ep" and x["task"] == "cola")["diff"]
    ref = scipy_stats.t.interval(0.95, 2, loc=np.mean([3.0, -3.0, 1.0]), scale=scipy_stats.sem([3.0, -3.0, 1.0]))
    assert (d["low"], d["high"]) == pytest.approx(ref)
    assert "| cola | 1 | 3 | 71.00 ± 1.00 (n=3) |" in text  # budget column: 1 epoch
    evidence = {(e["task"], e["budget"]): e for e in c["evidence"]}
    mrpc = evidence[("mrpc", "b1_3ep")]
    assert mrpc["budget_s"] == 41.7 and mrpc["epochs"] == pytest.approx(1 / 3)
    assert mrpc["methods"]["lora"]["vs_full"]["mean"] == pytest.approx(-1.0)
    assert mrpc["methods"]["learners"]["score"]["mean"] == pytest.approx(71.0 + 1.6 / 3)
    assert evidence[("stsb", "b1ep")]["methods"]["full"]["score"]["n"] == 0
    assert ("| mrpc | 1/3 | 41.7 | 71.00 ± 1.00 (n=3) | 71.03 ± 0.85 (n=3) | 70.00 ± 10.00 (n=3) | "
            "70.00 ± 1.00 (n=3) | 71.53 ± 1.00 (n=3) |") in text


def test_budget_runs_that_shared_the_machine_are_flagged():
    """Claim 9a names the budget runs whose CPU share fell below 0.75 of the grid's median."""
    from fft.report import budgets
    from fft.report.markdown_methods import machine_lines

    rows = [dict(row("mrpc", "full-b1ep", {0: 70.0, 1: 71.0, 2: 72.0}), cpu_shares=[1.8, 1.9, 0.9]),
            dict(row("cola", "bitfit-b1ep", {0: 30.0, 1: 31.0}), cpu_shares=[1.7, None]),
            row("stsb", "full-b1ep", {0: 80.0})]  # A table from before cpu_shares.
    m = budgets.machine_sharing({"rows": rows})
    assert m["recorded"] == 4 and m["median"] == pytest.approx(1.75)
    assert m["runs"] == [{"workdir": "runs/fake/mrpc/full-b1ep/frac1/seed2", "cpu_share": 0.9}]
    (line,) = [x for x in machine_lines(m) if x]
    assert "median 1.75 over 4 runs" in line and "`runs/fake/mrpc/full-b1ep/frac1/seed2` (0.90)" in line
    assert machine_lines(budgets.machine_sharing({"rows": rows[2:]})) == []
    assert budgets.machine_sharing(None)["recorded"] == 0


def test_adapters_spread_across_data_and_budgets(tmp_path, monkeypatch):
    by_id, _, text = run(tmp_path, monkeypatch, time_budget=budget_rows(), fraction_extra=FRACTION_ADAPTERS)
    c = by_id["9b"]
    got = {(x["grid"], x["task"], x.get("fraction") or x.get("budget")): x for x in c["cells"]}
    assert len(got) == 24
    expect = {("data_fraction", "mrpc", 0.1): "holds", ("data_fraction", "mrpc", 0.3): "fails",
              ("data_fraction", "mrpc", 0.5): "inconclusive", ("data_fraction", "cola", 0.3): "inconclusive",
              ("data_fraction", "cola", 1.0): "holds",  # core's rows: adapters sd 10 vs full 1
              ("data_fraction", "stsb", 1.0): "fails",  # core's rows: sd 0.1 vs 0.76
              ("data_fraction", "mrpc", 1.0): "missing",  # core has no mrpc adapters run
              ("time_budget", "mrpc", "b1_3ep"): "holds", ("time_budget", "cola", "b2ep"): "holds",
              ("time_budget", "mrpc", "b2_3ep"): "missing"}
    assert {k: got[k]["verdict"] for k in expect} == expect
    assert got[("data_fraction", "mrpc", 0.3)]["ratio_full"] == pytest.approx(0.5)
    assert got[("data_fraction", "cola", 0.3)]["ratio_full"] is None  # n < 3: no ratio read
    assert got[("data_fraction", "stsb", 1.0)]["ratio_full"] == pytest.approx(0.1 / np.std([85.0, 86.0, 84.5], ddof=1))
    assert c["counts"] == {"holds": 4, "fails": 2, "inconclusive": 2, "missing": 16}
    assert c["verdict"] == "inconclusive"  # 4 of 24 hold: no majority
    assert "F(0.975; 2, 2) = 39.0" in c["criterion"]
    assert "| time_budget | cola | — | 2 | 71.00 ± 1.00 (n=3) | 60.00 ± 10.00 (n=3) | 10.00 | **holds** |" in text
    # 5a / 5c: adapters, LoRA and learners beside BitFit, as information.
    others = {(o["task"], o["fraction"]): o["methods"] for o in by_id["5a"]["others"]}
    assert len(others) == 12 and [o["fraction"] for o in by_id["5c"]["others"]] == [0.3, 0.5] * 3
    mrpc = others[("mrpc", 0.1)]
    assert mrpc["adapters"]["vs_full"]["mean"] == pytest.approx(-1.0)  # (-10, -2, +9) / 3
    assert mrpc["lora"]["score"]["n"] == 0 and mrpc["lora"]["vs_full"] is None
    assert others[("cola", 1.0)]["adapters"]["score"]["sd"] == pytest.approx(10.0)  # core's row
    assert by_id["5a"]["verdict"] == "inconclusive"  # BitFit's verdict unchanged by the others
    assert "| mrpc | 0.1 | 71.00 ± 1.00 (n=3) | 70.00 ± 10.00 (n=3) | -1.00 [" in text


def test_learners_ablation_section(tmp_path, monkeypatch):
    root = tmp_path / "root"
    for seed, points in FULL_COLA_CURVES.items():
        write_curve(root, f"runs/fake/cola/full/frac1/seed{seed}", points)
    magnitude = shifted(LEARNERS_COLA, [-1.0, -1.2, -0.8])  # 50.0, 51.7, 51.3
    for seed, points in {0: [(60, 50.0)], 1: [(60, 50.0), (120, 51.7)], 2: [(180, 51.3)]}.items():
        write_curve(root, f"runs/fake/cola/primed-magnitude/frac1/seed{seed}", points)
    ablation = [row("cola", "primed-magnitude", magnitude), row("cola", "unprimed-random", {})]
    _, doc, text = run(tmp_path, monkeypatch, core_extra=[row("cola", "learners", LEARNERS_COLA)],
                       learners_ablation=ablation)
    section = doc["learners_ablation"]
    assert section["present"] and section["after"] == "8c"
    cola, stsb = section["tasks"]
    rows = {r["label"]: r for r in cola["settings"]}
    assert list(rows) == ["primed-movement", "primed-magnitude", "primed-random", "unprimed-magnitude",
                          "unprimed-random"]
    assert rows["primed-movement"]["grid"] == "core" and rows["primed-movement"]["vs_reference"] is None
    assert rows["primed-movement"]["time"]["n"] == 0  # core's learners left no curve here
    vs = rows["primed-magnitude"]["vs_reference"]
    ref = scipy_stats.t.interval(0.95, 2, loc=-1.0, scale=scipy_stats.sem([-1.0, -1.2, -0.8]))
    assert vs["mean"] == pytest.approx(-1.0) and (vs["low"], vs["high"]) == pytest.approx(ref)
    time = rows["primed-magnitude"]["time"]
    assert (time["reached"], time["n"], time["mean_s"]) == (2, 3, 150)
    assert rows["primed-magnitude"]["ratio_full"] == pytest.approx(1.0) and cola["full_seconds"] == 150
    assert rows["unprimed-random"]["score"]["n"] == 0 and rows["unprimed-random"]["time"] is None
    assert stsb["target"] == pytest.approx(np.mean([85.0, 86.0, 84.5]))
    assert all(r["score"]["n"] == 0 for r in stsb["settings"])
    line = ("| primed-magnitude | learners_ablation | 0.2 | magnitude | 51.00 ± 0.89 (n=3) | -1.00 [-1.50, -0.50] "
            "| 150 ± 42 s (reached 2/3) | 1.00 |")
    assert line in text
    assert text.index("## 8c.") < text.index("## Learners: priming and node choice") < text.index("## 9a.")


def test_new_claims_missing_without_tables(tmp_path, monkeypatch):
    by_id, doc, text = run(tmp_path, monkeypatch, "--no-distances", core=False, fractions=False)
    for cid in ("8a", "8b", "8c", "9a", "9b"):
        assert by_id[cid]["verdict"] == "missing"
        assert all(x["verdict"] == "missing" for x in by_id[cid]["cells"])
    assert len(by_id["9a"]["cells"]) == 12 and len(by_id["9b"]["cells"]) == 24
    assert all(o["verdict"] == "missing" for o in by_id["8c"]["others"])
    assert not doc["learners_ablation"]["present"]
    assert "`results/grids/learners_ablation.json`" not in text  # the tmp tables are named
    assert "learners_ablation.json` does not exist yet: its settings are **missing**." in text
    assert "`time_budget`: **missing**" in text


def test_baseline_section_beside_reference_numbers(tmp_path, monkeypatch):
    """Full fine-tuning's every dev metric, mean ± sd over seeds, beside the public numbers; a
    task without full runs is missing; without the core table the section says so."""
    _, doc, md = run(tmp_path, monkeypatch, "--no-distances")
    rows = {r["task"]: r for r in doc["baseline"]["rows"]}
    assert rows["mrpc"]["metrics"]["accuracy"] == pytest.approx({"mean": 81.0, "sd": 1.0, "n": 3})
    assert rows["sst2"]["metrics"] == {} and rows["sst2"]["n"] == 0
    assert "| mrpc | 100% | accuracy 81.00 ± 1.00 (n=3) | 88.9 | 87.5 | F1 88.85 / acc 84.07 |" in md
    assert "| sst2 | — | missing | 91.5 | 91.3 | acc 92.32 |" in md

    from fft.report import baseline

    mrpc = row("mrpc", "full", {0: 80.0, 1: 81.0, 2: 82.0})
    f1 = [0.86, 0.87, 0.89]
    mrpc["eval"]["dev"]["f1"] = {"mean": float(np.mean(f1)), "sd": float(np.std(f1, ddof=1)), "values": f1}
    mrpc["eval"]["dev"]["loss"] = {"mean": 0.5, "sd": 0.1, "values": [0.4, 0.5, 0.6]}
    (got,) = [r["metrics"] for r in baseline.baseline_section({"rows": [mrpc]})["rows"] if r["task"] == "mrpc"]
    assert set(got) == {"accuracy", "f1"}  # Not the loss.
    assert baseline.metrics_text(got) == "accuracy 81.00 ± 1.00; f1 87.33 ± 1.53 (n=3)"
    partial = dict(mrpc, n=2, planned=3)
    lines = baseline.baseline_lines(baseline.baseline_section({"rows": [partial]}), "core.json")
    assert any(line.startswith("| mrpc | 100% (2 of 3 seeds) |") for line in lines)
    assert "**missing**" in "\n".join(baseline.baseline_lines(baseline.baseline_section(None), "core.json"))
