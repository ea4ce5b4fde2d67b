"""Tests for fft.malloc_tuning: which environment the restart gets, and the restart itself."""

import os
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized

from fft import malloc_tuning as mt

REPO = pathlib.Path(__file__).resolve().parent.parent
LINUX = {"system": "Linux", "glibc": (2, 36), "thp": "madvise"}


class TunedEnvironTest(parameterized.TestCase):
    def test_linux_glibc_with_thp_gets_retain_and_huge_pages(self):
        env = mt.tuned_environ({"PATH": "/bin"}, **LINUX)
        self.assertEqual(env["PATH"], "/bin")
        self.assertEqual(env["GLIBC_TUNABLES"].split(":"), [*mt.RETAIN, mt.HUGE_PAGES])

    def test_thp_never_gets_retain_only(self):
        env = mt.tuned_environ({}, **{**LINUX, "thp": "never"})
        self.assertEqual(env["GLIBC_TUNABLES"].split(":"), list(mt.RETAIN))

    def test_other_tunables_are_kept(self):
        env = mt.tuned_environ({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, **LINUX)
        self.assertTrue(env["GLIBC_TUNABLES"].startswith("glibc.rtld.nns=2:glibc.malloc.arena_max=1"))

    @parameterized.named_parameters(
        ("not_linux", {}, {"system": "Darwin"}),
        ("no_glibc", {}, {"glibc": None}),
        ("old_glibc", {}, {"glibc": (2, 31)}),
        ("opted_out", {"FFT_MALLOC_TUNING": "0"}, {}),
        ("user_malloc_tunable", {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, {}),
        ("already_restarted", {"GLIBC_TUNABLES": ":".join(mt.RETAIN)}, {}),
    )
    def test_no_restart(self, environ, overrides):
        self.assertIsNone(mt.tuned_environ(environ, **{**LINUX, **overrides}))

    def test_thp_mode_reads_the_bracketed_choice(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.write("always [madvise] never\n")
            f.flush()
            self.assertEqual(mt.thp_mode(f.name), "madvise")
        self.assertIsNone(mt.thp_mode("/nonexistent/transparent_hugepage/enabled"))


class RestartTest(absltest.TestCase):
    def _run(self, **env_extra) -> str:
        code = ("import os, sys; from fft import malloc_tuning; malloc_tuning.reexec_with_malloc_tuning(); "
                "print(os.environ.get('GLIBC_TUNABLES', '') + '|' + ' '.join(sys.argv[1:]))")
        env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", mt.OPT_OUT_VAR)}
        env.update(env_extra)
        out = subprocess.run([sys.executable, "-c", code, "a", "--b=1"], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def test_restart_sets_tunables_and_keeps_arguments(self):
        expected = mt.tuned_environ({}, system=os.uname().sysname, glibc=mt.glibc_version(), thp=mt.thp_mode())
        tunables, args = self._run().split("|")
        self.assertEqual(args, "a --b=1")
        self.assertEqual(tunables, expected["GLIBC_TUNABLES"] if expected else "")

    def test_opt_out(self):
        self.assertEqual(self._run(FFT_MALLOC_TUNING="0"), "|a --b=1")


if __name__ == "__main__":
    absltest.main()
