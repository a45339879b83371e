"""Fixtures for the data tests; the dataset writer and row checks live in ``tests/data/shards.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.shards import write_dataset


@pytest.fixture
def one_hot_dir(tmp_path: Path) -> Path:
    write_dataset(tmp_path, {"train": [[37, 50, 13], [64], [29, 41, 9]], "val": [[11, 20]]})
    return tmp_path
