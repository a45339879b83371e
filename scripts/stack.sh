# Sourced by install.sh and test.sh: the package versions and the venv of each STACK (see install.sh), so the two
# scripts cannot disagree on which venv a stack lives in. Each value can be overridden from the environment.
STACK=${STACK:-cpu}
case "$STACK" in
  cpu)
    VENV=${VENV:-.venv}; TORCH=${TORCH_VERSION:-2.13.0}; FBGEMM=${FBGEMM_VERSION:-1.8.0}
    TORCHREC=${TORCHREC_VERSION:-1.8.0}; TRITON=${TRITON_VERSION:-3.9.0}; extra=() ;;
  gpu-machine)
    VENV=${VENV:-.venv-gpu-machine}; TORCH=${TORCH_VERSION:-2.11.0}; FBGEMM=${FBGEMM_VERSION:-1.6.0}
    TORCHREC=${TORCHREC_VERSION:-1.6.1}; TRITON=${TRITON_VERSION:-3.6.0}
    extra=("numpy<2.4" "tensordict==0.11.0" "torchx==0.7.0") ;;
  *) echo "STACK must be 'cpu' or 'gpu-machine', got '$STACK'" >&2; exit 2 ;;
esac
