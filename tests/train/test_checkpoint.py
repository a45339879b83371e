"""Checkpoint files: atomic save (a crash mid-save keeps the previous checkpoint usable), the latest pointer,
pruning, and the trainer's optimizer-state initialisation for in-place loading. One process, world size 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import dlrm_scale.checkpoint as checkpoint_module
from dlrm_scale.checkpoint import Checkpointer, pack, unpack


@pytest.fixture
def group(tmp_path: Path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _state(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(4, 3, generator=gen), "b": torch.randn(3, generator=gen)},
            "trainer": pack({"step": seed, "epoch": 1, "nested": {"position": [seed, 2]}})}


def _empty() -> dict:
    return {"model": {"w": torch.zeros(4, 3), "b": torch.zeros(3)}, "trainer": pack({})}


def test_save_then_load_restores_tensors_and_packed_values(tmp_path: Path, group) -> None:
    ckpt = Checkpointer(tmp_path / "ckpts")
    path = ckpt.save(3, _state(3))
    assert path.name == "ckpt-00000003" and ckpt.latest() == path
    assert (tmp_path / "ckpts" / "latest").read_text().strip() == path.name
    loaded = _empty()
    ckpt.load(path, loaded)
    assert torch.equal(loaded["model"]["w"], _state(3)["model"]["w"])
    assert unpack(loaded["trainer"]) == {"step": 3, "epoch": 1, "nested": {"position": [3, 2]}}
    assert {"model.w", "model.b", "trainer"} <= Checkpointer.stored_keys(path)


def test_crash_during_save_leaves_previous_checkpoint(tmp_path: Path, group, monkeypatch) -> None:
    ckpt = Checkpointer(tmp_path / "ckpts", keep=0)
    first = ckpt.save(1, _state(1))
    real_save = checkpoint_module.dcp.save

    def crashing_save(state, *, checkpoint_id, **kwargs):
        (Path(checkpoint_id) / "__0_0.distcp").write_bytes(b"half written")
        raise RuntimeError("node lost")

    monkeypatch.setattr(checkpoint_module.dcp, "save", crashing_save)
    with pytest.raises(RuntimeError, match="node lost"):
        ckpt.save(2, _state(2))
    assert (tmp_path / "ckpts" / "ckpt-00000002.tmp").is_dir()
    assert ckpt.latest() == first
    loaded = _empty()
    ckpt.load(ckpt.latest(), loaded)
    assert unpack(loaded["trainer"])["step"] == 1

    monkeypatch.setattr(checkpoint_module.dcp, "save", real_save)
    third = ckpt.save(3, _state(3))
    assert ckpt.latest() == third
    assert not (tmp_path / "ckpts" / "ckpt-00000002.tmp").exists()
    assert [p.name for p in ckpt.complete()] == ["ckpt-00000001", "ckpt-00000003"]


def test_latest_falls_back_to_newest_complete_and_prunes(tmp_path: Path, group) -> None:
    ckpt = Checkpointer(tmp_path / "ckpts", keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, _state(step))
    assert [p.name for p in ckpt.complete()] == ["ckpt-00000002", "ckpt-00000003"]
    (tmp_path / "ckpts" / "ckpt-00000009").mkdir()  # no .metadata: not a checkpoint
    (tmp_path / "ckpts" / "latest").unlink()
    assert ckpt.latest().name == "ckpt-00000003"
    (tmp_path / "ckpts" / "latest").write_text("ckpt-00000009\n")  # stale pointer
    assert ckpt.latest().name == "ckpt-00000003"
    with pytest.raises(FileNotFoundError, match="no .metadata"):
        ckpt.load(tmp_path / "ckpts" / "ckpt-00000009", _empty())
    assert Checkpointer(tmp_path / "nothing").latest() is None


def test_ensure_optimizer_state_creates_lazy_state_without_moving_params() -> None:
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

    from dlrm_scale.train.trainer import ensure_optimizer_state

    model = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adam = KeyedOptimizerWrapper(dict(model.named_parameters()),
                                 lambda params: torch.optim.Adam(params, lr=0.1, weight_decay=0.5))
    optimizer = CombinedOptimizer([adam])
    assert len(optimizer.state) == 0
    ensure_optimizer_state(optimizer)
    assert len(optimizer.state) == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [g["lr"] for g in optimizer.param_groups] == [0.1]
    assert all(p.grad is None for p in model.parameters())
