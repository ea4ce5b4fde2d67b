"""`python -m fft.main --config=configs/glue.py:task=rte --workdir=DIR` is `fft train ...`.

The flags, the multi-host start (`--distributed` or FFT_DISTRIBUTED=1) and the one-line errors live
in `fft.cli`. On Linux the process first restarts itself once with glibc malloc tunables that keep
XLA's per-step buffers mapped (`fft.malloc_tuning`; FFT_MALLOC_TUNING=0 turns that off).
"""

import sys

from fft import cli, malloc_tuning

if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Restarts once with tuned malloc where it applies.
    sys.exit(cli.run(["train", *sys.argv[1:]]))
