"""What an input file looks like: compression, delimiter, header, and which fields it holds.

Accepted layouts (``--format auto`` tells them apart from the first line; ``tsv``/``csv`` force the delimiter):

- raw Criteo TSV, no header: 40 fields ``label, I1..I13, C1..C26``, or 39 without the label (Kaggle's test.txt);
- CSV (or TSV) with a header naming the columns, in any order: ``label`` (any case, optional), ``I1..I13``,
  ``C1..C26`` and optionally ``Id`` (the Kaggle competition files), which is read past. A file has a header when
  its first field is one of these names.

Plain or gzip; gzip is recognised by its magic bytes, not by the file name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from data_prep.errors import PrepError
from data_prep.schema import DENSE, ID, LABEL, RAW_LABELED, RAW_UNLABELED, SPARSE

GZIP_MAGIC = b"\x1f\x8b"
_MAX_HEADER_BYTES = 1 << 20
_CANONICAL = {name.lower(): name for name in (ID, LABEL, *DENSE, *SPARSE)}


@dataclass(kw_only=True, frozen=True)
class InputFile:
    """One input file. ``fields`` are its columns in file order (canonical names, ``Id`` included).
    ``data_start`` is the byte offset of the first data line of a plain file (after the header); a gzip file's
    header line is dropped from the decompressed stream instead."""

    index: int
    path: str
    size: int
    mtime_ns: int
    gzip: bool
    delimiter: str
    header: bool
    fields: tuple[str, ...]
    data_start: int

    @property
    def labeled(self) -> bool:
        return LABEL in self.fields

    @property
    def first_data_line(self) -> int:
        """1-based line number of the first data line."""
        return 2 if self.header else 1

    @property
    def format(self) -> str:
        kind = "csv" if self.delimiter == "," else "tsv"
        return f"{kind}{'+header' if self.header else ''}{'+gzip' if self.gzip else ''}"


def open_stream(path: str, compressed: bool) -> BinaryIO:
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def gzip_error(path: str, exc: BaseException) -> PrepError:
    return PrepError(f"{path}: truncated or corrupt gzip file ({type(exc).__name__}: {exc})")


GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def _first_lines(path: str, compressed: bool, count: int = 100) -> list[bytes]:
    """Up to ``count`` first lines (the layout is read from the first non-blank one)."""
    lines = []
    try:
        with open_stream(path, compressed) as stream:
            while len(lines) < count:
                line = stream.readline(_MAX_HEADER_BYTES)
                if not line:
                    break
                if not line.endswith(b"\n") and len(line) >= _MAX_HEADER_BYTES:
                    raise PrepError(f"{path}: a line is longer than {_MAX_HEADER_BYTES} bytes; not a Criteo log")
                lines.append(line)
                if line.strip():
                    break
    except GZIP_ERRORS as exc:
        raise gzip_error(path, exc) from exc
    return lines


def _header_fields(path: str, names: list[str]) -> tuple[str, ...]:
    fields = []
    unknown = []
    for name in names:
        canonical = _CANONICAL.get(name.strip().strip('"').lower())
        if canonical is None:
            unknown.append(name)
        fields.append(canonical)
    if unknown:
        raise PrepError(f"{path}: header has unknown columns {unknown}; expected Id (optional), label (optional), "
                        "I1..I13, C1..C26")
    missing = [name for name in (*DENSE, *SPARSE) if name not in fields]
    duplicated = sorted({name for name in fields if fields.count(name) > 1})
    if missing or duplicated:
        raise PrepError(f"{path}: header lacks columns {missing} or repeats {duplicated}")
    return tuple(fields)


def inspect_input(index: int, path: str | os.PathLike[str], fmt: str = "auto") -> InputFile:
    """Reads the first line of ``path`` and returns its layout; raises :class:`PrepError` naming the file when it
    is missing, a directory, empty, or not a layout above."""
    path = str(Path(path).resolve())
    if not os.path.exists(path):
        raise PrepError(f"{path}: no such input file")
    if os.path.isdir(path):
        raise PrepError(f"{path}: is a directory; pass the files in it (e.g. DIR/day_*)")
    stat = os.stat(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    lines = _first_lines(path, compressed)
    if not lines or not lines[-1].strip():
        raise PrepError(f"{path}: no data in the first {len(lines)} lines to detect the layout from")
    text = lines[-1].decode("utf-8", "replace").rstrip("\r\n")
    if fmt == "tsv" or (fmt == "auto" and "\t" in text):
        delimiter = "\t"
    elif fmt == "csv" or (fmt == "auto" and "," in text):
        delimiter = ","
    else:
        raise PrepError(f"{path}: first line has neither tabs nor commas; not a Criteo log")
    names = text.split(delimiter)
    first = names[0].strip().strip('"')
    header = len(lines) == 1 and first.lower() in _CANONICAL
    if header:
        fields = _header_fields(path, names)
    elif len(names) == len(RAW_LABELED):
        fields = RAW_LABELED
    elif len(names) == len(RAW_UNLABELED):
        fields = RAW_UNLABELED
    else:
        raise PrepError(
            f"{path}: first line has {len(names)} {'tab' if delimiter == chr(9) else 'comma'}-separated fields; "
            f"expected {len(RAW_LABELED)} (label, I1..I13, C1..C26), {len(RAW_UNLABELED)} (no label, as in "
            "Kaggle's test.txt) or a header line"
        )
    return InputFile(index=index, path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns, gzip=compressed,
                     delimiter=delimiter, header=header, fields=tuple(fields),
                     data_start=len(lines[0]) if header and not compressed else 0)
