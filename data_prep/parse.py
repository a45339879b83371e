"""One block of raw lines -> validated column arrays, plus the bad lines with their reason and raw text.

The fast path is a single call of pyarrow's C++ CSV parser on the block (labels and integer columns read as
float64, so CSVs that print integers as ``260.0`` work; categoricals as raw bytes) followed by vectorised
checks. A row is *bad* when its line

- has the wrong number of fields, or is empty;
- has a label that is empty or not 0/1 (labeled files);
- has an integer field that is not a finite integral number (empty = missing is fine);
- has a categorical field that is not empty and not 1-8 hex digits.

Row ``i`` of a parse is line ``i`` of the block: the parser is run with ``ignore_empty_lines=False`` and the row
count is checked against the block's newline count. When the parser rejects the block (a wrong field count, a
non-number), the block is bisected on line boundaries until each rejected line stands alone, so every good line
of the block is still read by the same parser and line numbers stay exact. Bisection costs at most about
log2(lines) extra parses per bad line and only runs on blocks that have one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from data_prep.hexids import decode_hex
from data_prep.layout import InputFile
from data_prep.schema import DENSE, ID, LABEL, SPARSE

_HEX = re.compile(r"[0-9a-fA-F]{1,8}")
_PREVIEW = 300


@dataclass(kw_only=True)
class BadLine:
    line: int  # 0-based line index within the block
    reason: str
    raw: bytes  # the line as read, without its line end


@dataclass(kw_only=True)
class ParsedBlock:
    """The N good rows of a block of ``lines`` lines. ``dense (13, N) float64`` raw integers (missing -> 0),
    ``sparse (26, N) uint32`` raw hash values (missing -> 0) with ``sparse_missing (26, N)``, ``label (N,)``
    int8, ``row_lines (N,)`` each row's 0-based line index in the block."""

    lines: int
    label: np.ndarray | None
    dense: np.ndarray
    sparse: np.ndarray
    sparse_missing: np.ndarray
    row_lines: np.ndarray
    bad: list[BadLine] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.row_lines)


def field_problem(name: str, value: str) -> str | None:
    """Why ``value`` is not acceptable in column ``name`` (None when it is): the same rules as the vectorised
    checks, applied to one field, to name the field in messages."""
    text = value.strip('"')
    if name == LABEL:
        ok = _number(text) in (0.0, 1.0)
        return None if ok else f"field {name}: {value!r} is not 0 or 1"
    if name in DENSE:
        number = _number(text) if text else 0.0
        ok = number is not None and math.isfinite(number) and number == math.floor(number)
        return None if ok else f"field {name}: {value!r} is not an integer"
    if name in SPARSE:
        return None if not text or _HEX.fullmatch(text) else f"field {name}: {value!r} is not 1-8 hex digits"
    return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _line_starts(block: bytes) -> np.ndarray:
    """``(lines + 1,)`` byte offsets: line i is ``block[starts[i]:starts[i + 1]]`` (its line end included)."""
    newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + 1
    starts = np.concatenate([[0], newlines])
    if starts[-1] != len(block):
        starts = np.append(starts, len(block))
    return starts


def _empty_lines(block: bytes, starts: np.ndarray) -> np.ndarray:
    """``(lines,) bool``: the line holds nothing but its line end (``\\n`` or ``\\r\\n``)."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = starts[1:]
    content = np.diff(starts) - (data[ends - 1] == 10)
    last = np.maximum(starts[:-1] + content - 1, 0)
    content = content - ((content > 0) & (data[last] == 13))
    return content == 0


def count_lines(block: bytes) -> int:
    return block.count(b"\n") + (1 if block and not block.endswith(b"\n") else 0)


class _RowCountMismatch(Exception):
    pass


class BlockParser:
    """Parses blocks of one input file's layout (see :mod:`data_prep.layout`)."""

    def __init__(self, source: InputFile) -> None:
        self.source = source
        self.fields = source.fields
        self.labeled = source.labeled
        types = {name: pa.binary() if name in SPARSE else pa.float64() for name in (LABEL, *DENSE, *SPARSE)}
        self._read_options = dict(column_names=list(self.fields), use_threads=False)
        csv = source.delimiter == ","
        self._parse_options = pacsv.ParseOptions(delimiter=source.delimiter, quote_char='"' if csv else False,
                                                 ignore_empty_lines=False)
        self._convert_options = pacsv.ConvertOptions(
            column_types={name: types[name] for name in self.fields if name != ID},
            include_columns=[name for name in self.fields if name != ID],
            null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False)

    def _read(self, data: bytes, lines: int) -> pa.Table:
        options = pacsv.ReadOptions(block_size=max(len(data) + 1, 1 << 16), **self._read_options)
        table = pacsv.read_csv(pa.BufferReader(data), read_options=options, parse_options=self._parse_options,
                               convert_options=self._convert_options)
        if table.num_rows != lines:
            raise _RowCountMismatch(f"the CSV parser read {table.num_rows} rows from {lines} lines")
        return table

    def _empty_table(self) -> pa.Table:
        types = self._convert_options.column_types
        return pa.table({name: pa.array([], type=types[name]) for name in self._convert_options.include_columns})

    def _salvage(self, block: bytes, starts: np.ndarray) -> tuple[list[tuple[int, pa.Table]], list[tuple[int, str]]]:
        """Bisects the block's lines: good ``(first line, table)`` pieces in line order, and rejected
        ``(line, parser message)``."""
        good: list[tuple[int, pa.Table]] = []
        rejected: list[tuple[int, str]] = []
        stack = [(0, len(starts) - 1)]
        while stack:
            low, high = stack.pop()
            try:
                good.append((low, self._read(block[starts[low]:starts[high]], high - low)))
            except (pa.ArrowException, _RowCountMismatch) as exc:
                if high - low == 1:
                    rejected.append((low, str(exc).strip()))
                else:
                    middle = (low + high) // 2
                    stack.append((middle, high))
                    stack.append((low, middle))
        return good, rejected

    def _reason(self, raw: bytes, fallback: str) -> str:
        text = raw.decode("utf-8", "replace")
        if not text.strip("\r"):
            return "empty line"
        values = text.split(self.source.delimiter)
        if len(values) != len(self.fields):
            return f"{len(values)} fields; expected {len(self.fields)} ({', '.join(self._layout_names())})"
        for name, value in zip(self.fields, values):
            problem = field_problem(name, value)
            if problem:
                return problem
        return fallback

    def _layout_names(self) -> list[str]:
        names = [name for name in self.fields if name in (ID, LABEL)]
        return [*names, "I1..I13", "C1..C26"]

    def parse(self, block: bytes) -> ParsedBlock:
        lines = count_lines(block)
        starts = None
        rejected: list[tuple[int, str]] = []
        try:
            table = self._read(block, lines)
            row_lines = np.arange(lines, dtype=np.int64)
        except (pa.ArrowException, _RowCountMismatch):
            starts = _line_starts(block)
            pieces, rejected = self._salvage(block, starts)
            tables = [table for _, table in pieces]
            table = pa.concat_tables(tables) if tables else self._empty_table()
            row_lines = (np.concatenate([first + np.arange(t.num_rows) for first, t in pieces])
                         if pieces else np.zeros(0, np.int64)).astype(np.int64)

        rows = table.num_rows
        bad_rows = np.zeros(rows, dtype=bool)
        label = None
        if self.labeled:
            values = table.column(LABEL).fill_null(-1.0).to_numpy()
            bad_label = (values != 0) & (values != 1)
            bad_rows |= bad_label
            label = np.where(bad_label, 0, values).astype(np.int8)
        dense = np.empty((len(DENSE), rows), dtype=np.float64)
        for j, name in enumerate(DENSE):
            dense[j] = table.column(name).fill_null(0.0).to_numpy()  # missing -> 0
        # not an integer: a fraction, or inf/nan (x - trunc(x) is nan for both)
        with np.errstate(invalid="ignore"):
            bad_rows |= ((dense - np.trunc(dense)) != 0).any(axis=0)
        sparse = np.empty((len(SPARSE), rows), dtype=np.uint32)
        sparse_missing = np.empty((len(SPARSE), rows), dtype=bool)
        for j, name in enumerate(SPARSE):
            sparse[j], sparse_missing[j], bad = decode_hex(table.column(name))
            bad_rows |= bad
        if not self.labeled:
            # the parser reads an empty line as a row of nulls; in a labeled file the missing label flags it
            blank = np.flatnonzero(sparse_missing.all(axis=0))
            if len(blank):
                starts = _line_starts(block) if starts is None else starts
                bad_rows[blank] |= _empty_lines(block, starts)[row_lines[blank]]

        if not rejected and not bad_rows.any():
            return ParsedBlock(lines=lines, label=label, dense=dense, sparse=sparse, sparse_missing=sparse_missing,
                               row_lines=row_lines)
        starts = _line_starts(block) if starts is None else starts
        bad = []
        for line, message in rejected:
            raw = block[starts[line]:starts[line + 1]].rstrip(b"\n")
            bad.append(BadLine(line=line, reason=self._reason(raw, f"rejected by the CSV parser: {message}"),
                               raw=raw))
        for row in np.flatnonzero(bad_rows):
            line = int(row_lines[row])
            raw = block[starts[line]:starts[line + 1]].rstrip(b"\n")
            bad.append(BadLine(line=line, reason=self._reason(raw, "a field failed validation"), raw=raw))
        bad.sort(key=lambda b: b.line)
        keep = ~bad_rows
        return ParsedBlock(lines=lines, label=None if label is None else label[keep], dense=dense[:, keep],
                           sparse=sparse[:, keep], sparse_missing=sparse_missing[:, keep],
                           row_lines=row_lines[keep], bad=bad)


def preview(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"
