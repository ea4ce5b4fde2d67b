"""Multi-host training as the launch script runs it: two local processes joined by
`jax.distributed` (CPU collectives over gloo, a free port on 127.0.0.1), one CPU device each, finish
with the same parameters and metrics, bit for bit, as one process with two devices; and the
two-process checkpoint restores in this single process (fft.checkpoint.load_state_dict)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
from absl.testing import absltest

from fft import checkpoint, tree_paths

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = "configs/glue.py:task=rte,tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(devices: int, **extra) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        HF_HUB_OFFLINE="1", FFT_MALLOC_TUNING="0",
        PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    )
    return out


def launch(workdir: pathlib.Path, environ: dict[str, str], *overrides: str) -> subprocess.Popen:
    """`launch/gpu.sh CONFIG WORKDIR` (its documented multi-host form when JAX_* are set)."""
    name = f"{workdir.name}_{environ.get('JAX_PROCESS_ID', 'single')}.log"
    with open(workdir.parent / name, "w") as log:  # The child keeps its own descriptor.
        return subprocess.Popen(
            ["bash", "launch/gpu.sh", CONFIG, str(workdir), "--compilation_cache_dir=", *overrides],
            cwd=REPO, env=environ, stdout=log, stderr=subprocess.STDOUT,
        )


class MultiHostTest(absltest.TestCase):
    def test_two_processes_match_one_process_with_two_devices(self):
        root = pathlib.Path(self.create_tempdir().full_path)
        port = free_port()
        procs = [
            launch(root / "two", env(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                     JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
            for i in range(2)
        ]
        codes = [p.wait(timeout=600) for p in procs]
        single = launch(root / "one", env(2))
        codes.append(single.wait(timeout=600))
        logs = {p.name: p.read_text()[-3000:] for p in root.glob("*.log")}
        self.assertEqual(codes, [0, 0, 0], logs)
        two = json.loads((root / "two" / "final_metrics.json").read_text())
        one = json.loads((root / "one" / "final_metrics.json").read_text())
        self.assertEqual((two["devices"], one["devices"]), (2, 2))
        self.assertEqual(two["eval"], one["eval"])
        self.assertEqual(two["last_train_loss"], one["last_train_loss"])
        # The checkpoint written by two processes restores here, in one process with 8 devices.
        state_two, step = checkpoint.load_state_dict(root / "two")
        state_one, _ = checkpoint.load_state_dict(root / "one")
        self.assertEqual(step, two["steps"])
        a, b = tree_paths.flatten(state_two["params"]), tree_paths.flatten(state_one["params"])
        self.assertEqual(sorted(a), sorted(b))
        for path in a:
            np.testing.assert_array_equal(a[path], b[path], err_msg=path)

    def test_two_processes_stop_at_one_step_under_a_time_budget(self):
        """Each process times its own steps and clock; fft.budget broadcasts process 0's step time
        and its stop decision. Were they decided apart, the processes would plan or stop at
        different steps and the next collective would hang (the wait below would time out)."""
        root = pathlib.Path(self.create_tempdir().full_path)
        port = free_port()
        # Measured step time; the 3 s budget planned from it, and the clock stops the run.
        overrides = ("--config.num_train_steps=0", "--config.time_budget_s=3", "--config.eval_every_s=1",
                     "--config.eval_every_steps=100000", "--config.checkpoint.every_steps=100000")
        procs = [
            launch(root / "budget", env(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                        JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)), *overrides)
            for i in range(2)
        ]
        codes = [p.wait(timeout=600) for p in procs]
        logs = {p.name: p.read_text()[-3000:] for p in root.glob("*.log")}
        self.assertEqual(codes, [0, 0], logs)
        final = json.loads((root / "budget" / "final_metrics.json").read_text())
        plan = json.loads((root / "budget" / "time_budget.json").read_text())
        self.assertEqual(plan["source"], "measured")
        self.assertEqual(final["time_budget"]["num_steps"], plan["num_steps"])
        _, step = checkpoint.load_state_dict(root / "budget")  # Saved by both at the same step.
        self.assertEqual(step, final["steps"])
        if final["stopped_by_budget"]:
            self.assertEqual(plan["stopped_at_step"], final["steps"])
        else:
            self.assertEqual(final["steps"], plan["num_steps"])
        curve = json.loads((root / "budget" / "curve.json").read_text())["points"]
        self.assertEqual(curve[-1]["step"], final["steps"])


if __name__ == "__main__":
    absltest.main()
