"""Loader throughput: our Parquet loader vs TorchRec's in-memory binary Criteo loader, on the same rows.

Writes N synthetic rows (Terabyte table sizes) twice: as Parquet shards + manifest (what ``dlrm-scale prep``
produces) and as the ``.npy`` triple ``InMemoryBinaryCriteoIterDataPipe`` reads. Then, for each batch size, times
one full epoch of each loader on one rank, after an untimed burn-in pass:

- ours: ``make_loader(..., train=True)``: row groups read and decoded from the files each epoch (page cache after
  the burn-in), shuffled (row-group order + ``shuffle_buffer_batches`` window), prefetched on ``--workers``
  threads;
- torchrec: ``InMemoryBinaryCriteoIterDataPipe`` (``shuffle_batches=True``) over arrays already in memory (its
  load time is reported separately, not counted). Its sparse ``.npy`` holds int64 ids, so both loaders hand out
  the same tensors (TorchRec's preprocessing script writes int32 after remapping to contiguous ids).

``--device cuda`` (the default where CUDA is available) times what training sees on a GPU node: batches gathered
into pinned buffers and copied to the GPU on a side stream; without CUDA the batches stay in pageable host memory.

Checks (``--checks compare``, the default): each single-process configuration is also timed with the loader's
trust checks off (``data.verify=false``, ``data.check_values=false``), and as the first epoch of a process, which
also hashes every shard (sha256, once per process); the plain "ours" line is a later epoch with the defaults
(value checks on, shards already verified). Each variant keeps the best of ``--repeats`` epochs, run in turn, and
the Markdown ends with the cost of each as a fraction of the checks-off rate.

Per node: ``--ranks 1,8`` also runs each configuration as N processes at once, rank r of N reading its disjoint
share of the row groups (as N training ranks on one node do), started together after a barrier; the node's rate is
all ranks' rows over the time from the first start to the last finish. One process per rank, each with
``--workers`` threads, is how a multi-GPU node runs the loader (one training process per GPU).

"rows/s" is wall-clock throughput of the whole process on this machine; "rows/CPU-s" divides rows by the CPU time
the process used in all its threads (``time.process_time``), i.e. throughput per fully used core. The GPU-node
goal (2.5 M rows/s on 16 cores) needs about 156 k rows/CPU-s if scaling were linear; it is measured on that node.

Example::

    python benchmarks/bench_loader.py --rows 1000000 --batch-sizes 8192,16384,32768,65536 --workers 1,2
    python benchmarks/bench_loader.py --rows 8000000 --ranks 1,8,16 --workers 1,2   # a whole node
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from queue import Empty

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.report import machine_meta, write_results
from dlrm_scale.config import DataConfig, dense_feature_names, load_config, sparse_feature_names
from dlrm_scale.data import plan
from dlrm_scale.data.columns import Columns
from dlrm_scale.data.loader import make_loader
from dlrm_scale.data.manifest import Manifest, Shard, Split, sha256_file
from dlrm_scale.data.parquet import forget_verified_shards
from dlrm_scale.data.synthetic import SyntheticSource, SyntheticSpec

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_ROWS_PER_S = 2_500_000
GOAL_CORES = 16


def _table(columns: Columns, dense_names: list[str], sparse_names: list[str]) -> pa.Table:
    data = {"label": pa.array(columns.labels.astype(np.int8))}
    for j, name in enumerate(dense_names):
        data[name] = pa.array(columns.dense[:, j])
    for f, name in enumerate(sparse_names):
        if columns.ids is not None:
            data[name] = pa.array(columns.ids[f])
        else:
            bag = columns.bags[f]
            data[name] = pa.ListArray.from_arrays(pa.array(bag.offsets - bag.offsets[0]),
                                                  pa.array(bag.values[bag.offsets[0]:bag.offsets[-1]]))
    return pa.table(data)


def write_data(out: Path, *, rows: int, shard_rows: int, row_group_rows: int, multi_hot: bool, seed: int,
               compression: str = "snappy") -> DataConfig:
    """Parquet shards + manifest under ``out/parquet`` and (one-hot) ``.npy`` files under ``out/npy``."""
    preset = load_config("mlperf_dcnv2" if multi_hot else "criteo_terabyte")
    cards = preset.data.cardinalities
    spec = SyntheticSpec(cardinalities=cards, hot_sizes=preset.data.multi_hot_sizes or [1] * len(cards),
                         alpha=preset.data.synthetic_alpha, num_dense=13, seed=seed)
    source = SyntheticSource(spec, split="train", num_rows=rows)
    dense_names, sparse_names = dense_feature_names(13), sparse_feature_names(len(cards))
    parquet_dir, npy_dir = out / "parquet", out / "npy"
    (parquet_dir / "train").mkdir(parents=True, exist_ok=True)
    npy_dir.mkdir(parents=True, exist_ok=True)
    dense_all = np.empty((rows, 13), np.float32)
    sparse_all = None if multi_hot else np.empty((rows, len(cards)), np.int64)
    labels_all = np.empty((rows, 1), np.int32)
    shards, writer, shard_index, in_shard, done = [], None, 0, 0, 0
    for group in range(len(source.group_rows)):
        block = source.read(group)
        dense_all[done:done + len(block)] = block.dense
        labels_all[done:done + len(block), 0] = block.labels
        if sparse_all is not None:
            sparse_all[done:done + len(block)] = block.ids.T
        done += len(block)
        start = 0
        while start < len(block):
            if writer is None:
                path = f"train/part-{shard_index:05d}.parquet"
                writer = pq.ParquetWriter(parquet_dir / path, _table(block.slice(0, 1), dense_names, sparse_names).schema,
                                          compression=compression)
                shards.append(Shard(path=path, rows=0, row_groups=0, sha256="0" * 64))
            take = min(len(block) - start, shard_rows - in_shard, row_group_rows)
            writer.write_table(_table(block.slice(start, start + take), dense_names, sparse_names),
                               row_group_size=take)
            shards[-1].rows += take
            shards[-1].row_groups += 1
            start += take
            in_shard += take
            if in_shard == shard_rows:
                writer.close()
                writer, in_shard, shard_index = None, 0, shard_index + 1
    if writer is not None:
        writer.close()
    for shard in shards:
        shard.sha256 = sha256_file(parquet_dir / shard.path)
    Manifest(dataset="synthetic-terabyte", encoding="vocab", max_ind_range=40_000_000, min_frequency=1,
             dense_transform="log3", dense_columns=dense_names, sparse_columns=sparse_names, cardinalities=cards,
             multi_hot=multi_hot, splits={"train": Split(rows=rows, shards=shards)}).save(parquet_dir)
    np.save(npy_dir / "day_0_dense.npy", dense_all)
    np.save(npy_dir / "day_0_labels.npy", labels_all)
    if sparse_all is not None:
        np.save(npy_dir / "day_0_sparse.npy", sparse_all)
    return DataConfig(path=str(parquet_dir), eval_split="", encoding="vocab", max_ind_range=40_000_000,
                      dense_transform="log3", multi_hot_sizes=preset.data.multi_hot_sizes, pin_memory=True)


def _timed_pass(batches) -> tuple[int, int, float, float]:
    """(batches, real rows, wall s, CPU s of the whole process) of one pass over ``batches``."""
    wall, cpu = time.perf_counter(), time.process_time()
    count, rows = 0, 0
    for batch in batches:
        count += 1
        rows += int(batch.mask.sum()) if hasattr(batch, "mask") else batch.labels.shape[0]
    return count, rows, time.perf_counter() - wall, time.process_time() - cpu


def _ours_record(data_cfg: DataConfig, *, batch_size: int, workers: int, prefetch: int, rank: int,
                 world_size: int, device: str, barrier=None) -> dict:
    """One rank's timed epoch; with ``barrier``, the clock starts only once every rank has opened its loader."""
    cfg = dataclasses.replace(data_cfg, num_workers=workers, prefetch_batches=prefetch)
    start = time.perf_counter()
    loader = make_loader(cfg, split="train", batch_size=batch_size, rank=rank, world_size=world_size, seed=0,
                         train=True, device=torch.device(device))
    open_s = time.perf_counter() - start
    if barrier is not None:
        barrier.wait()
    began = time.monotonic()
    count, rows, wall, cpu = _timed_pass(loader)
    first, end = plan.rank_range(loader.num_rows, rank=rank, world_size=world_size)
    if rows != end - first or count != len(loader):
        raise RuntimeError(f"rank {rank}/{world_size}: {rows} rows in {count} batches, expected "
                           f"{end - first} in {len(loader)}")
    return {"rows": rows, "split_rows": loader.num_rows, "wall_s": wall, "cpu_s": cpu, "open_s": open_s, "began": began,
            "ended": time.monotonic()}


CHECKS_FIRST = ", checks on, first epoch (+ sha256)"
CHECKS = {  # label suffix -> (data.verify, data.check_values, forget verified shards first)
    "": (True, True, False),
    ", checks off": (False, False, False),
    CHECKS_FIRST: (True, True, True),
}


def bench_ours(data_cfg: DataConfig, *, batch_size: int, workers: int, prefetch: int, device: str = "cpu",
               checks: str = "") -> dict:
    verify, check_values, cold = CHECKS[checks]
    if cold:
        forget_verified_shards()
    record = _ours_record(dataclasses.replace(data_cfg, verify=verify, check_values=check_values),
                          batch_size=batch_size, workers=workers, prefetch=prefetch, rank=0, world_size=1,
                          device=device)
    return {"loader": f"ours (parquet, shuffled){checks}", "batch_size": batch_size, "workers": workers,
            "ranks": 1, "device": device, "checks": {"": "on", ", checks off": "off"}.get(checks, checks),
            **{k: record[k] for k in ("rows", "wall_s", "cpu_s", "open_s")}}


def _rank_main(queue, barrier, kwargs: dict) -> None:
    """A rank's process: its own loader (and thread pool), as in a training job; reports or forwards the error."""
    torch.set_num_threads(1)
    try:
        queue.put(_ours_record(barrier=barrier, **kwargs))
    except BaseException as err:  # noqa: BLE001 - the parent reports it
        barrier.abort()
        queue.put({"error": f"rank {kwargs['rank']}: {type(err).__name__}: {err}"})


def bench_ours_ranks(data_cfg: DataConfig, *, batch_size: int, workers: int, prefetch: int, ranks: int,
                     device: str = "cpu") -> dict:
    """``ranks`` processes, rank r of ``ranks`` each, loading at the same time: the node's throughput."""
    context = mp.get_context("spawn")
    queue, barrier = context.Queue(), context.Barrier(ranks)
    processes = [context.Process(target=_rank_main, args=(queue, barrier, {
        "data_cfg": data_cfg, "batch_size": batch_size, "workers": workers, "prefetch": prefetch, "rank": rank,
        "world_size": ranks, "device": device})) for rank in range(ranks)]
    for process in processes:
        process.start()
    records: list[dict] = []
    while len(records) < ranks:
        try:
            records.append(queue.get(timeout=5))
        except Empty:
            crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if crashed:  # died without reporting (killed, out of memory): do not wait for it forever
                for process in processes:
                    process.terminate()
                raise RuntimeError(f"a rank process exited with code {crashed[0]} before reporting") from None
    for process in processes:
        process.join()
    errors = [r["error"] for r in records if "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    if sum(r["rows"] for r in records) != records[0]["split_rows"]:
        raise RuntimeError(f"{ranks} ranks read {sum(r['rows'] for r in records)} rows of "
                           f"{records[0]['split_rows']}")
    return {"loader": f"ours (parquet, shuffled), {ranks} processes", "batch_size": batch_size,
            "workers": workers, "ranks": ranks, "device": device, "rows": sum(r["rows"] for r in records),
            "wall_s": max(r["ended"] for r in records) - min(r["began"] for r in records),
            "cpu_s": sum(r["cpu_s"] for r in records), "open_s": max(r["open_s"] for r in records)}


def bench_torchrec(npy_dir: Path, *, batch_size: int, hashes: list[int]) -> dict:
    """``hashes``: the tables' sizes, as TorchRec's ``dlrm_main.py`` passes them (ids taken modulo them once, at
    load; torchrec 1.6 requires them)."""
    from torchrec.datasets.criteo import InMemoryBinaryCriteoIterDataPipe

    start = time.perf_counter()
    pipe = InMemoryBinaryCriteoIterDataPipe(
        stage="train", dense_paths=[str(npy_dir / "day_0_dense.npy")], sparse_paths=[str(npy_dir / "day_0_sparse.npy")],
        labels_paths=[str(npy_dir / "day_0_labels.npy")], batch_size=batch_size, rank=0, world_size=1,
        shuffle_batches=True, hashes=hashes)
    open_s = time.perf_counter() - start
    count, rows, wall, cpu = _timed_pass(pipe)
    assert count == len(pipe)
    return {"loader": "torchrec in-memory binary (shuffle_batches)", "batch_size": batch_size, "workers": 1,
            "ranks": 1, "device": "cpu", "rows": rows, "wall_s": wall, "cpu_s": cpu, "open_s": open_s}


def _markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# Loader throughput, {meta['date']} on {meta['host']}",
        "",
        f"{meta['rows']:,} rows ({meta['layout']}), row groups of {meta['row_group_rows']:,}, "
        f"{meta['compression']} Parquet pages, "
        f"{meta['cpu_count']} CPU cores visible ({meta['cpu']}), load average at start {meta['loadavg']}. "
        "One timed epoch per line after a burn-in pass.",
        "",
        "| loader | device | batch | ranks | threads per rank | rows/s (wall) | rows/CPU-s | vs torchrec (wall) "
        "| open s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ratio = f"{r['vs_torchrec']:.2f}x" if r.get("vs_torchrec") else "-"
        lines.append(f"| {r['loader']} | {r['device']} | {r['batch_size']} | {r['ranks']} | {r['workers']} | "
                     f"{r['rows_per_s']:,.0f} | {r['rows_per_cpu_s']:,.0f} | {ratio} | {r['open_s']:.2f} |")
    costs = _check_costs(results)
    if costs:
        lines += ["", "Cost of the trust checks (fraction of the checks-off rows/s lost, same batch and threads):",
                  ""]
        lines += [f"- batch {batch}, {workers} thread(s): {cost}" for (batch, workers), cost in costs.items()]
    parts = meta.get("check_breakdown")
    if parts:
        decode = parts["decode_cpu_s"]
        lines += ["", f"CPU time on one thread over all {parts['rows']:,} rows (best of {meta['repeats']}): decoding "
                  f"the row groups {decode:.3f} s; value checks {parts['check_values_cpu_s']:.3f} s "
                  f"({parts['check_values_cpu_s'] / decode:.1%} of decoding); sha256 of the "
                  f"{parts['shard_bytes'] / 1e6:,.0f} MB of shards {parts['sha256_cpu_s']:.3f} s "
                  f"({parts['sha256_cpu_s'] / decode:.1%} of one decoding pass, "
                  f"{parts['shard_bytes'] / 1e9 / parts['sha256_cpu_s']:.2f} GB/s; paid once per process)."]
    best = max((r for r in results if r["loader"].startswith("ours")), key=lambda r: r["rows_per_s"])
    verdict = "met" if best["rows_per_s"] >= GOAL_ROWS_PER_S else "not met"
    lines += ["", f"Goal on the GPU node: {GOAL_ROWS_PER_S:,} rows/s on {GOAL_CORES} cores. Best here: "
              f"{best['rows_per_s']:,.0f} rows/s ({best['ranks']} process(es) x {best['workers']} thread(s), batch "
              f"{best['batch_size']}, batches to {best['device']}) on {meta['cpu_count']} cores: {verdict} on this "
              "machine."]
    return "\n".join(lines) + "\n"


def check_breakdown(data_cfg: DataConfig, repeats: int) -> dict:
    """CPU seconds (best of ``repeats``, one thread) to decode every row group of the train split, to run the
    value checks on the decoded groups, and to hash every shard: the checks' cost without the noise of a
    pipelined, multi-threaded epoch."""
    from dlrm_scale.data.columns import check_values
    from dlrm_scale.data.parquet import ParquetSource

    manifest = Manifest.load(data_cfg.path)
    source = ParquetSource(data_cfg.path, manifest, "train", verify=False, check_values=False)
    checks = {"cardinalities": manifest.cardinalities, "dense_names": manifest.dense_columns,
              "sparse_names": manifest.sparse_columns, "label_name": manifest.label_column, "labels": (0.0, 1.0)}

    def best(function) -> float:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            function()
            times.append(time.process_time() - start)
        return min(times)

    groups = [source.read(g) for g in range(len(source.group_rows))]
    decode = best(lambda: [source.read(g) for g in range(len(source.group_rows))])
    values = best(lambda: [check_values(c, where="", **checks) for c in groups])
    hashing = best(lambda: [sha256_file(p) for p in source.paths])
    return {"rows": int(source.group_rows.sum()), "decode_cpu_s": decode, "check_values_cpu_s": values,
            "sha256_cpu_s": hashing, "shard_bytes": sum(p.stat().st_size for p in source.paths)}


def _check_costs(results: list[dict]) -> dict[tuple[int, int], str]:
    by_key: dict[tuple[int, int], dict[str, dict]] = {}
    for r in results:
        if r["loader"].startswith("ours") and r["ranks"] == 1:
            by_key.setdefault((r["batch_size"], r["workers"]), {})[r["checks"]] = r
    costs = {}
    for key, runs in by_key.items():
        off = runs.get("off")
        if off is None:
            continue
        parts = [f"{name} {1 - runs[label]['rows_per_s'] / off['rows_per_s']:.1%}"
                 for label, name in (("on", "value checks"), (CHECKS_FIRST, "first epoch incl. sha256"))
                 if label in runs]
        costs[key] = "; ".join(parts)
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-sizes", default="8192,16384,32768,65536")
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}",
                        help="comma-separated loader thread counts (per rank)")
    parser.add_argument("--ranks", default="1",
                        help="comma-separated process counts: N > 1 runs N ranks at once, one process each")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where batches go: cuda (pinned buffers, side-stream copies) or cpu")
    parser.add_argument("--prefetch", type=int, default=4, help="data.prefetch_batches")
    parser.add_argument("--shard-rows", type=int, default=500_000)
    parser.add_argument("--row-group-rows", type=int, default=131_072)
    parser.add_argument("--multi-hot", action="store_true", help="MLPerf DCNv2 pooling factors (ours only)")
    parser.add_argument("--compression", default="snappy", help="Parquet codec of the shards (snappy, zstd, none)")
    parser.add_argument("--data-dir", default="", help="where to write the data (default: a temporary folder)")
    parser.add_argument("--checks", choices=["compare", "on"], default="compare",
                        help="compare: also time each single-process run with the checks off and as a first epoch")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per checks variant; the best is kept")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    workers = sorted({int(w) for w in args.workers.split(",")})
    ranks = sorted({int(n) for n in args.ranks.split(",")})
    if min(batch_sizes + workers + ranks) < 1:
        parser.error("--batch-sizes, --workers and --ranks take positive integers")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")

    machine = machine_meta()  # before the runs: its load average is the one at the start
    with tempfile.TemporaryDirectory(dir=args.data_dir or None) as tmp:
        start = time.perf_counter()
        data_cfg = write_data(Path(tmp), rows=args.rows, shard_rows=args.shard_rows,
                              row_group_rows=args.row_group_rows, multi_hot=args.multi_hot, seed=0,
                              compression=args.compression)
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - start:.1f} s")
        bench_ours(data_cfg, batch_size=batch_sizes[0], workers=workers[-1], prefetch=args.prefetch,
                   device=args.device)  # burn-in
        hashes = list(Manifest.load(data_cfg.path).cardinalities)
        results = []
        for batch_size in batch_sizes:
            reference = None
            if not args.multi_hot:
                bench_torchrec(Path(tmp) / "npy", batch_size=batch_size, hashes=hashes)  # burn-in: np.load, cache
                reference = bench_torchrec(Path(tmp) / "npy", batch_size=batch_size, hashes=hashes)
                results.append(reference)
            for num_ranks in ranks:
                for count in workers:
                    kwargs = {"batch_size": batch_size, "workers": count, "prefetch": args.prefetch,
                              "device": args.device}
                    compare = num_ranks == 1 and args.checks == "compare"
                    for checks in [", checks off", "", CHECKS_FIRST] if compare else [""]:
                        if num_ranks > 1:
                            results.append(bench_ours_ranks(data_cfg, ranks=num_ranks, **kwargs))
                        else:  # the comparison keeps the best of --repeats epochs of each variant
                            runs = [bench_ours(data_cfg, checks=checks, **kwargs)
                                    for _ in range(args.repeats if compare else 1)]
                            results.append(min(runs, key=lambda r: r["wall_s"]))
                        print(f"  {results[-1]['loader']}: batch {batch_size}, {count} threads: "
                              f"{results[-1]['rows'] / results[-1]['wall_s']:,.0f} rows/s", flush=True)
                        if reference:
                            results[-1]["vs_torchrec"] = reference["wall_s"] / results[-1]["wall_s"]
        breakdown = check_breakdown(data_cfg, args.repeats) if args.checks == "compare" else None
    for r in results:
        r["rows_per_s"] = r["rows"] / r["wall_s"]
        r["rows_per_cpu_s"] = r["rows"] / r["cpu_s"]
    meta = {
        **machine,
        "check_breakdown": breakdown,
        "repeats": args.repeats,
        "rows": args.rows,
        "row_group_rows": args.row_group_rows,
        "compression": args.compression,
        "layout": "multi-hot, MLPerf DCNv2 pooling" if args.multi_hot else "one-hot, Terabyte table sizes",
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
        "cuda": torch.cuda.is_available(),
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    markdown = _markdown(results, meta)
    print(markdown)
    layout = "multihot" if args.multi_hot else "onehot"
    device = args.device.split(":")[0]
    write_results(args.out, f"loader_{layout}_{args.compression}" + ("" if device == "cpu" else f"_{device}"), meta,
                  results, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
