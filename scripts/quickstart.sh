#!/usr/bin/env bash
# The whole product on a small embedded default, from a fresh clone:
#   install (.venv, pinned CPU stack) -> synthetic raw Criteo logs (3 days) -> Parquet shards + manifest
#   -> DLRM trained on 2 CPU ranks (torchrun, gloo) with TorchRec-sharded embedding tables -> AUC / logloss
#   on the held-out day's validation half -> `dlrm-scale eval` of the final checkpoint on its test half.
# Knobs (environment): QUICKSTART_OUT (default quickstart_out), QUICKSTART_ROWS (default 300000),
#   QUICKSTART_INSTALL=0 (skip scripts/install.sh and use the dlrm-scale/torchrun already on PATH; the README
#   test does this), MASTER_PORT (default 29531).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${QUICKSTART_OUT:-quickstart_out}
ROWS=${QUICKSTART_ROWS:-300000}
if [ "${QUICKSTART_INSTALL:-1}" = 1 ]; then
  bash scripts/install.sh
  BIN=.venv/bin/
else
  BIN=
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
rm -rf "$OUT"
echo "== 1/4 synthetic raw Criteo logs: $ROWS rows over 3 days -> $OUT/raw"
"${BIN}dlrm-scale" synth criteo --rows "$ROWS" --days 3 --out "$OUT/raw" --seed 0
echo "== 2/4 raw logs -> Parquet shards + manifest as preset tiny_cpu expects (days 0-1 train, day 2 halved into val/test) -> $OUT/parquet"
"${BIN}dlrm-scale" prep criteo --input "$OUT"/raw/day_0 "$OUT"/raw/day_1 "$OUT"/raw/day_2 --out "$OUT/parquet" \
  --dataset terabyte --preset tiny_cpu --workers 2 --no-progress
echo "== 3/4 training on 2 CPU ranks with sharded embedding tables -> run folder $OUT/run"
"${BIN}torchrun" --nproc_per_node=2 --master_addr=127.0.0.1 --master_port="${MASTER_PORT:-29531}" \
  -m dlrm_scale.cli train --config tiny_cpu --set "data.path=$OUT/parquet" --set "train.out_dir=$OUT/run"
echo "== 4/4 evaluating the run's final checkpoint on the test half (config from $OUT/run/config.toml)"
"${BIN}torchrun" --nproc_per_node=2 --master_addr=127.0.0.1 --master_port="${MASTER_PORT:-29531}" \
  -m dlrm_scale.cli eval --run-dir "$OUT/run" --split test
