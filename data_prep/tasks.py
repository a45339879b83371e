"""The units of work a run fans out (over processes with ``--workers``, over machines with ``--rank``).

Each task reads its inputs, writes its result under ``OUT/.prep/`` (see :mod:`data_prep.state`) with an atomic
rename, and is skipped by a rerun once that result exists. Tasks are picklable dataclasses whose ``run`` takes
the run's :class:`~data_prep.config.PrepConfig` and a progress sink.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_prep import contiguous
from data_prep.chunks import Chunk, iter_blocks
from data_prep.config import PrepConfig
from data_prep.errors import PrepError
from data_prep.layout import InputFile
from data_prep.parse import BadLine, BlockParser, ParsedBlock, count_lines, preview
from data_prep.schema import OUTPUT_SCHEMA, SPARSE, UNLABELED
from data_prep.shards import Journal, ShardWriter, sha256_file
from data_prep.splits import Routing
from data_prep.state import State, write_json
from data_prep.transform import reduce_hash, transform_dense
from data_prep.vocab import ValueCounter, Vocabulary, merge_column, save_column

VOCAB_DIR = "vocab"
CONTIGUOUS_DIR = "contiguous"


class ProgressSink:
    """Where tasks report input bytes consumed and rows produced (shared counters across processes)."""

    def __init__(self, nbytes, rows) -> None:
        self._bytes = nbytes
        self._rows = rows

    def add_bytes(self, count: int) -> None:
        with self._bytes.get_lock():
            self._bytes.value += count

    def add_rows(self, count: int) -> None:
        with self._rows.get_lock():
            self._rows.value += count


def lines_before(source: InputFile, chunk: Chunk) -> int:
    """Data lines of ``source`` before ``chunk`` (counted from the file; only needed to name a bad line)."""
    if chunk.start <= source.data_start:
        return 0
    lines = 0
    with open(source.path, "rb") as handle:
        handle.seek(source.data_start)
        remaining = chunk.start - source.data_start
        while remaining > 0:
            block = handle.read(min(1 << 24, remaining))
            if not block:
                break
            lines += block.count(b"\n")
            remaining -= len(block)
    return lines


class BadLineSink:
    """Raises on the first bad line (``error``), or appends them to the chunk's quarantine files (``skip``)."""

    def __init__(self, *, policy: str, state: State, source: InputFile, chunk: Chunk, first_line: int | None,
                 quarantine: bool) -> None:
        self.policy = policy
        self.source = source
        self.chunk = chunk
        self.first_line = first_line
        self.count = 0
        self._raw_path = state.bad_raw(chunk.id)
        self._why_path = state.bad_why(chunk.id)
        self._quarantine = quarantine
        self._raw = self._why = None
        if quarantine:
            for path in (self._raw_path, self._why_path):
                path.unlink(missing_ok=True)

    def where(self, line: int) -> str:
        """``path:line`` (1-based physical line) of the chunk's 0-based data line ``line``."""
        first = self.first_line if self.first_line is not None else lines_before(self.source, self.chunk)
        return f"{self.source.path}:{self.source.first_data_line + first + line}"

    def add(self, line0: int, bad: list[BadLine]) -> None:
        if not bad:
            return
        if self.policy == "error":
            first = bad[0]
            raise PrepError(f"{self.where(line0 + first.line)}: {first.reason}\n  line: {preview(first.raw)!r}\n"
                            "  (--on-bad-line skip writes bad lines to OUT/quarantine/ and goes on)")
        self.count += len(bad)
        if not self._quarantine:
            return
        if self._raw is None:
            self._raw_path.parent.mkdir(parents=True, exist_ok=True)
            self._raw = open(self._raw_path, "wb")
            self._why = open(self._why_path, "w")
        for item in bad:
            self._raw.write(item.raw + b"\n")
            self._why.write(f"{line0 + item.line}\t{item.reason.replace(chr(10), ' ')}\n")

    def close(self) -> None:
        for handle in (self._raw, self._why):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()


@lru_cache(maxsize=2)
def _vocabulary(out: str) -> Vocabulary:
    return Vocabulary(Path(out) / VOCAB_DIR)


@lru_cache(maxsize=2)
def _contiguous_ids(out: str) -> contiguous.ContiguousIds:
    return contiguous.ContiguousIds(Path(out) / CONTIGUOUS_DIR)


def encode(parsed: ParsedBlock, cfg: PrepConfig, labeled: bool) -> pa.Table:
    """Good rows of a block -> a shard table (``OUTPUT_SCHEMA``)."""
    rows = parsed.rows
    label = parsed.label if labeled else np.full(rows, UNLABELED, dtype=np.int8)
    dense = transform_dense(parsed.dense, cfg.dense_transform)
    if cfg.encoding == "contiguous":  # numbered from the raw values; the cap applies to the ids
        lookup = _contiguous_ids(cfg.out)
        ids = [lookup.lookup(j, parsed.sparse[j], cfg.max_ind_range) for j in range(len(SPARSE))]
        arrays = [pa.array(label), *(pa.array(row) for row in dense), *(pa.array(row) for row in ids)]
        return pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)
    sparse = reduce_hash(parsed.sparse, cfg.max_ind_range)
    if cfg.encoding == "vocab":
        vocabulary = _vocabulary(cfg.out)
        ids = [vocabulary.lookup(j, sparse[j], parsed.sparse_missing[j]) for j in range(len(SPARSE))]
    else:
        ids = [row.astype(np.int64) for row in sparse]
    arrays = [pa.array(label), *(pa.array(row) for row in dense), *(pa.array(row) for row in ids)]
    return pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)


@dataclass(kw_only=True, frozen=True)
class ChunkTask:
    """A task that reads one chunk of one input file."""

    source: InputFile
    chunk: Chunk

    @property
    def nbytes(self) -> int:
        """Bytes of input it reads (progress and scheduling): the whole file for a gzip stream."""
        return self.source.size if self.chunk.end < 0 else self.chunk.nbytes


@dataclass(kw_only=True, frozen=True)
class LineCountTask(ChunkTask):
    """Counts a chunk's lines (files whose held-out part is cut by line number)."""

    def result(self, state: State) -> Path:
        return state.lines(self.chunk.id)

    def run(self, cfg: PrepConfig, progress: ProgressSink) -> None:
        lines = sum(count_lines(block) for block in iter_blocks(self.source, self.chunk, cfg.block_bytes,
                                                                progress.add_bytes))
        write_json(self.result(State(Path(cfg.out))), {"lines": lines})


@dataclass(kw_only=True, frozen=True)
class CountTask(ChunkTask):
    """Vocab pass 1: value counts of every categorical column of a chunk (and its line count)."""

    def result(self, state: State) -> Path:
        return state.counts_lines(self.chunk.id)

    def run(self, cfg: PrepConfig, progress: ProgressSink) -> None:
        state = State(Path(cfg.out))
        parser = BlockParser(self.source)
        sink = BadLineSink(policy=cfg.on_bad_line, state=state, source=self.source, chunk=self.chunk,
                           first_line=0 if self.chunk.index == 0 else None, quarantine=False)
        counter = ValueCounter()
        lines = 0
        for block in iter_blocks(self.source, self.chunk, cfg.block_bytes, progress.add_bytes):
            parsed = parser.parse(block)
            sink.add(lines, parsed.bad)
            sparse = reduce_hash(parsed.sparse, cfg.max_ind_range)
            for j in range(len(SPARSE)):
                counter.add(j, sparse[j][~parsed.sparse_missing[j]].astype(np.int64))
            lines += parsed.lines
            progress.add_rows(parsed.rows)
        counter.save(state.counts(self.chunk.id))
        write_json(self.result(state), {"lines": lines})


@dataclass(kw_only=True, frozen=True)
class MergeTask:
    """Vocab merge of one column over every chunk's counts."""

    column: str
    chunk_ids: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return 0

    def result(self, state: State) -> Path:
        return state.vocab_done(self.column)

    def run(self, cfg: PrepConfig, progress: ProgressSink) -> None:
        state = State(Path(cfg.out))
        values, counts = merge_column([state.counts(c) for c in self.chunk_ids], self.column, cfg.min_frequency)
        save_column(Path(cfg.out) / VOCAB_DIR, self.column, values, counts)
        write_json(self.result(state), {"size": len(values) + 1, "kept": len(values),
                                        "rows_counted": int(counts.sum())})


@dataclass(kw_only=True, frozen=True)
class FirstSeenTask(ChunkTask):
    """Contiguous pass 1: each categorical value's first line in a chunk (and the chunk's line count)."""

    def result(self, state: State) -> Path:
        return state.first_seen_lines(self.chunk.id)

    def run(self, cfg: PrepConfig, progress: ProgressSink) -> None:
        state = State(Path(cfg.out))
        parser = BlockParser(self.source)
        sink = BadLineSink(policy=cfg.on_bad_line, state=state, source=self.source, chunk=self.chunk,
                           first_line=0 if self.chunk.index == 0 else None, quarantine=False)
        first_seen = contiguous.FirstSeen()
        lines = 0
        for block in iter_blocks(self.source, self.chunk, cfg.block_bytes, progress.add_bytes):
            parsed = parser.parse(block)
            sink.add(lines, parsed.bad)
            row_lines = lines + parsed.row_lines.astype(np.int64)
            for j in range(len(SPARSE)):
                first_seen.add(j, parsed.sparse[j], row_lines)
            lines += parsed.lines
            progress.add_rows(parsed.rows)
        first_seen.save(state.first_seen(self.chunk.id))
        write_json(self.result(state), {"lines": lines})


@dataclass(kw_only=True, frozen=True)
class ContiguousMergeTask:
    """Contiguous merge of one column: its values numbered by first appearance over every chunk, in order."""

    column: str
    chunk_ids: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return 0

    def result(self, state: State) -> Path:
        return state.contiguous_done(self.column)

    def run(self, cfg: PrepConfig, progress: ProgressSink) -> None:
        state = State(Path(cfg.out))
        values = contiguous.merge_column([state.first_seen(c) for c in self.chunk_ids], self.column)
        contiguous.save_column(Path(cfg.out) / CONTIGUOUS_DIR, self.column, values)
        write_json(self.result(state), {"distinct": len(values),
                                        "size": contiguous.cardinality(len(values), cfg.max_ind_range)})


@dataclass(kw_only=True, frozen=True)
class HashTask:
    """sha256 of an input file, for the manifest."""

    source: InputFile

    @property
    def nbytes(self) -> int:
        return 0

    def result(self, state: State) -> Path:
        return state.source(self.source.index)

    def run(self, cfg: PrepConfig, progress: ProgressSink) -> None:
        write_json(self.result(State(Path(cfg.out))),
                   {"path": self.source.path, "bytes": self.source.size, "sha256": sha256_file(self.source.path)})


@dataclass(kw_only=True, frozen=True)
class ConvertTask(ChunkTask):
    """Pass 2: a chunk's lines -> Parquet shards of the splits its routing names.

    ``first_line`` is the chunk's first data line within its file (0-based) when known; ``routing`` is the
    file's (see :mod:`data_prep.splits`)."""

    first_line: int | None
    routing: Routing

    def result(self, state: State) -> Path:
        return state.converted(self.chunk.id)

    def _relative_routing(self) -> tuple[np.ndarray, list[str]]:
        if len(self.routing) == 1:
            return np.zeros(1, np.int64), [self.routing[0][1]]
        if self.first_line is None:
            raise RuntimeError(f"chunk {self.chunk.id}: routing by line needs the chunk's first line")
        return np.array([start - self.first_line for start, _ in self.routing]), [s for _, s in self.routing]

    def run(self, cfg: PrepConfig, progress: ProgressSink) -> None:
        out = Path(cfg.out)
        state = State(out)
        for stale in glob.glob(str(out / "*" / f".part-{self.chunk.id}-*.tmp")):
            os.unlink(stale)
        journal = Journal(state.journal(self.chunk.id))
        reusable = journal.restart()
        starts, names = self._relative_routing()
        writers: dict[str, ShardWriter] = {}
        parser = BlockParser(self.source)
        sink = BadLineSink(policy=cfg.on_bad_line, state=state, source=self.source, chunk=self.chunk,
                           first_line=self.first_line, quarantine=True)
        lines = 0
        for block in iter_blocks(self.source, self.chunk, cfg.block_bytes, progress.add_bytes):
            parsed = parser.parse(block)
            sink.add(lines, parsed.bad)
            if parsed.rows:
                table = encode(parsed, cfg, self.source.labeled)
                row_lines = lines + parsed.row_lines
                # rows are in line order: segment s holds rows [cuts[s], cuts[s + 1])
                cuts = np.searchsorted(row_lines, starts[1:], side="left")
                bounds = [0, *cuts.tolist(), parsed.rows]
                for s, name in enumerate(names):
                    if bounds[s + 1] > bounds[s]:
                        writer = writers.get(name)
                        if writer is None:
                            writer = writers[name] = ShardWriter(
                                out_dir=out, split=name, chunk_id=self.chunk.id, rows_per_shard=cfg.rows_per_shard,
                                row_group_rows=cfg.row_group_rows, compression=cfg.compression, journal=journal,
                                reusable=reusable)
                        writer.add(table.slice(bounds[s], bounds[s + 1] - bounds[s]))
            lines += parsed.lines
            progress.add_rows(parsed.rows)
        for writer in writers.values():
            writer.close()
        sink.close()
        write_json(self.result(state), {"lines": lines, "bad": sink.count,
                                        "rows": {name: w.rows for name, w in writers.items()}})

