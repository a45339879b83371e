"""The quickstart's data at a smaller scale, for the doctor and recipe tests: ``dlrm-scale synth criteo`` (planted
labels, see ``data_prep/synth.py``) over 3 days, then ``dlrm-scale prep criteo`` with hash encoding (days 0-1
train, day 2 halved into test and val), exactly as ``scripts/quickstart.sh`` does with 300,000 rows."""

from __future__ import annotations

from pathlib import Path

from data_prep import synth
from dlrm_scale.cli import main

MAX_IND_RANGE = 20_000  # the quickstart's: every table has this many rows
SEED = 0


def make_quickstart_data(root: Path, *, rows: int, dense_transform: str = "log1p") -> Path:
    """Writes the raw days under ``root/raw`` (once) and the prepared split under ``root/parquet_<transform>``."""
    raw = root / "raw"
    days = [raw / f"day_{day}" for day in range(3)]
    if not all(day.exists() for day in days):
        model = synth.build_hidden_model(SEED)
        for day, day_rows in enumerate(synth.day_rows(rows, 3)):
            synth.write_day(days[day], model, day_rows, SEED, day, gz=False)
    out = root / f"parquet_{dense_transform}"
    if not (out / "manifest.json").exists():
        assert main(["prep", "criteo", "--input", *map(str, days), "--out", str(out), "--dataset", "terabyte",
                     "--encoding", "hash", "--max-ind-range", str(MAX_IND_RANGE), "--dense-transform",
                     dense_transform, "--workers", "1", "--no-progress"]) == 0
    return out
