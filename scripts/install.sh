#!/usr/bin/env bash
# Creates .venv (or $VENV) and installs dlrm_scale with the pinned CPU stack, without ever pulling the CUDA
# fbgemm-gpu wheel: torchrec declares an unpinned `fbgemm-gpu` dependency, so it is installed with --no-deps
# after its real needs. Idempotent: a second run with unchanged dependencies only checks that the stack imports.
# On a GPU machine use INSTALL_GPU=1: then the matching CUDA `fbgemm-gpu` replaces fbgemm-gpu-cpu.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH=${TORCH_VERSION:-2.13.0}
FBGEMM=${FBGEMM_VERSION:-1.8.0}
TORCHREC=${TORCHREC_VERSION:-1.8.0}
# CPU only: the Triton interpreter runs the fused-kernel tests there (on GPUs torch brings its own Triton).
TRITON=${TRITON_VERSION:-3.9.0}
# The marker records what was installed; a change to the dependencies or this script reinstalls.
stamp=$(cat pyproject.toml "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)-${INSTALL_GPU:-0}-$TORCH-$FBGEMM-$TORCHREC
if [ "$(cat "$VENV/.dlrm_scale_installed" 2>/dev/null)" = "$stamp" ] && "$VENV/bin/python" -c "import torchrec, dlrm_scale" 2>/dev/null; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if [ "${INSTALL_GPU:-0}" = 1 ]; then
  "${pip[@]}" "torch==$TORCH" "fbgemm-gpu==$FBGEMM"
else
  "${pip[@]}" "torch==$TORCH" "fbgemm-gpu-cpu==$FBGEMM" "triton==$TRITON"
fi
"${pip[@]}" -e ".[test,tensorboard]"
"${pip[@]}" --no-deps "torchrec==$TORCHREC"
"$VENV/bin/python" -c "import torchrec, fbgemm_gpu, dlrm_scale; print('dlrm_scale installed: torchrec', torchrec.__version__ if hasattr(torchrec, '__version__') else '?')" 2>&1 | grep -v -i warn || true
echo "$stamp" > "$VENV/.dlrm_scale_installed"
