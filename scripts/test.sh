#!/usr/bin/env bash
# Installs (if needed) and runs the test suite. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`.
# Slow tests run with DLRM_SCALE_SLOW=1; GPU tests run only where CUDA is available.
# STACK=gpu-machine runs it on the releases the lent GPU machine has (torch 2.11, torchrec 1.6.1; see install.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/stack.sh
bash scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$VENV/bin/python" -m pytest "$@"
