"""scripts/claims.py: paired differences and intervals agree with scipy, verdicts follow the stated
rules, missing cells and tables are reported as missing, and the distance claims read (stubbed or
tiny) parameter trees through a cache keyed by workdir. No model is trained."""

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from scripts import claims

FULL = {"cola": {0: 50.0, 1: 52.0, 2: 51.0}, "stsb": {0: 85.0, 1: 86.0, 2: 84.5},
        "rte": {0: 60.0, 1: 63.0, 2: 58.0}, "mrpc": {0: 80.0, 1: 81.0, 2: 82.0}}  # sst2: no row


def row(task, setting, scores, fraction=1.0, metric="accuracy", planned=3, seconds=10.0):
    seeds = sorted(scores)
    values = [scores[s] / 100 for s in seeds]
    mean, sd = claims.stats.mean_sd(values)
    return {
        "task": task, "setting": setting, "method": setting, "options": {}, "lr": 1e-3,
        "fraction": fraction, "split": "dev", "metric": metric,
        "mean": None if mean is None else 100 * mean, "sd": None if sd is None else 100 * sd,
        "n": len(seeds), "planned": planned, "seeds": seeds,
        "eval": {"dev": {metric: {"mean": mean, "sd": sd, "values": values}}} if seeds else {},
        "trainable_params": None, "stored_bytes": None, "train_seconds": seconds if seeds else None,
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
    for f in claims.FRACTIONS:
        rows.append(row("mrpc", "full", FRACTION_FULL, fraction=f))
    rows.append(row("mrpc", "bitfit", shifted(FRACTION_FULL, [0.2, -0.1, 0.0]), fraction=0.1))
    rows.append(row("mrpc", "bitfit", shifted(FRACTION_FULL, [3.5, 2.0, 2.8]), fraction=0.3))
    rows.append(row("mrpc", "bitfit", shifted(FRACTION_FULL, [-1.0, -2.0, -1.5]), fraction=0.5))
    # 1.0: bitfit missing. cola: full only at 0.3, with 2 seeds; stsb: absent.
    rows.append(row("cola", "full", {0: 30.0, 1: 35.0}, fraction=0.3))
    rows.append(row("cola", "bitfit", {0: 31.0, 1: 33.0, 2: 32.0}, fraction=0.3))
    return rows


def write_tables(folder, core=True, fractions=True):
    folder.mkdir(parents=True, exist_ok=True)
    if core:
        (folder / "core.json").write_text(json.dumps({"grid": "core", "rows": core_rows()}))
    if fractions:
        (folder / "data_fraction.json").write_text(json.dumps({"grid": "data_fraction", "rows": fraction_rows()}))


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


def run(tmp_path, monkeypatch, *extra, compute=fake_distances, core=True, fractions=True):
    grids = tmp_path / "grids"
    write_tables(grids, core=core, fractions=fractions)
    monkeypatch.setattr(claims, "compute_run_distances", compute)
    out = tmp_path / "out" / "claims"
    argv = ["--grids", str(grids), "--out", str(out), "--selection", str(tmp_path / "none.json"),
            "--fallback-distances", str(tmp_path / "no_fallback"), *extra]
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
    # The other tasks have full runs but no top3 run, sst2 has no row at all: missing, never filled.
    assert [cell(by_id["3a"], t)["verdict"] for t in claims.CORE_TASKS] == ["holds"] + ["missing"] * 4
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
    assert match["verdict"] == "inconclusive" and match["counts"] == {
        "holds": 1, "fails": 0, "inconclusive": 3, "missing": 8}
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
    assert [cell(c, t)["verdict"] for t in claims.CORE_TASKS] == ["holds", "fails", "holds", "missing", "missing"]
    assert cell(c, "cola")["ratio_full"] == pytest.approx(10.0)
    assert cell(c, "rte")["ratio_full"] == pytest.approx(10.0 / np.std([60.0, 63.0, 58.0], ddof=1))
    assert c["verdict"] == "inconclusive"  # 2 of 5 hold: no majority
    assert "F(0.975; 2, 2) = 39.0" in text


def test_distance_claims_from_stubbed_runs_and_cache(tmp_path, monkeypatch):
    by_id, _, _ = run(tmp_path, monkeypatch)
    close, layers = by_id["1"], by_id["2"]
    assert [cell(close, t)["verdict"] for t in claims.CORE_TASKS] == ["holds", "holds", "inconclusive", "fails", "missing"]
    assert close["verdict"] == "fails"
    assert cell(close, "cola")["rel_l1"]["mean"] == pytest.approx(0.01)
    assert cell(close, "mrpc")["angle_deg"]["mean"] == pytest.approx(30.0)
    assert [cell(layers, t)["verdict"] for t in claims.CORE_TASKS] == ["holds", "fails", "holds", "holds", "missing"]
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
    out = claims.compute_run_distances(tmp_path)
    assert calls and out["step"] == 7
    groups = out["groups"]
    total = sum(np.abs(ft[k] - pre[k]).sum() for k in pre) / sum(np.abs(pre[k]).sum() for k in pre)
    assert groups["layer_0"]["rel_l1"] == pytest.approx(0.01, rel=1e-4)
    assert groups["layer_1"]["rel_l1"] == pytest.approx(0.03, rel=1e-4)
    assert groups["total"]["rel_l1"] == pytest.approx(total, rel=1e-4)
    ratio, most = claims.layer_spread(groups)
    assert ratio == pytest.approx(3.0, rel=1e-3) and most == "layer_1"


def test_missing_tables_and_fallback(tmp_path, monkeypatch):
    fallback = tmp_path / "fallback" / "cola"
    fallback.mkdir(parents=True)
    (fallback / "distances.json").write_text(json.dumps({"groups": layer_groups([0.02, 0.021])}))
    grids = tmp_path / "grids"
    grids.mkdir()
    monkeypatch.setattr(claims, "compute_run_distances", fake_distances)
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
    monkeypatch.setattr(claims, "compute_run_distances", fake_distances)
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
