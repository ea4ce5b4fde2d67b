"""Checkpoints that survive damage (fft.checkpoint) on a small sharded state, no training.

Each damage a disk can do to the newest step (a truncated, overwritten or bit-flipped data file, a
deleted metadata file, an emptied folder) makes `restore_latest` fall back to the step before,
bit for bit, with one warning, and moves the damaged step aside. A step that reads but was saved
for another state layout is an error naming the first differing leaf, and moves nothing.
"""

import contextlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl.testing import absltest, parameterized
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fft import checkpoint, errors, tree_paths

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ml_collections.ConfigDict({"every_steps": 1, "max_to_keep": 3})


def mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((jax.device_count(),), ("data",))


def state(k: int, mesh: jax.sharding.Mesh) -> dict:
    """A state with float32 (sharded), bfloat16, bool, int8 and int32 leaves; seeded by `k`."""
    rng = np.random.RandomState(k)

    def put(x, spec=None):
        return jax.device_put(x, NamedSharding(mesh, spec or P()))

    return {
        "step": put(np.int32(k)),
        "params": {
            "w": put(rng.randn(64, 48).astype(np.float32), P("data")),
            "emb": put(rng.randn(16, 8).astype(jax.numpy.bfloat16)),
            "mask": put(rng.rand(10) > 0.5),
            "q": put(rng.randint(-128, 127, (4, 4)).astype(np.int8)),
        },
        "opt_state": ({"mu": put(rng.randn(64, 48).astype(np.float32), P("data"))}, {"count": put(np.int32(k))}),
    }


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def same_bits(a, b) -> bool:
    """Equal leaf paths, dtypes, shapes and bytes (a tuple and a list of the same leaves match)."""

    def leaves(tree):
        flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
        return {tree_paths.path_str(p): (np.asarray(x).dtype, np.shape(x), np.asarray(x).tobytes()) for p, x in flat}

    return leaves(a) == leaves(b)


def data_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The largest ocdbt data file of a step: it holds the bytes of the float arrays."""
    files = [p for p in (step_dir / "default").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def raw_restore(step_dir: pathlib.Path, target):
    """Orbax's restore of a step, without fft's fingerprint check."""
    return ocp.StandardCheckpointer().restore(step_dir / "default", abstract(target))


class FingerprintTest(absltest.TestCase):
    def test_any_single_bit_flip_changes_the_fingerprint(self):
        rng = np.random.RandomState(0)
        dtypes = [np.float32, jax.numpy.bfloat16, np.float16, np.int32, np.uint32, np.int8, np.uint8, np.bool_]
        for dtype in dtypes:
            base = (rng.randn(5, 7) * 100).astype(dtype)
            before = checkpoint.fingerprints({"x": base})["x"]
            bits = 1 if dtype == np.bool_ else np.dtype(dtype).itemsize * 8
            for index in (0, 17, 34):  # First, middle, last element.
                for bit in range(bits):
                    flipped = base.copy()
                    if dtype == np.bool_:
                        flipped.flat[index] = not flipped.flat[index]
                    else:
                        words = flipped.view(f"u{np.dtype(dtype).itemsize}")
                        words.flat[index] ^= words.dtype.type(1) << words.dtype.type(bit)
                    after = checkpoint.fingerprints({"x": flipped})["x"]
                    self.assertNotEqual(after, before, f"{np.dtype(dtype).name} element {index} bit {bit}")

    def test_equal_trees_have_equal_fingerprints_whatever_their_sharding(self):
        m = mesh()
        a = state(1, m)
        on_host = jax.device_get(a)
        replicated = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(m, P())), on_host)
        prints = checkpoint.fingerprints(a)
        self.assertEqual(prints, checkpoint.fingerprints(replicated))
        self.assertEqual(prints, checkpoint.fingerprints(on_host))
        self.assertEqual(sorted(prints), sorted(["step", "params/w", "params/emb", "params/mask", "params/q",
                                                 "opt_state/0/mu", "opt_state/1/count"]))
        self.assertNotEqual(prints, checkpoint.fingerprints(state(2, m)))


class DamageTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.workdir = pathlib.Path(self.create_tempdir().full_path)
        self.directory = self.workdir / "checkpoints"
        self.mesh = mesh()
        manager = checkpoint.make_manager(self.workdir, CONFIG)
        for k in (1, 2, 3):
            self.assertTrue(checkpoint.save(manager, k, state(k, self.mesh)))
        manager.wait_until_finished()
        self.assertEqual(manager.all_steps(), [1, 2, 3])
        prints = sorted(p.name for p in (self.workdir / checkpoint.FINGERPRINTS).iterdir())
        self.assertEqual(prints, ["1.json", "2.json", "3.json"])

    def restore(self, target=None):
        """restore_latest in a fresh manager: (state, step, manager, stderr)."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            manager = checkpoint.make_manager(self.workdir, CONFIG)
            restored, step = checkpoint.restore_latest(manager, abstract(target or state(0, self.mesh)))
        return restored, step, manager, err.getvalue()

    def flip_a_bit_that_orbax_misses(self, step_dir: pathlib.Path) -> None:
        """Flips one bit of the data file where orbax restores without error but other values."""
        path = data_file(step_dir)
        original = path.read_bytes()
        for offset in range(len(original) // 2, len(original), 997):
            damaged = bytearray(original)
            damaged[offset] ^= 0x08
            path.write_bytes(bytes(damaged))
            try:
                values = raw_restore(step_dir, state(3, self.mesh))
            except Exception:  # noqa: BLE001  (this offset broke the framing: try another)
                values = None
            if values is not None and not same_bits(values, state(3, self.mesh)):
                return  # Silent corruption: only the fingerprint can tell.
        self.fail("no bit flip reached an array's bytes silently")

    @parameterized.named_parameters(
        ("truncated_data_file", "truncate", "data unreadable"),
        ("overwritten_data_file", "garbage", "data unreadable"),
        ("flipped_bit", "flip", "fingerprint mismatch at "),
        ("deleted_metadata_file", "no_metadata", "metadata file missing"),
        ("emptied_folder", "empty", "empty folder"),
    )
    def test_damaged_newest_step_falls_back_to_the_one_before(self, damage, reason):
        step_dir = self.directory / "3"
        if damage == "truncate":
            path = data_file(step_dir)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif damage == "garbage":
            path = data_file(step_dir)
            path.write_bytes(np.random.RandomState(0).bytes(path.stat().st_size))
        elif damage == "flip":
            self.flip_a_bit_that_orbax_misses(step_dir)
        elif damage == "no_metadata":
            (step_dir / "default" / "_METADATA").unlink()
        elif damage == "empty":
            for p in list(step_dir.iterdir()):
                shutil.rmtree(p) if p.is_dir() else p.unlink()

        restored, step, manager, err = self.restore()

        self.assertEqual(step, 2)
        self.assertTrue(same_bits(restored, state(2, self.mesh)))
        moved = self.workdir / checkpoint.DAMAGED / "3"
        self.assertRegex(  # One line; the reason's details (a status code, a leaf) vary.
            err,
            rf"^fft: warning: checkpoint step 3 in {re.escape(str(self.directory))} is damaged "
            rf"\({re.escape(reason)}[^)\n]*\); restoring step 2 \(step 3 moved to {re.escape(str(moved))}\)\n$",
        )
        self.assertTrue(moved.is_dir())
        self.assertFalse(step_dir.exists())
        self.assertTrue((self.workdir / checkpoint.DAMAGED / "3.fingerprints.json").is_file())
        self.assertEqual(manager.all_steps(), [1, 2])
        # Training goes on: step 3 is saved again (no collision with the damaged one), and restores.
        self.assertTrue(checkpoint.save(manager, 3, state(33, self.mesh)))
        manager.wait_until_finished()
        restored, step, _, err = self.restore()
        self.assertEqual((step, err), (3, ""))
        self.assertTrue(same_bits(restored, state(33, self.mesh)))

    def test_every_step_damaged_is_an_error_and_moves_nothing(self):
        for k in (1, 2, 3):
            (self.directory / str(k) / "default" / "_METADATA").unlink()
        with self.assertRaises(errors.CheckpointError) as caught:
            self.restore()
        message = str(caught.exception)
        self.assertIn(f"no checkpoint in {self.directory} can be restored", message)
        for k in (3, 2, 1):
            self.assertIn(f"step {k} (metadata file missing)", message)
            self.assertTrue((self.directory / str(k)).is_dir())
        self.assertIn("fresh workdir", caught.exception.hint)
        self.assertFalse((self.workdir / checkpoint.DAMAGED).exists())

    def test_another_layout_is_an_error_naming_the_leaf_and_both_shapes(self):
        (self.directory / "3" / "default" / "_METADATA").unlink()  # Damage before a mismatch.
        other = state(0, self.mesh)
        other["params"]["emb"] = jax.device_put(np.zeros((16, 4), jax.numpy.bfloat16), NamedSharding(self.mesh, P()))
        with self.assertRaises(errors.CheckpointError) as caught:
            self.restore(other)
        self.assertEqual(
            str(caught.exception),
            f"checkpoint step 2 in {self.directory} holds another state than this run's: "
            "params/emb is bfloat16[16,8] in the checkpoint but bfloat16[16,4] in this run",
        )
        self.assertIn("another config", caught.exception.hint)
        self.assertTrue((self.directory / "3").is_dir())  # Nothing moved, even the damaged step.
        self.assertFalse((self.workdir / checkpoint.DAMAGED).exists())
        # A leaf this run has and the checkpoint lacks.
        extra = state(0, self.mesh)
        extra["params"]["bias"] = extra["params"]["mask"]
        with self.assertRaises(errors.CheckpointError) as caught:
            self.restore(extra)
        self.assertIn("params/bias is in this run but not in the checkpoint", str(caught.exception))

    def test_leftover_step_folders_never_break_restore_or_save(self):
        # An interrupted cleanup of an old step: its folder without orbax's metadata files.
        shutil.copytree(self.directory / "1", self.directory / "0")
        (self.directory / "0" / "_CHECKPOINT_METADATA").unlink()
        (self.directory / "0" / "default" / "_METADATA").unlink()
        # A save cut short: orbax's temporary folder.
        shutil.copytree(self.directory / "1", self.directory / "4.orbax-checkpoint-tmp-1234")
        restored, step, manager, err = self.restore()
        self.assertEqual((step, err), (3, ""))
        self.assertTrue(same_bits(restored, state(3, self.mesh)))
        for k in (4, 5):
            self.assertTrue(checkpoint.save(manager, k, state(k, self.mesh)))
        manager.wait_until_finished()
        self.assertFalse((self.directory / "4.orbax-checkpoint-tmp-1234").exists())
        self.assertEqual(manager.all_steps(), [3, 4, 5])  # max_to_keep also took the leftover.
        self.assertFalse((self.directory / "0").exists())
        # A leftover newer than the last step (a partial copy): one warning, moved aside.
        (self.directory / "9" / "default").mkdir(parents=True)
        restored, step, manager, err = self.restore()
        self.assertEqual(step, 5)
        self.assertIn("checkpoint step 9 in", err)
        self.assertIn("is damaged (metadata file missing); restoring step 5", err)
        self.assertTrue(checkpoint.save(manager, 6, state(6, self.mesh)))
        manager.wait_until_finished()
        # Fingerprints of deleted steps are pruned (those of this save's deletions at the next one).
        restored, step, manager, err = self.restore()
        self.assertEqual((step, err), (6, ""))
        prints = sorted(int(p.stem) for p in (self.workdir / checkpoint.FINGERPRINTS).glob("*.json"))
        self.assertEqual(prints, manager.all_steps())

    def test_steps_without_fingerprints_restore_unverified(self):
        for path in (self.workdir / checkpoint.FINGERPRINTS).iterdir():
            path.unlink()  # As saved by an fft without fingerprints.
        self.flip_a_bit_that_orbax_misses(self.directory / "3")
        restored, step, _, err = self.restore()
        self.assertEqual((step, err), (3, ""))
        self.assertFalse(same_bits(restored, state(3, self.mesh)))  # Nothing could tell.

    def test_load_state_dict_reads_the_newest_good_step_and_moves_nothing(self):
        self.flip_a_bit_that_orbax_misses(self.directory / "3")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            values, step = checkpoint.load_state_dict(self.workdir)
        self.assertEqual(step, 2)
        self.assertTrue(same_bits(values, jax.device_get(state(2, self.mesh))))
        self.assertIn("checkpoint step 3 in", err.getvalue())
        self.assertIn("reading step 2", err.getvalue())
        self.assertTrue((self.directory / "3").is_dir())
        with self.assertRaises(errors.CheckpointError):
            checkpoint.load_state_dict(self.workdir, step=3)


class QuietTest(absltest.TestCase):
    def test_a_fallback_prints_only_the_warning(self):
        """In a process as `fft` runs it (library logs off): damage that makes tensorstore print
        'Event loop is closed' tracebacks and orbax log warnings still gives one line per step."""
        workdir = self.create_tempdir().full_path
        script = textwrap.dedent(f"""
            import os, pathlib, shutil
            import jax, ml_collections, numpy as np
            from fft import checkpoint, console
            console.set_verbosity(0)
            workdir = pathlib.Path({workdir!r})
            config = ml_collections.ConfigDict({{"every_steps": 1, "max_to_keep": 5}})
            tree = lambda k: {{"w": jax.numpy.asarray(np.random.RandomState(k).randn(256, 64), "float32"),
                               "b": {{"c": jax.numpy.full((3, 4), k), "d": jax.numpy.int32(k)}},
                               "e": (jax.numpy.zeros(3, "int8"), {{"m": jax.numpy.ones((5, 5))}})}}
            manager = checkpoint.make_manager(workdir, config)
            for k in (1, 2, 3, 4):
                checkpoint.save(manager, k, tree(k))
            manager.wait_until_finished()
            steps = workdir / "checkpoints"
            (steps / "4" / "default" / "manifest.ocdbt").write_bytes(os.urandom(100))
            shutil.rmtree(steps / "3" / "default")
            data = max((steps / "2" / "default").rglob("d/*"), key=lambda p: p.stat().st_size)
            data.write_bytes(os.urandom(data.stat().st_size))
            manager = checkpoint.make_manager(workdir, config)
            restored, step = checkpoint.restore_latest(manager, tree(0))
            assert step == 1, step
            print("restored", step)
        """)
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
        out = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, "restored 1\n")
        lines = out.stderr.splitlines()
        self.assertLen(lines, 3, out.stderr)
        for line, step in zip(lines, (4, 3, 2)):
            self.assertRegex(line, rf"^fft: warning: checkpoint step {step} in \S+ is damaged \([^)]+\); "
                                   rf"restoring step 1 \(step {step} moved to \S+\)$")


if __name__ == "__main__":
    absltest.main()
