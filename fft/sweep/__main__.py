"""`python -m fft.sweep GRID ...`: as `fft sweep GRID ...` (fft's errors as one line, exit status 2)."""

import sys

from fft import cli

sys.exit(cli.run(["sweep", *sys.argv[1:]]))
