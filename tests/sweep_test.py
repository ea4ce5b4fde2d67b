"""fft.sweep: grid files, points and paths, runs (resumable, locked, N at a time) and tables.

One class-level sweep runs a tiny grid (full and LoRA x 2 seeds, plus an entry whose runs fail)
two at a time; the tests that change workdirs work on copies of it.
"""

import contextlib
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl.testing import absltest, parameterized

from fft import cli, errors, sweep

REPO = pathlib.Path(__file__).resolve().parent.parent
QUICK = {"num_train_steps": 2, "eval_every_steps": 0, "track_distances": False,
         "checkpoint": {"every_steps": 1}, "data": {"max_train_examples": 32, "max_eval_examples": 16}}
GOOD = ["full", {"method": "lora", "options": {"rank": [2]}}]
BROKEN = {"method": "bitfit", "label": "broken", "overrides": {"data.dir": "/nonexistent/glue"}}
MINI = {"name": "mini", "base": "tiny", "tasks": ["rte"], "methods": [*GOOD, BROKEN], "lrs": [1e-3],
        "seeds": [0, 1], "overrides": QUICK}


def write_grid(folder, stem="mini", **fields) -> str:
    path = pathlib.Path(folder) / f"{stem}.py"
    path.write_text(f"def get_config():\n    return {fields!r}\n")
    return str(path)


def run_sweep(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with mock.patch.dict(os.environ):
        os.environ.pop("XLA_FLAGS", None)  # Runs on one CPU device: tests' 8 would double the time.
        rc = sweep.main([str(a) for a in argv], out=out)
    return rc, out.getvalue()


class PointsTest(parameterized.TestCase):
    def test_tiny_grid_points_paths_and_order(self):
        grid = sweep.load_grid("tiny")
        points = sweep.expand(grid)
        self.assertLen(points, 8)
        self.assertEqual(
            [p.rel for p in points[:4]],
            ["rte/full/lr1e-3/frac1/seed0", "rte/lora-rank4/lr5e-3/frac1/seed0",
             "stsb/full/lr1e-3/frac1/seed0", "stsb/lora-rank4/lr5e-3/frac1/seed0"],
        )
        self.assertEqual({p.seed for p in points[4:]}, {1})  # Seed 0 of every cell first.
        lora = points[1]
        self.assertEqual(lora.options, {"rank": 4})
        self.assertEqual(lora.split, "validation")
        argv = lora.argv("W")
        self.assertEqual(argv[:2], ["--config=configs/glue.py:task=rte,method=lora,tiny", "--workdir=W"])
        for flag in ("--config.lora.rank=4", "--config.optim.lr=0.005", "--config.seed=0",
                     "--config.data.train_fraction=1.0", "--config.data.validation_fraction=0.1",
                     "--config.checkpoint.every_steps=2"):
            self.assertIn(flag, argv)
        self.assertIn("--config.data.max_eval_examples=32", points[2].argv("W"))  # task_overrides

    def test_issue15_grids(self):
        """pooling and lr_selection stand alone; core and data_fraction read the chosen settings
        (here a stand-in selection.json) and need it to exist."""
        from configs.grids import selected

        self.assertLen(sweep.expand(sweep.load_grid("pooling")), 30)
        selection = sweep.expand(sweep.load_grid("lr_selection"))
        self.assertLen(selection, 86)
        self.assertTrue(all(p.fields["data.validation_fraction"] == 0.1 for p in selection))
        missing = pathlib.Path(self.create_tempdir().full_path) / "selection.json"
        with (mock.patch.object(selected, "SELECTION", missing),
              self.assertRaisesRegex(sweep.GridError, "selection.json is missing")):
            sweep.load_grid("core")
        names = ["full", "bitfit", "layers", "supermask", "lora", "adapters", "head", "learners"]
        chosen = {m: {"setting": m, "lr": 1e-4, "options": {}} for m in names}
        chosen["layers"]["options"] = {"select": "top3"}
        missing.write_text(json.dumps({"methods": chosen}))
        with mock.patch.object(selected, "SELECTION", missing):
            core = sweep.expand(sweep.load_grid("core"))
            fractions = sweep.expand(sweep.load_grid("data_fraction"))
        self.assertLen(core, 150)
        core_table = pathlib.Path(self.create_tempdir().full_path) / "core.json"
        core_table.write_text(json.dumps({"rows": [{"task": t, "setting": "full", "train_seconds": 300.0}
                                                   for t in ("mrpc", "cola", "stsb")]}))
        with mock.patch.object(selected, "SELECTION", missing), mock.patch.object(selected, "CORE_TABLE", core_table):
            budgets = sweep.expand(sweep.load_grid("time_budget"))
        self.assertLen(budgets, 180)
        self.assertEqual([p.fields["time_budget_s"] for p in budgets[:3]], [33.3] * 3)  # 1/3 of 100 s first.
        self.assertEqual(budgets[0].setting, "full-b1_3ep")
        with mock.patch.object(selected, "SELECTION", missing):
            ablation = sweep.expand(sweep.load_grid("learners_ablation"))
        self.assertLen(ablation, 24)
        self.assertEqual({(p.options["priming"], p.options["select"]) for p in ablation},
                         {(0.2, "magnitude"), (0.2, "random"), (0.0, "magnitude"), (0.0, "random")})
        self.assertLen(fractions, 135)
        critical = next(p for p in core if p.setting == "critical2" and p.task == "sst2")
        self.assertEqual(critical.options["distances_file"], "runs/sweeps/core/sst2/full/lr1e-4/frac0.2/seed0")
        # Method by method, full fine-tuning first, each with its 3 seeds on every task; CoLA's
        # full and learners runs evaluate every 15 s (claim 8c), the rest every 60 s.
        self.assertEqual({p.setting for p in core[:15]}, {"full"})
        self.assertLen({(p.task, p.seed) for p in core[:15]}, 15)
        self.assertEqual(core[15].setting, "bitfit")
        every = {(p.task, p.setting): p.fields["eval_every_s"] for p in core}
        self.assertEqual({k for k, v in every.items() if v == 15.0}, {("cola", "full"), ("cola", "learners")})
        self.assertEqual(set(every.values()), {15.0, 60.0})

    def test_full_epoch_seconds_takes_the_fastest_full_run(self):
        """A time budget's epoch is the fastest core full run / 3 (the least disturbed timing);
        without run folders, the table's mean / 3."""
        from configs.grids import selected

        repo = pathlib.Path(self.create_tempdir().full_path)
        workdirs = [f"runs/sweeps/core/mrpc/full/lr1e-4/frac1/seed{s}" for s in range(3)]
        for workdir, seconds in zip(workdirs, (330.0, 270.0, 300.0)):
            (repo / workdir).mkdir(parents=True)
            (repo / workdir / "final_metrics.json").write_text(json.dumps({"train_seconds": seconds}))
        table = repo / "core.json"
        table.write_text(json.dumps({"rows": [
            {"task": "mrpc", "setting": "full", "train_seconds": 300.0, "workdirs": workdirs},
            {"task": "cola", "setting": "full", "train_seconds": 240.0, "workdirs": ["runs/gone"]}]}))
        with mock.patch.object(selected, "REPO", repo), mock.patch.object(selected, "CORE_TABLE", table):
            self.assertEqual(selected.full_epoch_seconds("mrpc"), 90.0)
            self.assertEqual(selected.full_epoch_seconds("cola"), 80.0)
            with self.assertRaisesRegex(ValueError, "no finished full fine-tuning run of stsb"):
                selected.full_epoch_seconds("stsb")

    def test_shipped_grids(self):
        partition = sweep.expand(sweep.load_grid("partition"))
        self.assertLen(partition, 41)
        self.assertLen({p.rel for p in partition}, 41)
        sst2 = [p for p in partition if p.task == "sst2"]
        self.assertTrue(all(p.fraction == 0.2 and p.fields["num_epochs"] == 1.0 for p in sst2))
        self.assertEqual(sst2[0].rel, "sst2/full/lr5e-5/frac0.2/seed0")
        cache = {p.task: p.fields.get("feature_cache", False) for p in partition if p.setting == "critical2"}
        self.assertEqual(cache, {"cola": False, "stsb": True, "rte": True, "sst2": False})
        critical = next(p for p in partition if p.setting == "critical2" and p.task == "rte")
        self.assertEqual(critical.options["distances_file"], "results/distances/rte/distances.json")
        fractions = sorted(p.fraction for p in partition if p.task == "cola" and p.method == "bitfit")
        self.assertEqual(fractions, [0.1, 0.3, 0.5, 1.0])
        supermask = sweep.expand(sweep.load_grid("supermask"))
        self.assertLen(supermask, 25)
        last = supermask[-1]
        self.assertEqual(last.rel, "rte/s0.1-magnitude-score1e-3-pooler-ep8/lr1e-3/frac1/seed0")
        self.assertEqual(last.fields["num_epochs"], 8.0)
        self.assertEqual(last.fields["supermask.head_keys"], "pooler;classifier")

    @parameterized.parameters((5e-4, "5e-4"), (1e-3, "1e-3"), (0.1, "0.1"), (1.0, "1"), (0.05, "0.05"),
                              (2, "2"), (True, "true"), ("pooler;classifier", "pooler+classifier"),
                              ("a/b c", "a_b_c"))
    def test_path_value(self, value, text):
        self.assertEqual(sweep.path_value(value), text)

    def test_label_names_only_crossed_options(self):
        folder = self.create_tempdir().full_path
        methods = [{"method": "lora", "label": "qv", "options": {"rank": [2, 4], "alpha": 8.0}},
                   {"method": "lora", "options": {"rank": [2], "alpha": [4.0, 8.0]}}]
        path = write_grid(folder, name="g", base="tiny", tasks=["rte"], methods=methods, lrs=[1e-3])
        rels = [p.rel.split("/")[1] for p in sweep.expand(sweep.load_grid(path))]
        self.assertEqual(rels, ["qv-rank2", "qv-rank4", "lora-rank2-alpha4", "lora-rank2-alpha8"])

    def test_last_error_line_of_a_log(self):
        log = pathlib.Path(self.create_tempdir().full_path) / "log.txt"
        log.write_text("step 1\nfft: error: config.x: bad\n  hint: fix it\n")
        self.assertEqual(sweep.last_error(log), "fft: error: config.x: bad")
        log.write_text("Traceback (most recent call last):\n  File x\nValueError: boom\n")
        self.assertEqual(sweep.last_error(log), "ValueError: boom")
        log.write_text("Killed\n")
        self.assertEqual(sweep.last_error(log), "Killed")

    def test_dry_run_lists_commands_and_starts_nothing(self):
        root = self.create_tempdir().full_path
        rc, out = run_sweep("tiny", "--dry-run", "--root", root)
        self.assertEqual(rc, 0)
        self.assertIn("8 runs, 0 finished, 8 to run", out)
        commands = [line for line in out.splitlines() if "python -m fft.main" in line]
        self.assertLen(commands, 8)
        self.assertIn("--config=configs/glue.py:task=stsb,method=lora,tiny", commands[3])
        self.assertIn(f"--workdir={root}/tiny/stsb/lora-rank4/lr5e-3/frac1/seed0", commands[3])
        self.assertEqual(os.listdir(root), [])


BAD = [
    ("tasks", {"tasks": ["rtee"]}, r"unknown task 'rtee'; valid: cola"),
    ("method", {"methods": ["loraa"]}, r"methods\[0\]: unknown method 'loraa'; valid: full"),
    ("option", {"methods": [{"method": "lora", "options": {"rnk": [4]}}]},
     r"method lora has no option 'rnk' \(did you mean rank\?\)"),
    ("field", {"overrides": {"data": {"validaton_fraction": 0.1}}},
     r"overrides: the config has no field data.validaton_fraction \(did you mean data.validation_fraction\?\)"),
    ("task field", {"task_overrides": {"rte": {"num_epoch": 1}}},
     r"task_overrides\['rte'\]: the config has no field num_epoch"),
    ("entry field", {"methods": [{"method": "full", "overrides": {"feature_cach": True}}]},
     r"methods\[0\] \(full\) overrides: the config has no field feature_cach"),
    ("type", {"overrides": {"num_train_steps": "two"}}, r"num_train_steps='two'"),
    ("range", {"overrides": {"data.validation_fraction": 0.7}}, r"data.validation_fraction=0.7: must be in"),
    ("axis", {"overrides": {"optim.lr": 0.1}}, r"optim.lr is an axis of the grid; list its values in `lrs`"),
    ("method option", {"overrides": {"lora.rank": 2}}, r"lora.rank is a method option"),
    ("lrs key", {"lrs": {"lroa": [1e-3]}}, r"lrs\['lroa'\]: no method entry has that label or method"),
    ("empty", {"seeds": []}, r"the grid has no points"),
    ("no tasks", {"tasks": []}, r"the grid has no points"),
    ("grid field", {"seed": [0]}, r"unknown grid field\(s\) \['seed'\]"),
    ("base", {"base": "tiny,task=cola"}, r"task and method come from"),
    ("base arg", {"base": "tiny,modle=x"}, r"Unknown config argument 'modle'"),
    ("collision", {"methods": [{"method": "full", "label": "x"},
                               {"method": "full", "label": "x", "overrides": {"num_epochs": 2.0}}]},
     r"two points share the workdir rte/x/lr1e-3/frac1/seed0 with different settings"),
]


class BadInputTest(parameterized.TestCase):
    @parameterized.named_parameters(*[(name.replace(" ", "_"), fields, message) for name, fields, message in BAD])
    def test_bad_grid_is_one_line_before_any_run(self, fields, message):
        folder = self.create_tempdir().full_path
        path = write_grid(folder, **{**MINI, "methods": GOOD, **fields})
        root = pathlib.Path(folder) / "root"
        with self.assertRaisesRegex(sweep.GridError, message) as caught:
            run_sweep(path, "--root", root)
        self.assertIsInstance(caught.exception, errors.FftError)
        self.assertNotIn("\n", errors.report(caught.exception).split("\n  hint:")[0])
        self.assertFalse(root.exists())

    def test_missing_file_and_no_get_config(self):
        folder = pathlib.Path(self.create_tempdir().full_path)
        with self.assertRaisesRegex(sweep.GridError, r"grid .*nothere.py: no such file"):
            run_sweep(folder / "nothere.py")
        (folder / "empty.py").write_text("GRID = {}\n")
        with self.assertRaisesRegex(sweep.GridError, r"empty.py: has no get_config\(\)"):
            run_sweep(folder / "empty.py")
        (folder / "broken.py").write_text("def get_config(:\n")
        with self.assertRaisesRegex(sweep.GridError, r"broken.py: cannot load it \(SyntaxError"):
            run_sweep(folder / "broken.py")

    def test_fft_sweep_command(self):
        self.assertIs(cli.COMMANDS["sweep"], cli.sweep)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            self.assertEqual(cli.run(["sweep", "no_such_grid"]), errors.EXIT_STATUS)
        self.assertRegex(stderr.getvalue(), r"^fft: error: grid no_such_grid: no such file\n  hint: grids here: ")
        proc = subprocess.run([sys.executable, "-m", "fft.sweep", "tiny", "--dry-run", "--root", "/nonexistent/x"],
                              cwd=REPO, capture_output=True, text=True, check=False)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("8 to run (dry run", proc.stdout)


class RunTest(parameterized.TestCase):
    """One real sweep, shared: 2 good points x 2 seeds and 2 failing runs, two at a time."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="sweep_test_"))
        cls.grid = write_grid(cls.tmp, **MINI)
        (cls.tmp / "good").mkdir()
        cls.good = write_grid(cls.tmp / "good", **{**MINI, "methods": GOOD})  # Same grid, no failing runs.
        cls.root = cls.tmp / "root"
        cls.results = cls.tmp / "results"
        cls.rc, cls.out = run_sweep(cls.grid, "--jobs", 2, "--root", cls.root, "--results", cls.results)
        cls.dir = cls.root / "mini"

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def copy_root(self) -> pathlib.Path:
        root = pathlib.Path(self.create_tempdir().full_path) / "root"
        shutil.copytree(self.root, root)
        return root

    def test_runs_two_at_a_time_and_reports_failures(self):
        self.assertEqual(self.rc, 1, self.out)  # The broken entry's runs failed.
        self.assertIn("6 to run, 2 at a time", self.out)
        self.assertRegex(self.out, r"start .* \| \d done, 2 running")
        failed = [line for line in self.out.splitlines() if "FAILED rte/broken" in line]
        self.assertLen(failed, 2)
        self.assertRegex(failed[0], r"\(exit 2\): fft: error: .*nonexistent.* \(log: .*log.txt\)")
        self.assertRegex(self.out, r"ended: 4 done, 0 running, 0 left, 2 failed; elapsed \S+, ETA 0m00s")
        for seed in (0, 1):
            workdir = self.dir / f"rte/lora-rank2/lr1e-3/frac1/seed{seed}"
            self.assertTrue((workdir / "final_metrics.json").is_file())
            point = json.loads((workdir / "sweep_point.json").read_text())
            self.assertEqual(point["point"]["seed"], seed)
            self.assertEqual(point["settings"]["config"], "configs/glue.py:task=rte,method=lora,tiny")
            self.assertIn("step 2/2", (workdir / "log.txt").read_text())

    def test_tables(self):
        for folder, stem in ((self.dir, "table"), (self.results, "mini")):
            for ext in ("csv", "json", "md"):
                self.assertTrue((folder / f"{stem}.{ext}").is_file(), f"{folder}/{stem}.{ext}")
        rows = json.loads((self.results / "mini.json").read_text())["rows"]
        self.assertEqual([r["setting"] for r in rows], ["full", "lora-rank2", "broken"])
        full = rows[0]
        scores = [100 * json.loads((self.dir / f"rte/full/lr1e-3/frac1/seed{s}/final_metrics.json").read_text())
                  ["eval"]["dev"]["accuracy"] for s in (0, 1)]
        self.assertAlmostEqual(full["mean"], sum(scores) / 2, places=2)
        self.assertAlmostEqual(full["sd"], abs(scores[0] - scores[1]) / 2 ** 0.5, places=2)
        self.assertEqual((full["n"], full["planned"], full["seeds"]), (2, 2, [0, 1]))
        self.assertEqual((full["metric"], full["split"]), ("accuracy", "dev"))
        self.assertEqual(set(full["eval"]["dev"]), {"accuracy", "combined", "loss"})
        self.assertLen(full["eval"]["dev"]["loss"]["values"], 2)
        self.assertGreater(full["trainable_params"], rows[1]["trainable_params"])
        self.assertLen(full["workdirs"], 2)
        walls = [json.loads((self.dir / f"rte/full/lr1e-3/frac1/seed{s}/final_metrics.json").read_text())
                 ["wall_seconds"] for s in (0, 1)]
        self.assertAlmostEqual(full["wall_seconds"], sum(walls), places=0)  # The runs' wall time together.
        self.assertLen(full["cpu_shares"], 2)
        self.assertEqual(rows[2]["n"], 0)  # Failed runs: the cell is missing, not filled.
        self.assertIsNone(rows[2]["mean"])
        md = (self.dir / "table.md").read_text()
        self.assertIn("## rte: accuracy on dev (%)", md)
        self.assertRegex(md, r"\| full \| 1e-3 \| 1 \| \d+\.\d\d ± \d+\.\d\d \| 2/2 \| [\d,]+ \| [\d,]+ \| [\d.]+ \| "
                             r"rte/full/lr1e-3/frac1/seed0, seed1 \|")
        self.assertIn("| broken | 1e-3 | 1 | missing | 0/2 | — | — | — | — |", md)
        csv_text = (self.results / "mini.csv").read_text()
        self.assertTrue(csv_text.startswith("task,setting,method,options,lr,fraction,split,metric,mean,sd,n"))

    def test_rerun_skips_finished_runs(self):
        root = self.copy_root()
        logs = {p: p.stat().st_size for p in root.rglob("log.txt")}
        rc, out = run_sweep(self.good, "--root", root, "--results", root / "results")
        self.assertEqual(rc, 0, out)
        self.assertIn("4 runs, 4 finished before, 0 to run", out)
        self.assertNotIn("start", out)
        self.assertEqual({p: p.stat().st_size for p in root.rglob("log.txt")}, logs)

    def test_interrupted_run_is_resumed(self):
        root = self.copy_root()
        workdir = root / "mini/rte/full/lr1e-3/frac1/seed1"
        # As if killed after the checkpoint of step 1: no step 2, no final metrics.
        (workdir / "final_metrics.json").unlink()
        shutil.rmtree(workdir / "checkpoints" / "2")
        (workdir / "checkpoint_fingerprints" / "2.json").unlink(missing_ok=True)
        rc, out = run_sweep(self.good, "--root", root, "--results", root / "results")
        self.assertEqual(rc, 0, out)
        self.assertIn("3 finished before, 1 to run", out)
        self.assertIn("start rte/full/lr1e-3/frac1/seed1", out)
        final = json.loads((workdir / "final_metrics.json").read_text())
        self.assertEqual((final["resumed_from_step"], final["steps"]), (1, 2))

    def test_locked_workdir_is_skipped(self):
        root = self.copy_root()
        workdir = root / "mini/rte/lora-rank2/lr1e-3/frac1/seed0"
        (workdir / "final_metrics.json").unlink()
        hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                "print('locked', flush=True); time.sleep(120)")
        holder = subprocess.Popen(  # Another process (another sweep's run) holds the lock.
            [sys.executable, "-c", hold, str(workdir / ".sweep.lock")], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(holder.stdout.readline().strip(), "locked")
            rc, out = run_sweep(self.good, "--root", root, "--results", root / "results")
        finally:
            holder.kill()
            holder.wait()
        self.assertEqual(rc, 0, out)
        self.assertIn("skip  rte/lora-rank2/lr1e-3/frac1/seed0: running elsewhere", out)
        self.assertNotIn("start", out)
        self.assertFalse((workdir / "final_metrics.json").exists())
        rows = json.loads((root / "results" / "mini.json").read_text())["rows"]
        self.assertEqual((rows[1]["n"], rows[1]["sd"]), (1, None))  # One seed left: no sd.

    def test_workdir_with_another_setting_is_an_error_before_any_run(self):
        root = self.copy_root()
        (root / "mini/rte/full/lr1e-3/frac1/seed1/final_metrics.json").unlink()  # One to run.
        other = write_grid(self.create_tempdir().full_path,
                           **{**MINI, "methods": GOOD, "overrides": {**QUICK, "num_train_steps": 3}})
        logs = {p: p.stat().st_size for p in root.rglob("log.txt")}
        with self.assertRaisesRegex(sweep.GridError, r"seed0: already holds a different setting "
                                                     r"\(num_train_steps: 2 -> 3\)"):
            run_sweep(other, "--root", root)
        self.assertEqual({p: p.stat().st_size for p in root.rglob("log.txt")}, logs)
        # A workdir with files that no sweep made is refused too.
        (root / "mini/rte/full/lr1e-3/frac1/seed0/sweep_point.json").unlink()
        with self.assertRaisesRegex(sweep.GridError, r"seed0: holds files but no sweep_point.json"):
            run_sweep(self.good, "--root", root)

    def test_only_table_shows_missing_cells(self):
        root = self.copy_root()
        more = write_grid(self.create_tempdir().full_path, **{
            **MINI, "seeds": [0, 1, 2],
            "methods": ["full", {"method": "lora", "options": {"rank": [2, 4]}}]})
        rc, out = run_sweep(more, "--only-table", "--root", root, "--results", root / "results")
        self.assertEqual(rc, 0, out)
        md = (root / "results" / "mini.md").read_text()
        self.assertRegex(md, r"\| full \| 1e-3 \| 1 \| \S+ ± \S+ \| 2/3 \|")
        self.assertIn("| lora-rank4 | 1e-3 | 1 | missing | 0/3 |", md)
        self.assertFalse((root / "mini/rte/lora-rank4").exists())  # Nothing ran.


if __name__ == "__main__":
    absltest.main()


class SignalTest(absltest.TestCase):
    def test_sigterm_stops_the_sweep_and_its_runs(self):
        """`kill <sweep>` (also when started with nohup, SIGINT ignored) stops the running run,
        which keeps its checkpoint, and the sweep exits 130."""
        tmp = pathlib.Path(self.create_tempdir().full_path)
        grid = write_grid(tmp, **{**MINI, "methods": ["full"], "seeds": [0],
                                  "overrides": {**QUICK, "num_train_steps": 400}})
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        code = "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); from fft import cli; sys.exit(cli.run(sys.argv[1:]))"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "sweep", grid, "--root", str(tmp / "root"), "--results", str(tmp / "res")],
            cwd=sweep.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        workdir = tmp / "root" / "mini" / "rte" / "full" / "lr1e-3" / "frac1" / "seed0"
        for _ in range(600):  # Until the run has written its first checkpoint.
            if list(workdir.glob("checkpoints/[0-9]*")):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 130, out)
        self.assertIn("interrupted", out)
        self.assertFalse((workdir / "final_metrics.json").exists())
        self.assertTrue(list(workdir.glob("checkpoints/[0-9]*")))
        ps = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False)
        self.assertEqual(ps.stdout.strip(), "", "the run is still going")
