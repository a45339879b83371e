"""Parquet shards of one chunk and split, written crash-safely, with a journal that makes them resumable.

A chunk task writes its rows of split S as ``OUT/S/part-<chunk id>-<seq>.parquet``: ``rows_per_shard`` rows
each, the last one holding the remainder, in row groups of ``row_group_rows``. Row groups are cut at fixed row
counts from contiguous arrays, so a shard's bytes depend only on its rows (not on how input blocks fell).

Each shard is written to a temporary name, fsynced, renamed into place, and only then appended (fsynced) to the
chunk's journal ``OUT/.prep/convert/<chunk id>.jsonl``; a separate marker (``<chunk id>.json``) written after
the last shard marks the chunk complete. After a kill -9 a rerun redoes the unfinished chunks only; there, shards already journaled whose
file still has the journaled checksum are not encoded or written again (their rows are parsed and dropped).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.schema import OUTPUT_SCHEMA
from dlrm_scale.data.manifest import sha256_file  # the digest the loader verifies shards with


class Journal:
    """Append-only JSON-lines record of a chunk's finished shards (a torn last line, from a kill, is ignored)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shards: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    self.shards.append(json.loads(line))
                except json.JSONDecodeError:
                    break

    def restart(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Starts the chunk over; returns the shards to reuse, ``(split, seq) -> record``, and rewrites the
        journal with just those (dropping a torn tail)."""
        reusable = {}
        for record in self.shards:
            path = self.path.parents[2] / record["path"]
            if path.is_file() and sha256_file(path) == record["sha256"]:
                reusable[(record["split"], record["seq"])] = record
        self.shards = list(reusable.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.shards))
        os.replace(tmp, self.path)
        return reusable

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.shards.append(record)


class ShardWriter:
    """Rows of one split from one chunk, in order, to fixed-size shards (see the module docstring)."""

    def __init__(self, *, out_dir: Path, split: str, chunk_id: str, rows_per_shard: int, row_group_rows: int,
                 compression: str, journal: Journal, reusable: dict[tuple[str, int], dict[str, Any]]) -> None:
        self.out_dir = out_dir
        self.split = split
        self.chunk_id = chunk_id
        self.rows_per_shard = rows_per_shard
        self.row_group_rows = min(row_group_rows, rows_per_shard)
        self.compression = None if compression == "none" else compression
        self.journal = journal
        self.reusable = reusable
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._seq = 0
        self._shard_rows = 0
        self._shard_groups = 0
        self._writer: pq.ParquetWriter | None = None
        (out_dir / split).mkdir(parents=True, exist_ok=True)

    def _relative(self, seq: int) -> str:
        return f"{self.split}/part-{self.chunk_id}-{seq:05d}.parquet"

    def _tmp(self, seq: int) -> Path:
        final = self.out_dir / self._relative(seq)
        return final.with_name(f".{final.name}.tmp")

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        self._drain(final=False)

    def close(self) -> None:
        self._drain(final=True)
        if self._shard_rows:
            self._commit()

    def _drain(self, final: bool) -> None:
        while self._pending_rows:
            size = min(self.row_group_rows, self.rows_per_shard - self._shard_rows)
            if self._pending_rows < size and not final:
                return
            take = min(size, self._pending_rows)
            pending = pa.concat_tables(self._pending)
            group = pending.slice(0, take)
            rest = pending.slice(take)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows -= take
            self._write_group(group)
            if self._shard_rows == self.rows_per_shard:
                self._commit()

    def _write_group(self, group: pa.Table) -> None:
        if (self.split, self._seq) not in self.reusable:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._tmp(self._seq), OUTPUT_SCHEMA, compression=self.compression)
            self._writer.write_table(group.combine_chunks(), row_group_size=group.num_rows)
        self._shard_rows += group.num_rows
        self._shard_groups += 1

    def _commit(self) -> None:
        reused = self.reusable.get((self.split, self._seq))
        if reused is not None:
            if reused["rows"] != self._shard_rows or reused["row_groups"] != self._shard_groups:
                raise RuntimeError(f"{reused['path']}: journal says {reused['rows']} rows, the rerun cut "
                                   f"{self._shard_rows}; the input changed during the run")
        else:
            self._writer.close()
            self._writer = None
            tmp = self._tmp(self._seq)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            record = {"split": self.split, "seq": self._seq, "path": self._relative(self._seq),
                      "rows": self._shard_rows, "row_groups": self._shard_groups, "sha256": sha256_file(tmp)}
            os.replace(tmp, self.out_dir / record["path"])
            self.journal.append(record)
        self._seq += 1
        self._shard_rows = 0
        self._shard_groups = 0
