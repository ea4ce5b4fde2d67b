#!/usr/bin/env bash
# Installs fft into .venv and runs the lint and the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
ruff check fft configs tests benchmarks scripts
python -m pytest tests "$@"
