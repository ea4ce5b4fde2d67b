#!/usr/bin/env bash
# Installs fft and fine-tunes the packaged all-MiniLM-L6-v2 on STS-B (shipped GLUE files) for one
# epoch, then prints the dev Pearson/Spearman correlation (results/full_finetune.md has the 3-epoch
# run).
# A few minutes on 2 CPU cores, install included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
workdir=${1:-runs/demo_stsb}
fft train --config=configs/glue.py:task=stsb --workdir="$workdir" --config.num_epochs=1 \
  --config.checkpoint.every_steps=100
