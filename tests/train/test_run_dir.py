"""Run folders: automatic names that never collide, and which configuration changes a resume may make."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrm_scale.config import load_config
from dlrm_scale.train.run_dir import (
    MODEL_PREFIXES,
    ResumeError,
    check_resume,
    create_run_dir,
    differences,
    preset_name,
)


def test_differences_name_each_key_old_to_new() -> None:
    old = load_config("tiny_cpu")
    new = load_config("tiny_cpu", ["model.interaction.name=cat", "optimizer.dense.lr=0.5", "train.epochs=9",
                                   "train.out_dir=elsewhere", "data.path=other"])
    assert differences(old, new) == ["model.interaction.name 'dot' -> 'cat'", "optimizer.dense.lr 0.02 -> 0.5"]
    assert differences(old, new, ignore=frozenset(), only=MODEL_PREFIXES) == ["model.interaction.name 'dot' -> 'cat'"]
    seeded = load_config("tiny_cpu", ["train.seed=1", "data.shuffle_buffer_batches=8", "train.batch_size=64"])
    assert [d.split()[0] for d in differences(old, seeded)] == [
        "data.shuffle_buffer_batches", "train.batch_size", "train.seed"]  # the data order


def test_run_folders_are_new_and_latest_points_at_the_newest(tmp_path: Path) -> None:
    first = create_run_dir("tiny_cpu", root=tmp_path, now=0.0)
    second = create_run_dir("tiny_cpu", root=tmp_path, now=0.0)  # same second: a suffix, not the same folder
    assert first != second and first.is_dir() and second.name == f"{first.name}-2"
    assert (tmp_path / "latest").resolve() == second.resolve()
    assert preset_name("tiny_cpu") == "tiny_cpu" and preset_name("my/exp.toml") == "exp"
    assert preset_name("runs/tiny_cpu-1/config.toml") == "tiny_cpu-1"


def test_resume_of_another_configuration_is_refused_before_reading_the_checkpoint(tmp_path: Path) -> None:
    """Only config.toml files are read: the checkpoint here has no DCP files at all."""
    from dlrm_scale.config_toml import to_toml

    checkpoint = tmp_path / "checkpoints" / "ckpt-00000004"
    checkpoint.mkdir(parents=True)
    (checkpoint / ".metadata").write_bytes(b"")
    (checkpoint / "manifest.json").write_text("{}")  # a complete checkpoint has DCP metadata and a manifest
    saved = load_config("tiny_cpu", [f"train.out_dir={tmp_path}"])
    (checkpoint / "config.toml").write_text(to_toml(saved))
    changed = load_config("tiny_cpu", [f"train.out_dir={tmp_path}", "model.interaction.name=cat",
                                       "model.embedding_dim=8", "model.bottom_mlp=[8]"])
    with pytest.raises(ResumeError) as refused:
        check_resume(changed, tmp_path, world_size=2)
    message = str(refused.value)
    assert "\n" not in message and "model.interaction.name 'dot' -> 'cat'" in message
    assert "model.embedding_dim 16 -> 8" in message and "ckpt-00000004" in message
    fresh = load_config("tiny_cpu", [f"train.out_dir={tmp_path}", "train.resume=false", "model.embedding_dim=8",
                                     "model.bottom_mlp=[8]"])
    assert check_resume(fresh, tmp_path, world_size=2) is None  # train.resume=false starts over, as documented


def test_restarts_need_a_named_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted torchrun attempt would otherwise make a new automatic folder instead of resuming."""
    from dlrm_scale.config import ConfigError
    from dlrm_scale.train.run_dir import check_restarts_have_a_folder

    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    with pytest.raises(ConfigError, match="--max-restarts needs an explicit run folder.*train.out_dir="):
        check_restarts_have_a_folder(load_config("tiny_cpu"))
    check_restarts_have_a_folder(load_config("tiny_cpu", ["train.out_dir=runs/mine"]))
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    check_restarts_have_a_folder(load_config("tiny_cpu"))
