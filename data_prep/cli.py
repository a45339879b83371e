"""Convert raw Criteo click logs (Kaggle DAC or Terabyte) to Parquet shards plus manifest.json.

Output (see dlrm_scale/data/manifest.py for the contract):
  OUT/manifest.json                       what training checks: encoding, transform, cardinalities, shards
  OUT/<split>/part-<file>-<chunk>-<n>.parquet   columns label (int8), I1..I13 (float32), C1..C26 (int64)
  OUT/vocab/<column>/                     the vocabulary (--encoding vocab)
  OUT/contiguous/<column>/                values in id order (--encoding contiguous)
  OUT/quarantine/                         bad lines and why (--on-bad-line skip)
  OUT/.prep/                              bookkeeping that lets an interrupted run resume

Splits: terabyte = every day but the last is train, the last day (day_23; with fewer days the highest given) is
halved by lines into test (first half) and val; kaggle = facebookresearch/dlrm's convention, the last seventh of
train.txt held out and halved the same way; auto = everything is train. --holdout and --first-half change this.
A file without a label column (Kaggle test.txt) goes to split `unlabeled` with label -1.

Rerunning the same command after a crash or kill -9 finishes the run without redoing finished chunks and gives
the same shards, byte for byte, for any --workers; rerunning with other settings into the same OUT is refused.

--preset NAME prepares what the training preset NAME expects: its [data] encoding, max_ind_range, min_frequency
and dense_transform (`dlrm-scale train --config NAME` refuses data prepared otherwise). A flag given as well
overrides the preset's value; the manifest records the preset and the override, and the run says which --set the
training then needs.

Examples:
  dlrm-scale prep criteo --input raw/day_* --out data/ --dataset terabyte --preset criteo_terabyte
  dlrm-scale prep criteo --input dac/train.txt --out kaggle/ --dataset kaggle --preset criteo_kaggle
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from data_prep.choices import CHOICES


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="raw log files, plain or gzip (detected by content): Terabyte day_0 … day_23, Kaggle "
                             "train.txt/test.txt, or CSVs with a header (Id column allowed)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (new, or a run to resume)")
    parser.add_argument("--dataset", choices=CHOICES["dataset"], default="auto",
                        help="which conventions to follow: terabyte (last day held out; day_N ordered by N), kaggle "
                             "(last seventh held out), auto (everything is train)")
    parser.add_argument("--preset", default="", metavar="NAME",
                        help="take --encoding, --max-ind-range, --min-frequency and --dense-transform from the [data] "
                             "section of this training preset (or TOML file) so that training accepts the data")
    parser.add_argument("--encoding", choices=CHOICES["encoding"], default=None,
                        help="[hash, or the preset's] hash: id = int(hex) %% max-ind-range (DLRM/MLPerf, TorchRec); "
                             "vocab: two passes, id = rank by frequency among values seen >= --min-frequency times, "
                             "0 = missing/rare (NVIDIA); contiguous: two passes, ids from 2 by first appearance, "
                             "input order (TorchRec's sparse_to_contiguous, MLPerf DLRMv2), then %% max-ind-range")
    parser.add_argument("--max-ind-range", type=int, default=None, metavar="N",
                        help="[0, or the preset's] take categorical values modulo N (before counting, for vocab; "
                             "after numbering, for contiguous); 0 = no modulo (hash ids then span 2**32)")
    parser.add_argument("--min-frequency", type=int, default=None, metavar="N",
                        help="[1, or the preset's] vocab: keep values seen at least N times over all inputs (NVIDIA uses 15 or 3)")
    parser.add_argument("--dense-transform", choices=CHOICES["dense_transform"], default=None,
                        help="[log1p, or the preset's] log1p: log(max(x,0)+1), as DLRM; log3: log(max(x,-2)+3), as TorchRec/MLPerf v2/NVIDIA "
                             "(-2 clip avoids their log(0) at x=-3). Missing = 0 before either")
    parser.add_argument("--on-bad-line", choices=CHOICES["on_bad_line"], default="error",
                        help="error: stop at the first bad line, naming file, line and field; skip: write it to "
                             "OUT/quarantine/ and count it in the manifest")
    parser.add_argument("--workers", type=int, default=_default_workers(), metavar="N",
                        help="worker processes (one core each); the output is the same for any N")
    parser.add_argument("--rows-per-shard", type=int, default=1 << 20, metavar="N",
                        help="rows per Parquet shard (the last shard of each chunk holds the remainder)")
    parser.add_argument("--row-group-rows", type=int, default=1 << 17, metavar="N",
                        help="rows per Parquet row group, the unit the training loader reads")
    parser.add_argument("--format", choices=CHOICES["format"], default="auto",
                        help="field delimiter: auto detects tab or comma from the first line; a header line is "
                             "always detected")
    parser.add_argument("--holdout", choices=CHOICES["holdout"], default="auto",
                        help="held-out rows: last-file (halved), last-seventh (DLRM Kaggle, halved), none; auto = "
                             "the --dataset's convention")
    parser.add_argument("--first-half", choices=CHOICES["first_half"], default="test",
                        help="which split the first half of the held-out lines becomes (test: facebookresearch/dlrm "
                             "and MLPerf v1; val: TorchRec and MLPerf DLRMv2)")
    parser.add_argument("--chunk-bytes", type=int, default=1 << 30, metavar="N",
                        help="plain files are cut into chunks of about N bytes, the unit of parallel work and of "
                             "resuming (a gzip file is one chunk)")
    parser.add_argument("--block-bytes", type=int, default=1 << 22, metavar="N",
                        help="bytes parsed at once per worker (bounds memory; does not change the output)")
    parser.add_argument("--compression", choices=CHOICES["compression"], default="snappy",
                        help="Parquet compression codec")
    parser.add_argument("--rank", type=int, default=0,
                        help="this process's rank when several machines share OUT (see launch/prep_components.py)")
    parser.add_argument("--world-size", type=int, default=1, help="number of ranks sharing the work")
    parser.add_argument("--barrier-timeout", type=float, default=6 * 3600.0, metavar="SECONDS",
                        help="how long a rank waits for the other ranks' results")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# flag (argparse dest) -> its default without a preset
CONVENTIONS = {"encoding": "hash", "max_ind_range": 0, "min_frequency": 1, "dense_transform": "log1p"}


def conventions(args: argparse.Namespace) -> tuple[dict, dict]:
    """The data conventions to prepare with: flag, else the preset's [data] value, else the default. Also returns
    the flags that override the preset's value (recorded in the manifest)."""
    preset_values = {}
    if args.preset:
        from dlrm_scale.config import load_config

        data = load_config(args.preset).data
        preset_values = {key: getattr(data, key) for key in CONVENTIONS}
    chosen = {key: getattr(args, key) if getattr(args, key) is not None else preset_values.get(key, default)
              for key, default in CONVENTIONS.items()}
    overrides = {key: chosen[key] for key in preset_values if chosen[key] != preset_values[key]}
    return chosen, overrides


def record_preset(out: str, preset: str, overrides: dict) -> None:
    """Notes in the manifest which preset the data was prepared for and which flags overrode it."""
    from dlrm_scale.data.manifest import Manifest

    manifest = Manifest.load(out)
    manifest.extra["preset"] = preset
    manifest.extra["preset_overrides"] = overrides
    manifest.save(out)


def run(args: argparse.Namespace) -> int:
    from data_prep.config import PrepConfig
    from data_prep.errors import PrepError
    from data_prep.pipeline import prepare

    chosen, overrides = conventions(args)
    for key, value in overrides.items():
        print(f"prep: --{key.replace('_', '-')} {value} overrides {args.preset}'s data.{key}; train with "
              f"--set data.{key}={value}", file=sys.stderr)
    cfg = PrepConfig(
        inputs=list(args.input), out=args.out, dataset=args.dataset, **chosen,
        on_bad_line=args.on_bad_line, workers=args.workers, rows_per_shard=args.rows_per_shard,
        row_group_rows=args.row_group_rows, chunk_bytes=args.chunk_bytes, block_bytes=args.block_bytes,
        format=args.format, holdout=args.holdout, first_half=args.first_half, compression=args.compression,
        rank=args.rank, world_size=args.world_size, barrier_timeout=args.barrier_timeout,
        progress=not args.no_progress,
    )
    start = time.perf_counter()
    try:
        manifest = prepare(cfg)
    except PrepError as exc:
        print(f"prep: error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    if manifest is None:
        print(f"prep: rank {cfg.rank} done in {seconds:.1f} s; rank 0 writes the manifest", file=sys.stderr)
        return 0
    if args.preset:
        record_preset(args.out, args.preset, overrides)
    rows = sum(split.rows for split in manifest.splits.values())
    for name, split in manifest.splits.items():
        print(f"prep: {name:<10} {split.rows:>14,} rows in {len(split.shards):,} shards", file=sys.stderr)
    if manifest.bad_lines_skipped:
        print(f"prep: {manifest.bad_lines_skipped:,} bad lines skipped, see {', '.join(manifest.quarantine)}",
              file=sys.stderr)
    print(f"prep: wrote {args.out}/manifest.json ({rows:,} rows, {seconds:.1f} s, {rows / seconds:,.0f} rows/s)",
          file=sys.stderr)
    return 0
