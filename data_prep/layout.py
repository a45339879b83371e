"""What an input file looks like: compression, delimiter, header, and which fields it holds.

Accepted layouts (``--format auto`` tells the delimiter from the sampled lines; ``tsv``/``csv`` force it):

- raw Criteo TSV, no header: 40 fields ``label, I1..I13, C1..C26``, or 39 without the label (Kaggle's test.txt).
  Which of the two a file holds is decided per file, never from its first line alone (one damaged line would
  otherwise shift every row of a day): by the file's role where the dataset says it -- Terabyte ``day_N`` files and
  Kaggle's ``train.txt`` are labeled, Kaggle's ``test.txt`` is not -- and otherwise by the field count of most of
  the first ``SAMPLE_LINES`` non-empty lines. A role that contradicts a clear majority is an error naming both. A
  line with the other count is then a bad line, reported with its own line number;
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
SAMPLE_LINES = 200
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


def _first_lines(path: str, compressed: bool, count: int = SAMPLE_LINES) -> list[bytes]:
    """The file's first lines, up to and including its ``count``-th non-blank one."""
    lines: list[bytes] = []
    non_blank = 0
    try:
        with open_stream(path, compressed) as stream:
            while non_blank < count:
                line = stream.readline(_MAX_HEADER_BYTES)
                if not line:
                    break
                if not line.endswith(b"\n") and len(line) >= _MAX_HEADER_BYTES:
                    raise PrepError(f"{path}: a line is longer than {_MAX_HEADER_BYTES} bytes; not a Criteo log")
                lines.append(line)
                non_blank += bool(line.strip())
    except GZIP_ERRORS as exc:
        raise gzip_error(path, exc) from exc
    return lines


def role_is_labeled(path: str, dataset: str) -> bool | None:
    """Whether the dataset's convention says the file at ``path`` is labeled (None: it does not say)."""
    name = Path(path).name.lower()
    if dataset == "terabyte":
        return True
    if dataset == "kaggle":
        if name.startswith("train"):
            return True
        if name.startswith("test"):
            return False
    return None


def _raw_layout(path: str, samples: list[str], delimiter: str, dataset: str) -> tuple[str, ...]:
    """40- or 39-field layout of a headerless file from its role, or the majority of its sampled lines."""
    counts: dict[int, int] = {}
    for text in samples:
        width = len(text.split(delimiter))
        counts[width] = counts.get(width, 0) + 1
    common, seen = max(counts.items(), key=lambda item: (item[1], item[0]))
    majority = common if seen * 2 > len(samples) else None
    by_width = {len(RAW_LABELED): RAW_LABELED, len(RAW_UNLABELED): RAW_UNLABELED}
    role = role_is_labeled(path, dataset)
    kind = "tab" if delimiter == "\t" else "comma"
    if role is not None:
        fields = RAW_LABELED if role else RAW_UNLABELED
        if majority is not None and majority != len(fields) and majority in by_width:
            raise PrepError(f"{path}: {seen} of {len(samples)} sampled lines have {majority} {kind}-separated "
                            f"fields, but {'a labeled' if role else 'an unlabeled'} file of the {dataset} dataset has "
                            f"{len(fields)}; check --dataset or the file")
        return fields
    if majority in by_width:
        return by_width[majority]
    described = ", ".join(f"{n} lines with {w}" for w, n in sorted(counts.items(), key=lambda item: -item[1]))
    raise PrepError(
        f"{path}: of {len(samples)} sampled lines, {described} {kind}-separated fields; expected most to have "
        f"{len(RAW_LABELED)} (label, I1..I13, C1..C26), {len(RAW_UNLABELED)} (no label, as in Kaggle's "
        "test.txt) or a header line"
    )


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


def inspect_input(index: int, path: str | os.PathLike[str], fmt: str = "auto", dataset: str = "auto") -> InputFile:
    """Reads the first lines of ``path`` and returns its layout; raises :class:`PrepError` naming the file when it
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
    samples = [line.decode("utf-8", "replace").rstrip("\r\n") for line in lines if line.strip()]
    if not samples:
        raise PrepError(f"{path}: no data in the first {len(lines)} lines to detect the layout from")
    tabs = sum("\t" in text for text in samples)
    commas = sum("," in text for text in samples)
    if fmt == "tsv" or (fmt == "auto" and tabs and tabs >= commas):
        delimiter = "\t"
    elif fmt == "csv" or (fmt == "auto" and commas):
        delimiter = ","
    else:
        raise PrepError(f"{path}: no sampled line has tabs or commas; not a Criteo log")
    names = samples[0].split(delimiter)
    first = names[0].strip().strip('"')
    header = bool(lines[0].strip()) and first.lower() in _CANONICAL
    if header:
        fields = _header_fields(path, names)
    else:
        fields = _raw_layout(path, samples, delimiter, dataset)
    return InputFile(index=index, path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns, gzip=compressed,
                     delimiter=delimiter, header=header, fields=tuple(fields),
                     data_start=len(lines[0]) if header and not compressed else 0)
