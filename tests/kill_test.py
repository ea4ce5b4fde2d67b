"""Runs killed with SIGKILL (at a random moment of training, or while a checkpoint is being
written) and restarted in the same workdir finish with the parameters, optimizer state and
metrics of an uninterrupted run, bit for bit. Subprocesses on the `tiny` config, 2 CPU devices."""

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl.testing import absltest

from fft import checkpoint, tree_paths

REPO = pathlib.Path(__file__).resolve().parent.parent
STEPS = 12  # The tiny config saves every 3 steps, keeping 2.
ARGS = ["--config=configs/glue.py:task=rte,tiny", f"--config.num_train_steps={STEPS}", "--compilation_cache_dir="]
SEED = 20240611

# Runs fft.main as `python -m fft.main` does, but SIGKILLs itself as soon as fft.checkpoint.save
# returns for step argv[1]: orbax is then still writing that step in the background.
KILL_DURING_SAVE = """
import os, runpy, signal, sys
from fft import checkpoint
kill_at, real_save = int(sys.argv[1]), checkpoint.save
def save(manager, step, state, **kwargs):
    saved = real_save(manager, step, state, **kwargs)
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return saved
checkpoint.save = save
sys.argv = ["fft.main", *sys.argv[2:]]
runpy.run_module("fft.main", run_name="__main__", alter_sys=True)
"""


def env() -> dict[str, str]:
    return dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
        HF_HUB_OFFLINE="1", FFT_MALLOC_TUNING="0",
    )


def start(workdir: pathlib.Path, *prefix: str) -> subprocess.Popen:
    """Starts a run (`python -m fft.main` unless `prefix` says otherwise), its output in a log."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *(prefix or ["-m", "fft.main"]), *ARGS, f"--workdir={workdir}"]
    n = len(list(workdir.parent.glob(f"{workdir.name}.*.log")))
    with open(workdir.parent / f"{workdir.name}.{n}.log", "w") as log:
        return subprocess.Popen(command, cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT)


def log_of(workdir: pathlib.Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(workdir.parent.glob(f"{workdir.name}.*.log")))


def wait_for_first_checkpoint(workdir: pathlib.Path, proc: subprocess.Popen) -> float:
    """Seconds until `<workdir>/checkpoints/3` exists (training is under way)."""
    t0 = time.perf_counter()
    while not (workdir / "checkpoints" / "3").is_dir():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before its first checkpoint:\n{log_of(workdir)}")
        time.sleep(0.01)
    return time.perf_counter() - t0


def final_state(workdir: pathlib.Path) -> dict[str, np.ndarray]:
    state, step = checkpoint.load_state_dict(workdir)
    assert step == STEPS, step
    return {tree_paths.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}


class KillTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = pathlib.Path(tempfile.mkdtemp(prefix="kill_test_"))
        cls.reference = cls.root / "reference"
        proc = start(cls.reference)
        wait_for_first_checkpoint(cls.reference, proc)
        t_first = time.perf_counter()
        assert proc.wait(timeout=600) == 0, log_of(cls.reference)
        cls.training_seconds = time.perf_counter() - t_first  # From step 3 to the end.
        cls.expected_state = final_state(cls.reference)
        cls.expected_metrics = json.loads((cls.reference / "final_metrics.json").read_text())

    def restart_and_compare(self, workdir: pathlib.Path) -> None:
        proc = start(workdir)
        self.assertEqual(proc.wait(timeout=600), 0, log_of(workdir))
        restart_log = (workdir.parent / f"{workdir.name}.1.log").read_text()  # After the killed .0.
        self.assertNotIn("Traceback", restart_log)
        self.assertNotIn("damaged", restart_log)  # A kill leaves no damaged step.
        self.assertFalse((workdir / checkpoint.DAMAGED).exists())
        state = final_state(workdir)
        self.assertEqual(sorted(state), sorted(self.expected_state))
        for path, value in self.expected_state.items():
            self.assertEqual(state[path].dtype, value.dtype, path)
            self.assertEqual(state[path].tobytes(), value.tobytes(), path)  # Bit for bit.
        metrics = json.loads((workdir / "final_metrics.json").read_text())
        self.assertEqual(metrics["eval"], self.expected_metrics["eval"])
        self.assertEqual(metrics["last_train_loss"], self.expected_metrics["last_train_loss"])
        self.assertEqual(metrics["steps"], STEPS)
        self.assertIsNotNone(metrics["resumed_from_step"])

    def test_killed_at_a_random_moment_then_restarted(self):
        # The moment is a seeded random delay after the first checkpoint. A loaded machine can
        # run faster than the reference did and finish first: then the delay halves and the run
        # starts over in a fresh workdir (at most 4 tries).
        rng = random.Random(SEED)
        for attempt in range(4):
            workdir = self.root / f"random_kill_{attempt}"
            delay = rng.uniform(0.0, 0.6 * self.training_seconds) / 2**attempt
            proc = start(workdir)
            wait_for_first_checkpoint(workdir, proc)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            killed = proc.wait(timeout=60) == -signal.SIGKILL
            steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
            if killed and STEPS not in steps:
                break
        else:
            self.fail(f"the run finished before the kill in 4 tries (last delay {delay:.2f}s):\n{log_of(workdir)}")
        self.restart_and_compare(workdir)

    def test_killed_while_writing_a_checkpoint_then_restarted(self):
        workdir = self.root / "kill_during_save"
        kill_at = random.Random(SEED).choice([6, 9, 12])
        proc = start(workdir, "-c", KILL_DURING_SAVE, str(kill_at))
        self.assertEqual(proc.wait(timeout=600), -signal.SIGKILL, log_of(workdir))
        # The kill landed before orbax committed the step: only its temporary folder is there.
        self.assertFalse((workdir / "checkpoints" / str(kill_at)).exists())
        self.assertNotEqual(list((workdir / "checkpoints").glob(f"{kill_at}.orbax-checkpoint-tmp*")), [])
        self.restart_and_compare(workdir)
        self.assertEqual(json.loads((workdir / "final_metrics.json").read_text())["resumed_from_step"], kill_at - 3)


    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()


if __name__ == "__main__":
    absltest.main()
