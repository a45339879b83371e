"""Settings of one ``dlrm-scale prep criteo`` run, their validation, and the subset that shapes the output."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.choices import CHOICES
from data_prep.errors import PrepError
from data_prep.layout import InputFile

PREP_FORMAT = 1  # bump when the same settings would produce different shards
_DAY = re.compile(r"^day_(\d+)(\..*)?$")


@dataclass(kw_only=True)
class PrepConfig:
    """One run's settings: the command line's flags (``data_prep/cli.py`` explains each), also usable directly."""

    inputs: list[str]
    out: str
    dataset: str = "auto"
    encoding: str = "hash"
    max_ind_range: int = 0
    min_frequency: int = 1
    dense_transform: str = "log1p"
    on_bad_line: str = "error"
    workers: int = 1
    rows_per_shard: int = 1 << 20
    row_group_rows: int = 1 << 17
    chunk_bytes: int = 1 << 30
    block_bytes: int = 1 << 22
    format: str = "auto"
    holdout: str = "auto"
    first_half: str = "test"
    compression: str = "snappy"
    rank: int = 0
    world_size: int = 1
    barrier_timeout: float = 6 * 3600.0
    progress: bool = True

    def validate(self) -> None:
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise PrepError(f"{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        positive = ("workers", "rows_per_shard", "row_group_rows", "chunk_bytes", "block_bytes", "world_size",
                    "min_frequency")
        for key in positive:
            if getattr(self, key) < 1:
                raise PrepError(f"{key} must be >= 1; got {getattr(self, key)}")
        if self.max_ind_range < 0:
            raise PrepError(f"max_ind_range must be >= 0 (0 = no modulo); got {self.max_ind_range}")
        if not 0 <= self.rank < self.world_size:
            raise PrepError(f"rank must be in [0, world_size={self.world_size}); got {self.rank}")
        if not self.inputs:
            raise PrepError("no --input files")
        resolved = [str(Path(p).resolve()) for p in self.inputs]
        repeated = sorted({p for p in resolved if resolved.count(p) > 1})
        if repeated:
            raise PrepError(f"input files given more than once: {repeated}")

    def ordered_inputs(self) -> list[str]:
        """Inputs in processing order: Terabyte ``day_N`` files by N (so day_23, not day_9, is last); otherwise
        as given."""
        if self.dataset == "terabyte":
            days = [_DAY.match(Path(p).name) for p in self.inputs]
            if all(days):
                return [p for _, p in sorted(zip((int(m.group(1)) for m in days), self.inputs))]
        return list(self.inputs)

    def settings(self, sources: list[InputFile], holdout: str) -> dict[str, Any]:
        """What decides the output bytes (not workers, ranks, block size or the bad-line policy: a chunk that
        finished under ``error`` had no bad line, so ``skip`` would write it the same)."""
        return {
            "prep_format": PREP_FORMAT,
            "inputs": [{"path": s.path, "bytes": s.size, "mtime_ns": s.mtime_ns} for s in sources],
            "dataset": self.dataset, "encoding": self.encoding, "max_ind_range": self.max_ind_range,
            "min_frequency": self.min_frequency, "dense_transform": self.dense_transform,
            "rows_per_shard": self.rows_per_shard, "row_group_rows": self.row_group_rows,
            "chunk_bytes": self.chunk_bytes, "format": self.format, "holdout": holdout,
            "first_half": self.first_half, "compression": self.compression,
        }
