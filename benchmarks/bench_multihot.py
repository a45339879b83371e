"""Multi-hot loading (MLPerf DLRMv2, 214 ids per row): our fast path vs the current path vs TorchRec + Multihot.

Writes N synthetic one-hot rows (``bench_loader.write_data``: Terabyte table sizes, Parquet + TorchRec's ``.npy``),
then ``dlrm-scale prep multihot`` over them (MLPerf's sizes, lookup tables of ``min(MLPerf rows, --max-table-rows)``
rows so they fit this machine), timed as a stage with its peak RSS, in both layouts. Then, for each batch size,
one timed epoch per loader on one rank after a burn-in pass, all in this process:

- ours, materialized: ``make_loader`` over the ``prep multihot`` output (fixed-width int32 per feature, decoded by
  reshaping, int32 KJTs);
- ours, expanded on the fly: the same loader over the ``--no-materialize`` output (one-hot shards + tables);
- current path: the same ids as ``list<int64>`` columns read by the generic multi-hot decoder (``arrow.py`` +
  ``columns.take_batch``), what the loader did before;
- torchrec + Multihot: ``InMemoryBinaryCriteoIterDataPipe`` (arrays in memory, ``shuffle_batches``) followed by
  facebookresearch/dlrm's ``Multihot.convert_to_multi_hot`` (restated below; the same lookup tables, as torch
  int32 tensors), which is how TorchRec's DLRMv2 example feeds multi-hot batches without materializing them.

"rows/CPU-s" divides rows by the CPU time of the whole process (``time.process_time``): throughput per fully used
core, the figure the goal (>= 1 M multi-hot rows/s per core at batch 65536) is about; on a shared machine it is
the meaningful one. Loaders run with one worker thread and batches stay on the CPU.

Example::

    python benchmarks/bench_multihot.py --rows 1048576 --batch-sizes 65536 --compression none,snappy
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.bench_loader import _timed_pass, write_data
from benchmarks.bench_prep import measure
from benchmarks.report import machine_meta, write_results
from data_prep.multihot import MLPERF_NUM_EMBEDDINGS, MLPERF_SIZES
from dlrm_scale.config import DataConfig
from dlrm_scale.data.loader import make_loader
from dlrm_scale.data.manifest import Manifest, sha256_file

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_ROWS_PER_CPU_S = 1_000_000


class Multihot:
    """facebookresearch/dlrm ``torchrec_dlrm/multi_hot.py``'s batch conversion (MIT licence), restated without
    its statistics: per table, ``embedding(ids, table)``, concatenated; offsets of a fixed pooling per table."""

    def __init__(self, tables: list[torch.Tensor], sizes: list[int]) -> None:
        self.tables, self.sizes = tables, sizes

    def convert_to_multi_hot(self, batch):
        from torchrec.datasets.utils import Batch
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        batch_size = len(batch.dense_features)
        ids = batch.sparse_features.values().reshape(-1, batch_size)
        values = torch.cat([torch.nn.functional.embedding(row, table).reshape(-1)
                            for row, table in zip(ids, self.tables)])
        lengths = torch.ones(len(self.sizes) * batch_size, dtype=torch.int32)
        for k, size in enumerate(self.sizes):
            lengths[k * batch_size:(k + 1) * batch_size] = size
        offsets = torch.cumsum(torch.cat((torch.tensor([0]), lengths)), dim=0)
        sparse = KeyedJaggedTensor.from_offsets_sync(keys=batch.sparse_features.keys(), values=values,
                                                     offsets=offsets)
        return Batch(dense_features=batch.dense_features, sparse_features=sparse, labels=batch.labels)


def _list_copy(materialized: Path, out: Path, compression: str) -> DataConfig:
    """The materialized ids as ``list<int64>`` columns under a manifest without the fast path's record."""
    manifest = Manifest.load(materialized)
    sizes = manifest.extra["multihot"]["sizes"]
    for split in manifest.splits.values():
        for shard in split.shards:
            source = pq.ParquetFile(materialized / shard.path)
            (out / shard.path).parent.mkdir(parents=True, exist_ok=True)
            writer = None
            for group in range(source.metadata.num_row_groups):
                table = source.read_row_group(group)
                columns = {}
                for name in table.column_names:
                    column = table.column(name).combine_chunks()
                    if name in manifest.sparse_columns:
                        size = sizes[manifest.sparse_columns.index(name)]
                        ids = np.frombuffer(column.buffers()[1], "<i4", count=len(column) * size)
                        column = pa.ListArray.from_arrays(pa.array(np.arange(len(column) + 1, dtype=np.int32) * size),
                                                          pa.array(ids.astype(np.int64)))
                    columns[name] = column
                table = pa.table(columns)
                writer = writer or pq.ParquetWriter(out / shard.path, table.schema,
                                                    compression=None if compression == "none" else compression)
                writer.write_table(table, row_group_size=table.num_rows)
            writer.close()
            shard.sha256 = sha256_file(out / shard.path)  # the loader verifies every shard against its manifest
    extra = {k: v for k, v in manifest.extra.items() if k != "multihot"}
    dataclasses.replace(manifest, extra=extra).save(out)
    return DataConfig(path=str(out), eval_split="", encoding=manifest.encoding, max_ind_range=manifest.max_ind_range,
                      dense_transform=manifest.dense_transform, multi_hot_sizes=list(sizes), pin_memory=False)


def _ours(data_cfg: DataConfig, name: str, batch_size: int) -> dict:
    cfg = dataclasses.replace(data_cfg, num_workers=1, prefetch_batches=2)
    loader = make_loader(cfg, split="train", batch_size=batch_size, rank=0, world_size=1, seed=0, train=True,
                         device="cpu")
    _timed_pass(loader)  # burn-in: page cache, lookup tables
    count, rows, wall, cpu = _timed_pass(loader)
    if rows != loader.num_rows or count != len(loader):
        raise RuntimeError(f"{name}: {rows} rows in {count} batches, expected {loader.num_rows}")
    return {"loader": name, "batch_size": batch_size, "rows": rows, "wall_s": wall, "cpu_s": cpu}


def _torchrec(npy: Path, tables_dir: Path, rows: list[int], batch_size: int) -> dict:
    from torchrec.datasets.criteo import InMemoryBinaryCriteoIterDataPipe

    pipe = InMemoryBinaryCriteoIterDataPipe(
        stage="train", dense_paths=[str(npy / "day_0_dense.npy")], sparse_paths=[str(npy / "day_0_sparse.npy")],
        labels_paths=[str(npy / "day_0_labels.npy")], batch_size=batch_size, rank=0, world_size=1,
        shuffle_batches=True, hashes=rows)
    tables = [torch.from_numpy(np.load(tables_dir / f"C{f + 1}.npy")) for f in range(len(rows))]
    multihot = Multihot(tables, MLPERF_SIZES)
    converted = (multihot.convert_to_multi_hot(batch) for batch in pipe)
    _timed_pass(multihot.convert_to_multi_hot(batch) for batch in pipe)  # burn-in
    count, total, wall, cpu = _timed_pass(converted)
    return {"loader": "torchrec in-memory binary + Multihot", "batch_size": batch_size, "rows": total,
            "wall_s": wall, "cpu_s": cpu}


def _stage(command: list[str], name: str, rows: int, out: Path) -> dict:
    stats = measure(command)
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"stage": name, "rows": rows, "wall_s": stats["wall_s"], "cpu_s": stats["cpu_s"],
            "peak_rss_mb": stats["peak_rss_mb"], "tree_rss_mb": stats["peak_rss_total_mb"], "disk_mb": disk / 1e6}


def _markdown(stages: list[dict], results: list[dict], meta: dict) -> str:
    lines = [f"# Multi-hot loading, {meta['date']} on {meta['host']}", "",
             f"{meta['rows']:,} rows, MLPerf DLRMv2 sizes ({sum(MLPERF_SIZES)} ids per row), lookup tables of "
             f"min(MLPerf rows, {meta['max_table_rows']:,}) rows ({meta['table_mb']:,.0f} MB), row groups of "
             f"{meta['row_group_rows']:,}; {meta['cpu_count']} CPU cores visible ({meta['cpu']}), load average at "
             f"start {meta['loadavg']}.", "",
             "Stages (`dlrm-scale prep multihot`, --workers 1):", "",
             "| stage | compression | wall s | CPU s | rows/CPU-s | peak RSS MB | disk MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in stages:  # the tables-only stage reads no rows: no per-row rate
        rate = "-" if s["stage"].startswith("tables only") else f"{s['rows'] / s['cpu_s']:,.0f}"
        lines.append(f"| {s['stage']} | {s['compression']} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | {rate} | "
                     f"{s['peak_rss_mb']:,.0f} | {s['disk_mb']:,.0f} |")
    if not results:
        return "\n".join(lines) + "\n"
    lines += ["", "Loaders (one rank, one worker thread, batches on the CPU; one timed epoch after a burn-in):", "",
              "| loader | compression | batch | rows/s (wall) | rows/CPU-s | vs torchrec + Multihot (CPU) |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        ratio = f"{r['vs_torchrec']:.2f}x" if r.get("vs_torchrec") else "-"
        lines.append(f"| {r['loader']} | {r['compression']} | {r['batch_size']} | {r['rows_per_s']:,.0f} | "
                     f"{r['rows_per_cpu_s']:,.0f} | {ratio} |")
    best = max((r for r in results if r["loader"].startswith("ours, materialized")), key=lambda r: r["rows_per_cpu_s"])
    verdict = "met" if best["rows_per_cpu_s"] >= GOAL_ROWS_PER_CPU_S else "not met"
    lines += ["", f"Goal: {GOAL_ROWS_PER_CPU_S:,} multi-hot rows/s per core at batch 65536. Best materialized: "
              f"{best['rows_per_cpu_s']:,.0f} rows/CPU-s ({best['compression']}, batch {best['batch_size']}): "
              f"{verdict} here."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1 << 20)
    parser.add_argument("--batch-sizes", default="65536")
    parser.add_argument("--compression", default="none,snappy", help="comma-separated Parquet codecs")
    parser.add_argument("--max-table-rows", type=int, default=500_000,
                        help="lookup-table rows cap (MLPerf's 40M tables take 23 GB)")
    parser.add_argument("--row-group-rows", type=int, default=131_072)
    parser.add_argument("--stages-only", action="store_true", help="time the prep multihot stages, no loaders")
    parser.add_argument("--data-dir", default="", help="where to write the data (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows_cap = [min(r, args.max_table_rows) for r in MLPERF_NUM_EMBEDDINGS]
    machine = machine_meta()
    stages, results = [], []
    with tempfile.TemporaryDirectory(dir=args.data_dir or None) as tmp:
        tmp = Path(tmp)
        for compression in args.compression.split(","):
            data = tmp / compression
            one_hot = write_data(data, rows=args.rows, shard_rows=4 * args.row_group_rows,
                                 row_group_rows=args.row_group_rows, multi_hot=False, seed=0,
                                 compression=compression)
            base = [sys.executable, "-m", "dlrm_scale.cli", "prep", "multihot", "--input", one_hot.path, "--sizes",
                    "mlperf", "--num-embeddings", ",".join(map(str, rows_cap)), "--compression", compression,
                    "--workers", "1", "--no-progress"]
            lazy, materialized = data / "expand", data / "materialized"
            stages.append({**_stage(base + ["--out", str(lazy), "--no-materialize"], "tables only (expand layout)",
                                    args.rows, lazy), "compression": compression})
            stages.append({**_stage(base + ["--out", str(materialized)], "tables + materialize", args.rows,
                                    materialized), "compression": compression})
            print(json.dumps(stages[-2:]), flush=True)
            if args.stages_only:
                continue
            fast = DataConfig(path=str(materialized), eval_split="", encoding="vocab", max_ind_range=40_000_000,
                              dense_transform="log3", multi_hot_sizes=list(MLPERF_SIZES), pin_memory=False)
            current = _list_copy(materialized, data / "lists", compression)
            for batch_size in batch_sizes:
                reference = {**_torchrec(data / "npy", materialized / "multihot_tables", rows_cap, batch_size),
                             "compression": "in memory"}
                runs = [_ours(fast, "ours, materialized (fast path)", batch_size),
                        _ours(dataclasses.replace(fast, path=str(lazy)), "ours, expanded on the fly", batch_size),
                        _ours(current, "current path (list<int64>)", batch_size)]
                for run in [reference, *runs]:
                    run.setdefault("compression", compression)
                    run["vs_torchrec"] = (run["rows"] / run["cpu_s"]) / (reference["rows"] / reference["cpu_s"])
                    results.append(run)
                    print(f"  {run['loader']} ({run['compression']}), batch {batch_size}: "
                          f"{run['rows'] / run['cpu_s']:,.0f} rows/CPU-s", flush=True)
        table_mb = sum(p.stat().st_size for p in (materialized / "multihot_tables").iterdir()) / 1e6
    for r in results:
        r["rows_per_s"] = r["rows"] / r["wall_s"]
        r["rows_per_cpu_s"] = r["rows"] / r["cpu_s"]
    meta = {**machine, "rows": args.rows, "max_table_rows": args.max_table_rows, "table_mb": table_mb,
            "row_group_rows": args.row_group_rows, "torch": torch.__version__, "pyarrow": pa.__version__}
    markdown = _markdown(stages, results, meta)
    print(markdown)
    write_results(args.out, "multihot_stages" if args.stages_only else "multihot_loader", meta, [*stages, *results],
                  markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
