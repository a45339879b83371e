#!/usr/bin/env bash
# Creates .venv (or $VENV) and installs dlrm_scale with the pinned CPU stack, without ever pulling the CUDA
# fbgemm-gpu wheel: torchrec declares an unpinned `fbgemm-gpu` dependency, so it is installed with --no-deps
# after its real needs. Idempotent: a second run with unchanged dependencies only checks that the stack imports.
# On a GPU machine use INSTALL_GPU=1: then the matching CUDA `fbgemm-gpu` replaces fbgemm-gpu-cpu.
#
# STACK=gpu-machine installs, into .venv-gpu-machine, the releases the lent GPU machine runs (torch 2.11,
# fbgemm-gpu 1.6.0 as its CPU build, torchrec 1.6.1, Triton 3.6, tensordict 0.11, torchx 0.7), so the suite can
# prove here that the code runs on both stacks. PyPI's torch 2.11 for Linux is the CUDA build (about 3 GB with
# its NVIDIA libraries); it runs on CPUs. numpy stays below 2.4 there: Triton 3.6's interpreter, which runs the
# fused-kernel tests on CPUs, fails on numpy 2.4 (`int()` of a 1-element array); compiled kernels are unaffected.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/stack.sh
PY=${PYTHON:-python3}
# The marker records what was installed; a change to the dependencies or this script reinstalls.
stamp=$(cat pyproject.toml "${BASH_SOURCE[0]}" scripts/stack.sh | sha256sum | cut -c1-16)-$STACK-${INSTALL_GPU:-0}-$TORCH-$FBGEMM-$TORCHREC
if [ "$(cat "$VENV/.dlrm_scale_installed" 2>/dev/null)" = "$stamp" ] && "$VENV/bin/python" -c "import torchrec, dlrm_scale" 2>/dev/null; then
  echo "install: $VENV is up to date" >&2
  exit 0
fi
step() { echo "install: $*" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check --progress-bar off)
if [ "${INSTALL_GPU:-0}" = 1 ]; then
  step "torch $TORCH and fbgemm-gpu $FBGEMM (CUDA builds; several GB on a cold cache)"
  "${pip[@]}" "torch==$TORCH" "fbgemm-gpu==$FBGEMM"
else
  step "torch $TORCH, fbgemm-gpu-cpu $FBGEMM, triton $TRITON (about a minute on a warm pip cache)"
  "${pip[@]}" "torch==$TORCH" "fbgemm-gpu-cpu==$FBGEMM" "triton==$TRITON"
fi
step "dlrm-scale (editable) with its test, tensorboard and bench extras"
"${pip[@]}" -e ".[test,tensorboard,bench]" "${extra[@]}"
step "torchrec $TORCHREC without its dependencies (its fbgemm-gpu requirement would replace the CPU build)"
"${pip[@]}" --no-deps "torchrec==$TORCHREC"
step "checking that the stack imports"
"$VENV/bin/python" -c "import torchrec, fbgemm_gpu, dlrm_scale; print('install: done: torchrec', torchrec.__version__ if hasattr(torchrec, '__version__') else '?')" 2>&1 | grep -v -i warn || true
echo "$stamp" > "$VENV/.dlrm_scale_installed"
