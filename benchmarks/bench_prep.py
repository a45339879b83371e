"""Preprocessing throughput and memory: ``dlrm-scale prep criteo`` vs TorchRec's ``tsv_to_npys`` and a pyarrow script.

For each ``--sizes-mb`` it writes synthetic raw Criteo logs of about that size (``data_prep.synth``, the exact raw
TSV layout, with ``--max-vocab`` distinct values per feature), then times, each in a fresh process tree:

- ours: ``dlrm-scale prep criteo --encoding E --max-ind-range M --workers W`` for every ``--workers`` W (the
  whole command: planning, conversion, hashing the input for the manifest, the manifest; E = ``--encoding``);
- torchrec: ``BinaryCriteoUtils.tsv_to_npys`` on the same file (what ``npy_preproc_criteo.py`` runs per day:
  hex -> int, log transform, three ``.npy``), followed for ``--encoding contiguous`` by its
  ``sparse_to_contiguous(frequency_threshold=0)`` (what ``contiguous_preproc_criteo.py`` runs), only up to
  ``--torchrec-max-mb`` because it holds the whole file as Python lists (several GB of RAM per GB of input);
- pyarrow (hash encoding only): ``benchmarks/prep_pyarrow.py``, the straightforward script a competent user would
  write (pyarrow's multi-threaded CSV reader, vectorised dense transform, hex -> int once per distinct value, one
  Parquet file), writing the same numbers as ours (``tests/benchmarks/test_prep_pyarrow.py``) without validation,
  splits or a manifest. The fairer reference; ``--no-pyarrow`` skips it.

Columns: "rows/s" is wall-clock throughput; "rows/CPU-s" divides the rows by the CPU time (user + system) of the
whole process tree, i.e. throughput per fully used core, which is what the goal (>= 300k rows/s per core, the
Terabyte's 4.37 B rows in 30 min on 16 cores) is about and what stays meaningful on a shared machine. "peak RSS"
is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper process that only launches the command: the largest
resident set of any one process of the tree (with W workers, the largest worker or the parent); "tree RSS" is the
largest sum over the whole tree, sampled every 0.2 s from /proc. Flat memory means neither grows with the input.

Plain inputs are cut into ``--chunk-bytes`` chunks (passed to prep), the unit of parallel work, so that W workers
have W chunks to share even on one file.

Example::

    python benchmarks/bench_prep.py --sizes-mb 1000 10000 --workers 1 16 --torchrec-max-mb 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import machine_meta, write_results

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BYTES_PER_ROW = 246  # of data_prep.synth's output, measured; only used to pick the row count for a size
GOAL_ROWS_PER_CORE = 300_000

_MEASURE = """
import json, os, resource, subprocess, sys, time


def tree_rss(root):
    # sum of VmRSS over root and its descendants (Linux /proc), in MB
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as handle:
                rss[int(entry)] = next((int(l.split()[1]) for l in handle if l.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(p, 0) for p in tree) / 1024


start = time.perf_counter()
process = subprocess.Popen(sys.argv[1:])
peak_total = 0.0
while process.poll() is None:
    peak_total = max(peak_total, tree_rss(process.pid))
    time.sleep(0.2)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"returncode": process.returncode, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024, "peak_rss_total_mb": peak_total}))
"""

_TORCHREC = """
import sys
from torchrec.datasets.criteo import BinaryCriteoUtils
BinaryCriteoUtils.tsv_to_npys(sys.argv[1], sys.argv[2] + "/dense.npy", sys.argv[2] + "/sparse.npy",
                              sys.argv[2] + "/labels.npy", dataset_name="criteo_1tb")
if sys.argv[3] == "contiguous":
    BinaryCriteoUtils.sparse_to_contiguous([sys.argv[2] + "/sparse.npy"], sys.argv[2], frequency_threshold=0)
"""


def measure(command: list[str]) -> dict:
    """Runs ``command`` under a fresh wrapper process; wall time, CPU time and peak RSS of its process tree."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, *command], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    if stats["returncode"] != 0:
        raise RuntimeError(f"{command[:4]} exited with {stats['returncode']}:\n{result.stderr[-3000:]}")
    return stats


def write_input(directory: Path, size_mb: float, seed: int, max_vocab: int, base_mb: float) -> tuple[Path, int]:
    """A raw file of about ``size_mb``: generated whole, or (``base_mb`` > 0) a generated ``base_mb`` file
    repeated, which is much faster for big sizes and the same work for the preprocessing."""
    from data_prep import synth

    if base_mb and base_mb < size_mb:
        base, base_rows = write_input(directory, base_mb, seed, max_vocab, 0)
        copies = max(round(size_mb / base_mb), 1)
        path = directory / f"raw_{size_mb:g}mb_tiled{base_mb:g}_seed{seed}_vocab{max_vocab}"
        if not path.exists():
            with open(path, "wb") as out:
                for _ in range(copies):
                    with open(base, "rb") as source:
                        shutil.copyfileobj(source, out, 1 << 24)
        return path, base_rows * copies
    rows = max(int(size_mb * 1e6 / BYTES_PER_ROW), 1)
    path = directory / f"raw_{size_mb:g}mb_seed{seed}_vocab{max_vocab}"
    if not path.exists():
        start = time.perf_counter()
        synth.write_day(path, synth.build_hidden_model(seed, max_vocab), rows, seed, 0, False)
        print(f"wrote {path.name}: {rows:,} rows, {path.stat().st_size / 1e6:,.0f} MB in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    return path, rows


def bench_ours(path: Path, rows: int, scratch: Path, *, workers: int, max_ind_range: int, chunk_bytes: int,
               encoding: str = "hash") -> dict:
    out = scratch / f"prep_w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    stats = measure([sys.executable, "-m", "dlrm_scale.cli", "prep", "criteo", "--input", str(path), "--out",
                     str(out), "--encoding", encoding, "--max-ind-range", str(max_ind_range), "--workers",
                     str(workers), "--chunk-bytes", str(chunk_bytes), "--no-progress"])
    manifest = json.loads((out / "manifest.json").read_text())
    written = sum(split["rows"] for split in manifest["splits"].values())
    if written != rows:
        raise RuntimeError(f"prep wrote {written} rows of {rows}")
    stats["output_mb"] = sum(p.stat().st_size for p in out.rglob("*.parquet")) / 1e6
    shutil.rmtree(out)
    return {"tool": f"ours (dlrm-scale prep, {encoding})", "workers": workers, **stats}


def bench_torchrec(path: Path, rows: int, scratch: Path, encoding: str = "hash") -> dict:
    """TorchRec's conversion of ``path``: ``tsv_to_npys``, then for ``contiguous`` its ``sparse_to_contiguous``."""
    out = scratch / "torchrec"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    stats = measure([sys.executable, "-c", _TORCHREC, str(path), str(out), encoding])
    import numpy as np

    if len(np.load(out / "labels.npy", mmap_mode="r")) != rows:
        raise RuntimeError("torchrec wrote a different number of rows")
    stats["output_mb"] = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    shutil.rmtree(out)
    tool = "torchrec tsv_to_npys" + (" + sparse_to_contiguous" if encoding == "contiguous" else "")
    return {"tool": tool, "workers": 1, **stats}


def bench_pyarrow(path: Path, rows: int, scratch: Path, *, max_ind_range: int) -> dict:
    out = scratch / "pyarrow.parquet"
    stats = measure([sys.executable, str(REPO / "benchmarks" / "prep_pyarrow.py"), "--input", str(path), "--out",
                     str(out), "--max-ind-range", str(max_ind_range)])
    import pyarrow.parquet as pq

    if pq.ParquetFile(out).metadata.num_rows != rows:
        raise RuntimeError("the pyarrow baseline wrote a different number of rows")
    stats["output_mb"] = out.stat().st_size / 1e6
    out.unlink()
    return {"tool": "pyarrow CSV -> hash -> Parquet (benchmarks/prep_pyarrow.py)", "workers": 1, **stats}


def _ratio(result: dict, key: str) -> str:
    return f"{result[key]:.1f}x" if result.get(key) else "-"


def _markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# Preprocessing throughput, {meta['date']} on {meta['host']}",
        "",
        f"Synthetic raw Criteo TSV (`data_prep.synth`, max {meta['max_vocab']:,} values per feature"
        + (f"; inputs above {meta['base_mb']:g} MB repeat a {meta['base_mb']:g} MB file" if meta["base_mb"] else "")
        + f"), {meta.get('encoding', 'hash')} "
        f"encoding with max_ind_range {meta['max_ind_range']:,}, log1p, snappy Parquet, chunks of "
        f"{meta['chunk_bytes'] / 2**20:g} MiB. {meta['cpu_count']} CPU "
        f"cores visible ({meta['cpu']}), load average at start {meta['loadavg']}.",
        "",
        "| input MB | rows | tool | workers | wall s | rows/s (wall) | rows/CPU-s | vs torchrec (CPU) | "
        "vs pyarrow (CPU) | vs pyarrow (wall) | peak RSS MB | tree RSS MB |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r['input_mb']:,.0f} | {r['rows']:,} | {r['tool']} | {r['workers']} | {r['wall_s']:.1f} | "
                     f"{r['rows_per_s']:,.0f} | {r['rows_per_cpu_s']:,.0f} | {_ratio(r, 'vs_torchrec')} | "
                     f"{_ratio(r, 'vs_pyarrow')} | {_ratio(r, 'vs_pyarrow_wall')} | {r['peak_rss_mb']:,.0f} | "
                     f"{r['peak_rss_total_mb']:,.0f} |")
    skipped = [s for s in meta["sizes_mb"] if s > meta["torchrec_max_mb"]]
    if skipped:
        lines += ["", f"TorchRec not run on {', '.join(f'{s:g}' for s in skipped)} MB (--torchrec-max-mb "
                      f"{meta['torchrec_max_mb']:g}: it keeps the whole file in Python lists, so its memory grows "
                      "with the input)."]
    lines += ["", "The pyarrow baseline's CSV reader uses every core, so compare it per CPU-second (a core's worth of "
                  "work) as well as by wall time on this machine.",
              "", f"Goal: {GOAL_ROWS_PER_CORE:,} rows/s per core in hash mode (the rows/CPU-s column)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[50.0],
                        help="input sizes in MB (the issue's figures are 1000 and 10000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="our --workers values to time")
    parser.add_argument("--encoding", choices=["hash", "contiguous", "vocab"], default="hash",
                        help="our prep --encoding (contiguous: TorchRec's reference adds sparse_to_contiguous)")
    parser.add_argument("--max-ind-range", type=int, default=40_000_000, help="hash modulo (MLPerf's 40M)")
    parser.add_argument("--max-vocab", type=int, default=100_000, help="distinct values per feature in the input")
    parser.add_argument("--chunk-bytes", type=int, default=1 << 28, help="prep --chunk-bytes (unit of parallel work)")
    parser.add_argument("--torchrec-max-mb", type=float, default=250.0,
                        help="largest input TorchRec converts (its memory grows with the input); 0 = never")
    parser.add_argument("--base-mb", type=float, default=0.0,
                        help="build bigger inputs by repeating a generated file of this size (0: generate whole)")
    parser.add_argument("--no-pyarrow", action="store_true", help="skip the pyarrow baseline (hash encoding only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="", help="where inputs and outputs go (default: a temporary folder)")
    parser.add_argument("--keep-inputs", action="store_true", help="keep the generated inputs in --data-dir")
    parser.add_argument("--out", default=str(RESULTS), help="where the JSON and Markdown results go")
    args = parser.parse_args(argv)

    scratch_parent = Path(args.data_dir) if args.data_dir else None
    if scratch_parent:
        scratch_parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **machine_meta(),
        "sizes_mb": args.sizes_mb, "encoding": args.encoding, "max_ind_range": args.max_ind_range, "max_vocab": args.max_vocab,
        "torchrec_max_mb": args.torchrec_max_mb, "chunk_bytes": args.chunk_bytes, "base_mb": args.base_mb, "python": sys.version.split()[0],
    }
    results = []
    scratch = Path(tempfile.mkdtemp(dir=scratch_parent))
    try:
        for size in args.sizes_mb:
            path, rows = write_input(Path(args.data_dir) if args.keep_inputs else scratch, size, args.seed,
                                     args.max_vocab, args.base_mb)
            input_mb = path.stat().st_size / 1e6
            reference = None
            if size <= args.torchrec_max_mb:
                reference = {**bench_torchrec(path, rows, scratch, args.encoding), "rows": rows, "input_mb": input_mb}
                results.append(reference)
                print(json.dumps(reference), flush=True)
            baseline = None
            if not args.no_pyarrow and args.encoding == "hash":
                baseline = {**bench_pyarrow(path, rows, scratch, max_ind_range=args.max_ind_range), "rows": rows,
                            "input_mb": input_mb}
                if reference:
                    baseline["vs_torchrec"] = reference["cpu_s"] / baseline["cpu_s"]
                results.append(baseline)
                print(json.dumps(baseline), flush=True)
            for workers in args.workers:
                result = {**bench_ours(path, rows, scratch, workers=workers, max_ind_range=args.max_ind_range,
                                       chunk_bytes=args.chunk_bytes, encoding=args.encoding),
                          "rows": rows, "input_mb": input_mb}
                if reference:
                    result["vs_torchrec"] = (rows / result["cpu_s"]) / (rows / reference["cpu_s"])
                if baseline:
                    result["vs_pyarrow"] = baseline["cpu_s"] / result["cpu_s"]
                    result["vs_pyarrow_wall"] = baseline["wall_s"] / result["wall_s"]
                results.append(result)
                print(json.dumps(result), flush=True)
            if not args.keep_inputs:
                path.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for r in results:
        r["rows_per_s"] = r["rows"] / r["wall_s"]
        r["rows_per_cpu_s"] = r["rows"] / r["cpu_s"]
    import pyarrow

    meta["pyarrow"] = pyarrow.__version__
    markdown = _markdown(results, meta)
    print(markdown)
    sizes = "-".join(f"{s:g}" for s in args.sizes_mb)
    write_results(args.out, f"prep_{args.encoding}_{sizes}mb", meta, results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
