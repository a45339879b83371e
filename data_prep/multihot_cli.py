"""Expand a one-hot prepared directory into MLPerf DLRMv2's synthetic multi-hot ids.

Output::

  OUT/manifest.json                 multi_hot = true; extra.multihot records layout, sizes, distribution, seed
  OUT/multihot_tables/C<f>.npy      the lookup tables, (table rows, size) int32, memory-mapped by readers
  OUT/<split>/part-*.parquet        (materialized) C<f> holds size_f little-endian int32 ids per row
                                    (fixed_size_binary[4 * size_f]); other columns as given

With ``--no-materialize`` only the tables and the manifest are written; the manifest points at the input's
one-hot shards and the loader expands them on the fly, batch by batch (same ids, no 3.8 TB of disk).
Rerunning the same command after a crash finishes the run; other settings into the same OUT are refused.

Example (MLPerf DLRMv2, after ``prep criteo --dataset terabyte --encoding contiguous --max-ind-range 40000000
--dense-transform log3 --first-half val``)::

  dlrm-scale prep multihot --input data/ --out data_mh/ --sizes mlperf --distribution uniform --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="DIR", help="a one-hot directory of `prep criteo`")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (new, or a run to resume)")
    parser.add_argument("--sizes", required=True, metavar="N,N,...",
                        help="ids per row of each sparse column; 'mlperf' = 3,2,1,2,6,1,1,1,1,7,3,8,1,6,9,5,1,1,1,"
                             "12,100,27,10,3,1,1 (214 per row)")
    parser.add_argument("--num-embeddings", default="", metavar="N,N,...",
                        help="rows of each lookup table (ids are taken modulo them, as the reference does); "
                             "default: the input's cardinalities; 'mlperf' = MLPerf DLRMv2's list")
    parser.add_argument("--distribution", choices=["uniform", "pareto"], default="uniform",
                        help="how the extra ids are drawn (the reference's multi_hot_distribution_type)")
    parser.add_argument("--seed", type=int, default=0, help="the reference's np.random.seed (MLPerf: 0)")
    parser.add_argument("--no-materialize", action="store_true",
                        help="write only the tables and a manifest over the input shards; the loader expands")
    parser.add_argument("--compression", choices=["snappy", "zstd", "none"], default="snappy",
                        help="Parquet compression of the materialized shards")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), metavar="N",
                        help="worker processes (one core each), one shard at a time each")
    parser.add_argument("--rank", type=int, default=0, help="this process's rank when several machines share OUT")
    parser.add_argument("--world-size", type=int, default=1, help="number of ranks sharing the work")
    parser.add_argument("--barrier-timeout", type=float, default=6 * 3600.0, metavar="SECONDS",
                        help="how long a rank waits for the others")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from data_prep.errors import PrepError
    from data_prep.multihot import MLPERF_NUM_EMBEDDINGS, MLPERF_SIZES, MultihotConfig, prepare

    try:
        sizes = MLPERF_SIZES if args.sizes == "mlperf" else _ints(args.sizes)
        rows = MLPERF_NUM_EMBEDDINGS if args.num_embeddings == "mlperf" else _ints(args.num_embeddings) or None
    except ValueError:
        print("prep: error: --sizes and --num-embeddings take comma-separated integers (or 'mlperf')",
              file=sys.stderr)
        return 2
    cfg = MultihotConfig(input=args.input, out=args.out, sizes=sizes, distribution=args.distribution,
                         seed=args.seed, num_embeddings=rows, materialize=not args.no_materialize,
                         compression=args.compression, workers=args.workers, rank=args.rank,
                         world_size=args.world_size, barrier_timeout=args.barrier_timeout,
                         progress=not args.no_progress)
    start = time.perf_counter()
    try:
        manifest = prepare(cfg)
    except PrepError as exc:
        print(f"prep: error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    if manifest is None:
        print(f"prep: rank {cfg.rank} done in {seconds:.1f} s; rank 0 writes the manifest", file=sys.stderr)
        return 0
    rows_total = sum(split.rows for split in manifest.splits.values())
    print(f"prep: wrote {args.out}/manifest.json ({rows_total:,} rows, {sum(sizes)} ids per row, "
          f"{manifest.extra['multihot']['layout']}, {seconds:.1f} s)", file=sys.stderr)
    return 0
