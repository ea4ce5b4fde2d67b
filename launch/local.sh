#!/usr/bin/env bash
# Run one fft experiment on this machine (CPU, or a local GPU if jax sees one).
#   launch/local.sh configs/glue.py:task=rte runs/rte [--config.optim.lr=3e-5 ...]
# Set FAKE_DEVICES=8 to split the batch over 8 simulated CPU devices (tests the sharded path).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: launch/local.sh CONFIG[:ARGS] WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG[:ARGS] WORKDIR [overrides...]}
shift 2
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
if [[ -n "${FAKE_DEVICES:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${FAKE_DEVICES}"
fi
exec fft train --config="$config" --workdir="$workdir" "$@"
