"""Pieces of data_prep checked against plain Python: hex decoding, chunking, block reading, split routing."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from data_prep.chunks import iter_blocks, plan_chunks
from data_prep.errors import PrepError
from data_prep.hexids import decode_hex
from data_prep.layout import inspect_input
from data_prep.splits import route
from tests.data_prep.raw import random_lines, write_lines

HEX = re.compile(r"[0-9a-fA-F]{1,8}")


def _expected(text: str) -> tuple[int, bool, bool]:
    if not text:
        return 0, True, False
    if not HEX.fullmatch(text):
        return -1, False, True
    return int(text, 16), False, False


@pytest.mark.parametrize("seed", [0, 1])
def test_decode_hex_matches_int(seed) -> None:
    rng = np.random.default_rng(seed)
    texts = [f"{v:08x}" for v in rng.integers(0, 2**32, 3000)]
    texts += ["", "0", "F", "abc", "00000000", "ffffffff", "FFFFFFFF", "12345678", "1234567", "g0000000", "0000000g",
              "123456789", " 1234567", "-1", "0x12", "aBcDeF01", "////////", "::::::::", "@@@@@@@@", "GGGGGGGG", "`"]
    rng.shuffle(texts)
    for array in (pa.array(texts, pa.binary()), pa.array(texts, pa.string()).slice(5, 2000)):
        values, missing, bad = decode_hex(array)
        for text, value, miss, wrong in zip(array.to_pylist(), values, missing, bad):
            text = text.decode() if isinstance(text, bytes) else text
            want_value, want_missing, want_bad = _expected(text)
            assert (bool(miss), bool(wrong)) == (want_missing, want_bad), text
            if not want_bad:
                assert value == want_value, text


def test_decode_hex_fast_path_only_eight_digits() -> None:
    texts = [f"{v:08x}" for v in range(0, 2**32, 2**32 // 1000)] + [""]
    values, missing, bad = decode_hex(pa.array(texts, pa.binary()))
    assert values.tolist() == [int(t or "0", 16) for t in texts] and not bad.any() and missing[-1]


def test_chunks_cover_the_file_at_line_starts(tmp_path) -> None:
    lines = random_lines(500, seed=4)
    path = write_lines(tmp_path / "day_0", lines)
    source = inspect_input(0, path)
    data = path.read_bytes()
    for chunk_bytes in (1, 997, 10_000, 10**9):
        chunks = plan_chunks(source, chunk_bytes)
        assert chunks[0].start == 0 and chunks[-1].end == len(data)
        assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
        assert all(data[c.start - 1:c.start] == b"\n" for c in chunks[1:])
        for block_bytes in (1, 50, 4096):
            joined = b"".join(b for c in chunks for b in iter_blocks(source, c, block_bytes))
            assert joined == data
            assert all(b.endswith(b"\n") for c in chunks for b in iter_blocks(source, c, block_bytes))


def test_routing_conventions(tmp_path) -> None:
    sources = [inspect_input(i, write_lines(tmp_path / f"day_{i}", random_lines(3, seed=i))) for i in range(3)]
    assert route(sources, {2: 11}, holdout="last-file", first_half="test") == {
        0: [(0, "train")], 1: [(0, "train")], 2: [(0, "test"), (6, "val")]}
    assert route(sources, {}, holdout="none", first_half="test") == {i: [(0, "train")] for i in range(3)}
    # 3 files of 10, 10, 15 lines: 35 // 7 = 5 held out = lines 30..34 of the concatenation, 3 then 2
    routing = route(sources, {0: 10, 1: 10, 2: 15}, holdout="last-seventh", first_half="val")
    assert routing == {0: [(0, "train")], 1: [(0, "train")], 2: [(0, "train"), (10, "val"), (13, "test")]}
    with pytest.raises(PrepError, match="at least 2 labeled"):
        route(sources[:1], {0: 5}, holdout="last-file", first_half="test")
