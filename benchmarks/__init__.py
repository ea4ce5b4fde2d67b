"""Benchmark scripts (run as `python benchmarks/<name>.py`); shared helpers in common.py."""
