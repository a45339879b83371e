"""The run's bookkeeping under ``OUT/.prep/``: settings, per-task results, and waiting for other ranks.

::

    run.json                  the settings that shape the output (a rerun with other settings is refused)
    rank-<r>.lock             held by the running process of rank r
    lines/<chunk>.json        line count of a chunk (files whose held-out rows are cut by line number)
    counts/<chunk>.npz        vocab pass 1: value counts of a chunk       + counts/<chunk>.json (its line count)
    vocab/<column>.json       vocab merge of a column is done (arrays in OUT/vocab/<column>/)
    first/<chunk>.npz         contiguous pass 1: each value's first line in a chunk + first/<chunk>.json (lines)
    contiguous/<column>.json  contiguous merge of a column is done (arrays in OUT/contiguous/<column>/)
    sources/<file>.json       size and sha256 of an input file
    convert/<chunk>.jsonl     journal of a chunk's shards (see data_prep.shards)
    convert/<chunk>.json      the chunk is done: its line, row and bad-line counts
    bad/<chunk>.raw|.why      quarantined lines of a chunk, and why (assembled into OUT/quarantine/ at the end)

Every result is written to a temporary name and renamed, so a file that exists is complete. Ranks share the
directory (a shared filesystem across machines); a rank that needs another's results polls for them.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from data_prep.errors import PrepError

STATE_DIR = ".prep"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # one writer per result: a rerun of the task reuses the name
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class State:
    def __init__(self, out_dir: Path) -> None:
        self.out = out_dir
        self.root = out_dir / STATE_DIR

    def lines(self, chunk_id: str) -> Path:
        return self.root / "lines" / f"{chunk_id}.json"

    def counts(self, chunk_id: str) -> Path:
        return self.root / "counts" / f"{chunk_id}.npz"

    def counts_lines(self, chunk_id: str) -> Path:
        return self.root / "counts" / f"{chunk_id}.json"

    def vocab_done(self, column: str) -> Path:
        return self.root / "vocab" / f"{column}.json"

    def first_seen(self, chunk_id: str) -> Path:
        return self.root / "first" / f"{chunk_id}.npz"

    def first_seen_lines(self, chunk_id: str) -> Path:
        return self.root / "first" / f"{chunk_id}.json"

    def contiguous_done(self, column: str) -> Path:
        return self.root / "contiguous" / f"{column}.json"

    def source(self, file_index: int) -> Path:
        return self.root / "sources" / f"{file_index:03d}.json"

    def journal(self, chunk_id: str) -> Path:
        return self.root / "convert" / f"{chunk_id}.jsonl"

    def converted(self, chunk_id: str) -> Path:
        return self.root / "convert" / f"{chunk_id}.json"

    def bad_raw(self, chunk_id: str) -> Path:
        return self.root / "bad" / f"{chunk_id}.raw"

    def bad_why(self, chunk_id: str) -> Path:
        return self.root / "bad" / f"{chunk_id}.why"

    def lock(self, rank: int):
        """Holds ``rank-<rank>.lock`` for the life of the process (the OS drops it even after kill -9), so two runs
        of the same rank cannot write into one directory at once. Returns the open handle to keep."""
        if not (self.root / "run.json").exists() and self.out.exists() and \
                any(p.name != STATE_DIR for p in self.out.iterdir()):
            raise PrepError(f"{self.out}: not empty and not written by `dlrm-scale prep`; choose an empty or new "
                            "--out directory")
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / f"rank-{rank}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise PrepError(f"{self.out}: another `dlrm-scale prep` (rank {rank}) is writing here; wait for it or "
                            "stop it first") from exc
        return handle

    def claim(self, settings: dict[str, Any], rank: int, timeout: float) -> None:
        """Records ``settings`` on the first run (rank 0); on a rerun, or on other ranks, checks they are the
        same and raises :class:`PrepError` listing what differs."""
        path = self.root / "run.json"
        if rank == 0 and not path.exists():
            write_json(path, settings)
            return
        wait_for([path], what="rank 0 to record the run settings", timeout=timeout)
        recorded = read_json(path)
        diffs = [f"{key}: {recorded.get(key)!r} then, {settings.get(key)!r} now"
                 for key in sorted(set(recorded) | set(settings)) if recorded.get(key) != settings.get(key)]
        if diffs:
            raise PrepError(
                f"{self.out} holds a prep run with other settings, which cannot be resumed with these:\n  "
                + "\n  ".join(diffs)
                + "\nRerun with the original arguments to finish it, or use a new --out (or delete this one)."
            )


def wait_for(paths: Iterable[Path], *, what: str, timeout: float, poll: float = 0.5) -> None:
    """Blocks until every path exists (results of other ranks); raises :class:`PrepError` after ``timeout``."""
    missing = [p for p in paths if not p.exists()]
    deadline = time.monotonic() + timeout
    announced = False
    while missing:
        if time.monotonic() > deadline:
            raise PrepError(f"timed out after {timeout:.0f} s waiting for {what} ({len(missing)} results missing, "
                            f"e.g. {missing[0]}); did another rank fail?")
        if not announced:
            print(f"prep: waiting for {what} ({len(missing)} results from other ranks)", flush=True,
                  file=sys.stderr)
            announced = True
        time.sleep(poll)
        missing = [p for p in missing if not p.exists()]
