#!/usr/bin/env bash
# torchrun wrapper for `dlrm-scale train` (or `eval`) on one node or many, with elastic restarts.
#
#   launch/torchrun.sh --config tiny_cpu --set data.path=DATA    # one node, all GPUs (or 2 CPU ranks); new runs/ folder
#   NNODES=4 MASTER_ADDR=node0 MAX_RESTARTS=3 launch/torchrun.sh --config mlperf_dcnv2 \
#       --set data.path=/data/mlperf --set train.out_dir=/shared/runs/dcnv2        # run on each of 4 nodes
#   COMMAND=eval launch/torchrun.sh --run-dir runs/latest --split test
#
# Environment (defaults in brackets):
#   NPROC_PER_NODE  processes per node [number of visible GPUs, or 2 without a GPU]
#   NNODES          nodes [1]; MASTER_ADDR / MASTER_PORT: the rendezvous host and port [127.0.0.1 / 29500]
#   MAX_RESTARTS    times torchrun restarts all workers after one fails [0]; the run resumes from its newest
#                   checkpoint (needs an explicit train.out_dir, and train.checkpoint_every_steps)
#   RDZV_ID         job id shared by the nodes [dlrm-scale]; COMMAND: train or eval [train]
#   PYTHON          interpreter with dlrm_scale installed [.venv/bin/python if present, else python3]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
  gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
  if [[ "$gpus" -gt 0 ]]; then NPROC_PER_NODE=$gpus; else NPROC_PER_NODE=2; fi
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --nproc-per-node="$NPROC_PER_NODE" \
  --rdzv-backend=c10d --rdzv-endpoint="${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT:-29500}" \
  --rdzv-id="${RDZV_ID:-dlrm-scale}" --max-restarts="${MAX_RESTARTS:-0}" \
  -m dlrm_scale.cli "${COMMAND:-train}" "$@"
