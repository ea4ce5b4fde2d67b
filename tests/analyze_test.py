"""Tests for fft.analyze: the distance report CLI on two small BERT-shaped .npz trees."""

import csv
import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from safetensors.flax import save_file

from fft import analyze, distances

SHAPES = analyze.bert_shapes(num_layers=3, hidden=8, intermediate=16, vocab=32, max_positions=16)


def strict_json(path):
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(pathlib.Path(path).read_text(), parse_constant=reject)


class AnalyzeTest(absltest.TestCase):
    def test_cli_writes_csv_json_png(self):
        tmp = pathlib.Path(self.create_tempdir().full_path)
        pre, ft = analyze.synthetic_pair(SHAPES, seed=1)
        np.savez(tmp / "pre.npz", **pre)
        np.savez(tmp / "ft.npz", **ft)
        out = tmp / "report"
        argv = ["--pretrained", str(tmp / "pre.npz"), "--finetuned", str(tmp / "ft.npz")]
        self.assertEqual(analyze.main([*argv, "--out_dir", str(out), "--top_k", "2"]), 0)

        with open(out / "distances.csv") as f:
            rows = list(csv.DictReader(f))
        groups = ["embeddings", "layer_0", "layer_1", "layer_2", "pooler", "head", "total"]
        self.assertEqual([r["group"] for r in rows], groups)
        self.assertContainsSubset(["rel_l1", "angle", "angle_deg", "frac_changed"], rows[0])
        want = distances.grouped(pre, ft)["layer_1"]["rel_l1"]
        self.assertAlmostEqual(float(rows[2]["rel_l1"]), float(want), places=6)

        report = strict_json(out / "distances.json")
        self.assertContainsSubset(["groups", "sublayers", "leaves", "total", "ranking"], report)
        self.assertEqual(list(report["groups"]), groups)
        self.assertIn("layer_2/attention", report["sublayers"])
        self.assertLen(report["leaves"], len(SHAPES) + 1)
        # The synthetic fine-tuning noise grows with depth, so the last layers moved most.
        self.assertEqual(report["critical_layers"], ["layer_2", "layer_1"])
        self.assertEqual([r["rank"] for r in report["ranking"]], [1, 2, 3])

        png = (out / "layers.png").read_bytes()
        self.assertTrue(png.startswith(b"\x89PNG"))
        self.assertGreater(len(png), 10_000)

    def test_load_params(self):
        tmp = pathlib.Path(self.create_tempdir().full_path)
        tree = {"encoder/layer_0/output/dense/bias": jnp.arange(3, dtype=jnp.bfloat16)}
        save_file(tree, str(tmp / "p.safetensors"))
        loaded = analyze.load_params(tmp / "p.safetensors")
        self.assertEqual(loaded["encoder/layer_0/output/dense/bias"].dtype, jnp.bfloat16)
        with self.assertRaisesRegex(FileNotFoundError, "config.json"):
            analyze.load_params(tmp)  # A directory that is not a run's workdir.
        with self.assertRaisesRegex(FileNotFoundError, "missing.npz"):
            analyze.load_params(tmp / "missing.npz")
        (tmp / "p.msgpack").write_bytes(b"")
        with self.assertRaisesRegex(ValueError, "npz"):
            analyze.load_params(tmp / "p.msgpack")

    def test_rows_table_and_plot_with_infinite_values(self):
        pre = {"embeddings/e": np.ones(2, np.float32), "classifier/bias": np.zeros(2, np.float32)}
        ft = {
            "embeddings/e": np.full(2, 2.0, np.float32),
            "classifier/bias": np.ones(2, np.float32),
        }
        grouped = distances.grouped(pre, ft)
        rows = analyze.distance_table_rows(grouped)
        self.assertEqual(rows[1]["group"], "head")
        self.assertEqual(rows[1]["rel_l1"], math.inf)  # zero-initialised pretrained head bias
        self.assertAlmostEqual(rows[1]["angle_deg"], 90.0, places=5)
        lines = analyze.format_table(rows).splitlines()
        self.assertLen(lines, 4)
        self.assertLen({len(line) for line in lines}, 1)
        path = pathlib.Path(self.create_tempdir().full_path) / "fig.png"
        analyze.plot_layers(grouped, path, "title", groups=["embeddings", "head"])
        self.assertTrue(path.read_bytes().startswith(b"\x89PNG"))


if __name__ == "__main__":
    absltest.main()
