#!/usr/bin/env bash
# The GPU check: everything a first contact with one H100 / H200 must show, in one call of at most 9 minutes.
#
# Stages (each under its own time limit and all within a 520-second budget, $GPU_CHECK_BUDGET_S, so the whole
# stays under 9 minutes; a failed or timed-out stage does not stop the next, a stage the budget cannot fit is
# skipped):
#   gpu, env            GPU, memory, clocks, driver; torch / Triton / TorchRec versions (fbgemm-gpu imported)
#   tests:gpu           every test marked `gpu` (compiled kernels on >2^31 elements, pinned copies, one-GPU training
#                       over NCCL: fused Adam, UVM caching + prefetch pipeline, bf16 qcomms + TF32, plain loop)
#   tests:kernels       the fused dot kernels' tests, compiled for this GPU instead of interpreted
#   interaction:sweep   every candidate launch config of the fused kernels at B = 65536, F = 26, D = 128 (bf16,
#                       fp32), and the one the chooser picks
#   interaction:grid    the dot family at that shape in bf16: eager bmm (indices built once), torch.compile,
#                       torch.compile(mode="max-autotune"), dot, dot_fused
#   train               bench_train: criteo_kaggle, criteo_terabyte, mlperf_dcnv2 (fp16 weights, one GPU), ours vs
#                       TorchRec's DLRM example pipeline on the same batches
#   loader              bench_loader for a node: 1 and 8 concurrent ranks, pinned host batches copied to the GPU
# Results: benchmarks/results/<date>_<gpu>/ (JSON + Markdown per stage, gpu_check.log, stages.tsv, summary.md);
# the summary table is printed last. With $OUT set (the device tool), summary.md, the log and a tarball of the
# results folder are copied there (the tool brings back at most 8 files).
#
# Needs the GPU stack staged as ../shared/gpu/README.md says (fbgemm-gpu and torchrec under /tmp/site): run it
# as the command of the third staging call, `bash .gpu/w/stage.sh && bash benchmarks/gpu_check.sh`.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: each stage's command line and imports, nothing run
#                                           # (tests/benchmarks/test_gpu_check.py runs this in CI)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DRY=0
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
export PYTHONPATH=$ROOT:${PYTHONPATH:-}
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site:$PYTHONPATH; fi  # the staged fbgemm-gpu and torchrec
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

if [ $DRY = 1 ]; then
  RESULTS=$(mktemp -d)
  trap 'rm -rf "$RESULTS"' EXIT
else
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  gpu=$(echo "$gpu" | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
  RESULTS=benchmarks/results/$(date -u +%Y-%m-%d)_${gpu:-unknown-gpu}
fi
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu_check.log
: > "$RESULTS/stages.tsv"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-520}  # seconds for all stages: with the summary and packing, under 9 minutes
FAILED=0

# stage NAME SECONDS COMMAND...: runs COMMAND under a time limit (or, with --dry-run, checks it), logs its output,
# appends "name status seconds limit" to stages.tsv.
stage() {
  local name=$1 limit=$2 began status
  shift 2
  began=$(date +%s)
  if [ $DRY = 1 ]; then  # checked all together at the end
    printf '%s\t%s\n' "$name" "$(printf '%q ' "$@")" >> "$RESULTS/commands.tsv"
    return
  else
    # The whole check stays within BUDGET seconds: a stage gets at most what is left of it.
    local left=$(( BUDGET - ($(date +%s) - START) ))
    [ "$limit" -le "$left" ] || limit=$left
    if [ "$limit" -lt 5 ]; then
      echo "== $name: skipped, the ${BUDGET} s budget is spent" | tee -a "$LOG"
      FAILED=1
      printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 0 >> "$RESULTS/stages.tsv"
      return
    fi
    echo "== $name (limit ${limit} s, $(( $(date +%s) - START )) s elapsed): $*" | tee -a "$LOG"
    local before
    before=$(wc -l < "$LOG")
    timeout -k 5 "$limit" "$@" >> "$LOG" 2>&1
    status=$?
    tail -n +$((before + 1)) "$LOG" | tail -n 3  # the end of this stage's output
  fi
  [ $status = 0 ] || FAILED=1
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - began ))" "$limit" >> "$RESULTS/stages.tsv"
}

VERSIONS="import torch, triton, torchrec, fbgemm_gpu; print('torch', torch.__version__, 'triton', \
triton.__version__, 'torchrec', torchrec.__version__, 'cuda', torch.cuda.is_available())"
[ $DRY = 1 ] || stage gpu 10 nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version \
  --format=csv
stage env 10 "$PY" -c "$VERSIONS"
stage tests:gpu 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
stage tests:kernels 70 "$PY" -m pytest -q -p no:cacheprovider -m "not gpu and not slow" tests/kernels
stage interaction:sweep 45 "$PY" benchmarks/bench_interaction.py --sweep --no-grid --dtypes bf16,fp32 \
  --batch-sizes 65536 --tag gpu_check_sweep --out "$RESULTS"
stage interaction:grid 110 "$PY" benchmarks/bench_interaction.py --implementations dot --dtypes bf16 \
  --batch-sizes 65536 --features 26 --dims 128 --compile-shapes 26x128 --time-budget-s 90 --tag gpu_check \
  --out "$RESULTS"
stage train 140 "$PY" -m torch.distributed.run --nproc_per_node=1 --master_addr=127.0.0.1 --master_port=29533 \
  benchmarks/bench_train.py --presets criteo_kaggle criteo_terabyte mlperf_dcnv2 --batch-size 8192 --steps 30 \
  --warmup 10 --set sharding.weight_dtype=fp16 --out "$RESULTS"
stage loader 45 "$PY" benchmarks/bench_loader.py --rows 4000000 --batch-sizes 65536 --workers 4 --ranks 1,8 \
  --device cuda --out "$RESULTS"

if [ $DRY = 1 ]; then
  stage summary 10 "$PY" benchmarks/gpu_summary.py "$RESULTS"
  "$PY" benchmarks/dry_run.py "$RESULTS/commands.tsv"
  exit $?
fi
"$PY" benchmarks/gpu_summary.py "$RESULTS"
echo "total $(( $(date +%s) - START )) s; results in $RESULTS"
if [ -n "${OUT:-}" ]; then
  cp "$RESULTS/summary.md" "$LOG" "$OUT/"
  tar czf "$OUT/gpu_check_results.tgz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
fi
exit $FAILED
