"""Units of work: an input file cut into line-aligned byte ranges, and each range read as line-aligned blocks.

A plain file is cut every ``chunk_bytes`` bytes, each cut moved forward to the next line start, so the cut
depends only on the file and ``chunk_bytes`` (never on the number of workers or ranks) and the output, which
is written chunk by chunk, is the same for any parallelism. A gzip stream cannot be entered in the middle, so a
gzip file is one chunk. Inside a chunk, :func:`iter_blocks` streams blocks of about ``block_bytes`` that end
at a line end, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from data_prep.layout import InputFile, gzip_error

_SCAN_BYTES = 1 << 16


@dataclass(kw_only=True, frozen=True)
class Chunk:
    """Bytes ``[start, end)`` of input file ``file`` (a gzip file: its whole stream, ``end == -1``)."""

    file: int
    index: int
    start: int
    end: int

    @property
    def id(self) -> str:
        return f"{self.file:03d}-{self.index:05d}"

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def _next_line_start(handle, position: int, size: int) -> int:
    """The smallest line start >= ``position`` (``size`` when none)."""
    handle.seek(position - 1)
    offset = position - 1
    while True:
        piece = handle.read(_SCAN_BYTES)
        if not piece:
            return size
        newline = piece.find(b"\n")
        if newline >= 0:
            return offset + newline + 1
        offset += len(piece)


def plan_chunks(source: InputFile, chunk_bytes: int) -> list[Chunk]:
    if source.gzip:
        return [Chunk(file=source.index, index=0, start=0, end=-1)]
    cuts = [source.data_start]
    with open(source.path, "rb") as handle:
        for nominal in range(source.data_start + chunk_bytes, source.size, chunk_bytes):
            if nominal <= cuts[-1]:
                continue  # a line longer than chunk_bytes swallowed this cut
            start = _next_line_start(handle, nominal, source.size)
            if start < source.size:
                cuts.append(start)
    cuts.append(source.size)
    ranges = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    return [Chunk(file=source.index, index=i, start=a, end=b) for i, (a, b) in enumerate(ranges)]


def _raw_pieces(source: InputFile, chunk: Chunk, block_bytes: int,
                on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    """The chunk's bytes in pieces of up to ``block_bytes``; ``on_bytes`` gets the input bytes consumed (the
    compressed bytes of a gzip file, so progress and ETA are in file size)."""
    if not source.gzip:
        with open(source.path, "rb") as handle:
            handle.seek(chunk.start)
            remaining = chunk.nbytes
            while remaining > 0:
                piece = handle.read(min(block_bytes, remaining))
                if not piece:
                    return
                remaining -= len(piece)
                on_bytes(len(piece))
                yield piece
        return
    raw = pa.OSFile(source.path)
    try:
        stream = pa.CompressedInputStream(raw, "gzip")  # zlib in C++, concatenated members included
        consumed = 0
        skip_header = source.header
        while True:
            piece = stream.read(block_bytes)
            position = raw.tell()
            on_bytes(position - consumed)
            consumed = position
            if not piece:
                return
            if skip_header:
                newline = piece.find(b"\n")
                if newline < 0:
                    continue
                piece, skip_header = piece[newline + 1:], False
            yield piece
    except (OSError, pa.ArrowException) as exc:
        raise gzip_error(source.path, exc) from exc
    finally:
        raw.close()


def iter_blocks(source: InputFile, chunk: Chunk, block_bytes: int,
                on_bytes: Callable[[int], None] = lambda n: None) -> Iterator[bytes]:
    """Blocks of whole lines: every block ends with ``\\n`` except possibly the chunk's last (a final line
    without one). A line longer than ``block_bytes`` makes a longer block."""
    carry = b""
    for piece in _raw_pieces(source, chunk, block_bytes, on_bytes):
        data = carry + piece if carry else piece
        end = data.rfind(b"\n") + 1
        if end == 0:
            carry = data
            continue
        carry = data[end:]
        yield data[:end]
    if carry:
        yield carry
