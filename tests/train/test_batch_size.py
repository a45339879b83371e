"""``train.global_batch_size``: every world size trains the recipe's global batch, or is told why it cannot."""

from __future__ import annotations

import pytest

from dlrm_scale.config import ConfigError, load_config
from dlrm_scale.train.batch_size import batch_size_note, per_rank_batch_size, resolve_batch_size


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_the_global_batch_is_split_over_the_ranks(world_size: int) -> None:
    cfg = resolve_batch_size(load_config("criteo_terabyte"), world_size)
    assert cfg.train.batch_size * world_size == cfg.train.global_batch_size
    assert resolve_batch_size(cfg, world_size) == cfg  # idempotent


def test_without_a_global_batch_the_batch_is_per_rank() -> None:
    cfg = load_config("tiny_cpu", ["train.batch_size=96"])
    assert resolve_batch_size(cfg, 3) is cfg and cfg.train.batch_size == 96


def test_a_world_size_that_does_not_divide_the_global_batch_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"global_batch_size = 16384 is not divisible by the world size 3.*1, 2, 4"):
        per_rank_batch_size(batch_size=2048, global_batch_size=16384, world_size=3)


def test_the_note_names_both_keys() -> None:
    cfg = resolve_batch_size(load_config("criteo_terabyte"), 4)
    note = batch_size_note(cfg, 4)
    assert "16384 over 4 ranks = 4096 rows per rank" in note and "train.global_batch_size=0" in note
