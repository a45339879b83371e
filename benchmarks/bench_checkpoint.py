"""What verifying a checkpoint costs: hashing its files against ``manifest.json`` before a load.

Writes a checkpoint-shaped file set (``--ranks`` DCP-sized data files of random bytes, ``--gb`` in total, plus a
small ``.metadata``), writes its manifest as :meth:`Checkpointer.save` does, and times
:func:`~dlrm_scale.checkpoint_io.verify_files` over every file (what one process of ``Checkpointer.verify``
does with a world of one; with N ranks each hashes about 1/N of the files). Two timings:

- warm: the files are in the page cache (right after a save, or a load that follows another);
- cold (``--cold``): the page cache dropped first (needs root, and empties the cache of everything else on the
  machine), i.e. a resume on a fresh node, where the verification reads the bytes from disk once and DCP's load
  then reads them again, mostly from the cache.

Example::

    python benchmarks/bench_checkpoint.py --gb 2.5 --ranks 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import machine_meta, write_results
from dlrm_scale.checkpoint_io import read_manifest, verify_files, write_manifest

RESULTS = Path(__file__).resolve().parent / "results"


def write_files(directory: Path, *, total_bytes: int, files: int) -> None:
    rng = np.random.default_rng(0)
    per_file = total_bytes // files
    chunk = 64 << 20
    for rank in range(files):
        with open(directory / f"__{rank}_0.distcp", "wb") as stream:
            left = per_file
            while left > 0:
                stream.write(rng.bytes(min(chunk, left)))
                left -= chunk
    (directory / ".metadata").write_bytes(rng.bytes(20_000))


def _drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _timed_verify(directory: Path) -> float:
    record = read_manifest(directory)
    start = time.perf_counter()
    failure = verify_files(directory, sorted(record["files"]), record)
    elapsed = time.perf_counter() - start
    if failure is not None:
        raise RuntimeError(f"verification failed: {failure}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=2.5, help="total size of the data files (GB, 1e9 bytes)")
    parser.add_argument("--ranks", type=int, default=4, help="data files, one per rank as DCP writes them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also time with the page cache dropped (root)")
    parser.add_argument("--data-dir", default="", help="where to write the files (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.gb <= 0 or args.ranks < 1 or args.repeats < 1:
        parser.error("--gb, --ranks and --repeats must be positive")
    machine = machine_meta()
    with tempfile.TemporaryDirectory(dir=args.data_dir or None) as tmp:
        directory = Path(tmp)
        write_files(directory, total_bytes=int(args.gb * 1e9), files=args.ranks)
        total = sum(p.stat().st_size for p in directory.iterdir())
        start = time.perf_counter()
        write_manifest(directory, step=1, finite=True)
        manifest_s = time.perf_counter() - start
        warm = [_timed_verify(directory) for _ in range(args.repeats)]
        cold = [_timed_verify(directory) for _ in range(args.repeats) if args.cold and _drop_caches()]
    results = [{"case": "save: write manifest (hash all files)", "seconds": manifest_s},
               *({"case": "load: verify, warm page cache", "seconds": s} for s in warm),
               *({"case": "load: verify, cold page cache", "seconds": s} for s in cold)]
    for r in results:
        r["gb_per_s"] = total / 1e9 / r["seconds"]
    meta = {**machine, "bytes": total, "files": args.ranks + 1, "threads": min(args.ranks + 1, os.cpu_count() or 1)}
    lines = [f"# Checkpoint verification, {meta['date']} on {meta['host']}", "",
             f"{total / 1e9:.2f} GB in {meta['files']} files, hashed on {meta['threads']} threads "
             f"({meta['cpu_count']} cores visible, {meta['cpu']}); load average at start {meta['loadavg']}.",
             "", "| case | seconds | GB/s |", "| --- | ---: | ---: |"]
    lines += [f"| {r['case']} | {r['seconds']:.2f} | {r['gb_per_s']:.2f} |" for r in results]
    if args.cold and not cold:
        lines += ["", "Cold-cache timings skipped: dropping the page cache needs root."]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(args.out, f"checkpoint_verify_{args.gb:g}gb", meta, results, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
