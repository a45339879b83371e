#!/usr/bin/env bash
# Installs (if needed) and runs the test suite. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`.
# Slow tests run with DLRM_SCALE_SLOW=1; GPU tests run only where CUDA is available.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest "$@"
