"""Progress rates and ETA with a fake clock."""

from absl.testing import absltest

from fft import progress


class ProgressTest(absltest.TestCase):
    def test_rate_and_eta_exclude_pauses(self):
        now = [100.0]
        p = progress.Progress(total_steps=110, first_step=0, clock=lambda: now[0])
        p.update(1, 32)  # First step (compilation) starts the clock.
        now[0] += 12.0
        p.exclude(2.0)  # An evaluation.
        p.update(11, 320)
        rates = p.rates(11)
        self.assertAlmostEqual(rates["perf/steps_per_sec"], 1.0)
        self.assertAlmostEqual(rates["perf/examples_per_sec"], 32.0)
        self.assertAlmostEqual(rates["perf/eta_seconds"], 99.0)

    def test_format(self):
        self.assertEqual(progress.format_seconds(3725), "1h02m05s")
        self.assertEqual(progress.format_seconds(65), "1m05s")


if __name__ == "__main__":
    absltest.main()
