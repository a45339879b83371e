"""Checkpoint files: atomic save (a crash mid-save keeps the previous checkpoint usable), the latest pointer,
pruning, the trust boundary (no code runs on load, checksums, the pointer stays inside its directory), and the
trainer's optimizer-state initialisation for in-place loading. One process, world size 1."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import dlrm_scale.checkpoint as checkpoint_module
from dlrm_scale.checkpoint import Checkpointer, CheckpointError, pack, unpack
from dlrm_scale.checkpoint_io import write_manifest


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
    with pytest.raises(CheckpointError, match="no .metadata"):
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


# ---------------------------------------------------------------------------------------------- trust boundary
class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the payload a crafted checkpoint would carry."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rewrite_manifest(path: Path) -> None:
    """What an attacker who edits files would also do: make the checksums match again."""
    record = json.loads((path / "manifest.json").read_text())
    write_manifest(path, step=record["step"], finite=record["finite"])


def test_crafted_metadata_pickle_is_refused_without_running(tmp_path: Path, group) -> None:
    ckpt = Checkpointer(tmp_path / "ckpts")
    path = ckpt.save(3, _state(3))
    marker = tmp_path / "pwned"
    (path / ".metadata").write_bytes(pickle.dumps(_CreatesFile(marker)))
    _rewrite_manifest(path)
    with pytest.raises(CheckpointError, match=r"io\.open.*not part of DCP's metadata"):
        Checkpointer.stored_keys(path)
    with pytest.raises(CheckpointError, match=r"io\.open"):
        ckpt.load(path, _empty())
    assert not marker.exists()


def test_crafted_non_tensor_entry_is_refused_without_running(tmp_path: Path, group) -> None:
    marker = tmp_path / "pwned"
    ckpt = Checkpointer(tmp_path / "ckpts")
    path = ckpt.save(1, {**_state(1), "evil": _CreatesFile(marker)})  # DCP stores it with torch.save (pickle)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"'evil' refers to io\.open; refusing"):
        ckpt.load(path, {**_empty(), "evil": 0})
    assert not marker.exists()


def test_overwritten_tensor_is_refused_by_checksum(tmp_path: Path, group) -> None:
    ckpt = Checkpointer(tmp_path / "ckpts")
    path = ckpt.save(3, _state(3))
    data = [p for p in path.iterdir() if p.suffix == ".distcp"][0]
    raw = bytearray(data.read_bytes())
    raw[-64:] = bytes(64)  # same size, values changed
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"{data.name} does not match its sha256") as info:
        ckpt.load(path, _empty())
    assert "\n" not in str(info.value)


def test_attachments_are_in_the_manifest(tmp_path: Path, group) -> None:
    ckpt = Checkpointer(tmp_path / "ckpts")
    path = ckpt.save(3, _state(3), attachments={"config.toml": b"[train]\n"})
    assert "config.toml" in json.loads((path / "manifest.json").read_text())["files"]
    (path / "config.toml").write_bytes(b"[train]\nlr = 1\n")
    with pytest.raises(CheckpointError, match="config.toml has 15 bytes, the manifest says 8"):
        ckpt.load(path, _empty())


def test_latest_may_only_name_a_checkpoint_of_its_directory(tmp_path: Path, group) -> None:
    ckpt = Checkpointer(tmp_path / "ckpts")
    ckpt.save(1, _state(1))
    elsewhere = Checkpointer(tmp_path / "other").save(2, _state(2))
    (tmp_path / "ckpts" / "latest").write_text("../other/ckpt-00000002\n")
    with pytest.raises(CheckpointError, match="not a checkpoint of"):
        ckpt.latest()
    (tmp_path / "ckpts" / "latest").unlink()
    (tmp_path / "ckpts" / "ckpt-00000005").symlink_to(elsewhere)
    (tmp_path / "ckpts" / "latest").write_text("ckpt-00000005\n")
    assert ckpt.latest().name == "ckpt-00000001"  # a symlink is never a complete checkpoint


def test_retention_keeps_the_newest_finite_checkpoint(tmp_path: Path, group) -> None:
    ckpt = Checkpointer(tmp_path / "ckpts", keep=1)
    ckpt.save(1, _state(1))
    for step in (2, 3):
        poisoned = _state(step)
        poisoned["model"]["w"][0, 0] = float("nan")
        ckpt.save(step, poisoned)
    assert [p.name for p in ckpt.complete()] == ["ckpt-00000001", "ckpt-00000003"]
    ckpt.save(4, _state(4))
    assert [p.name for p in ckpt.complete()] == ["ckpt-00000004"]


def test_pack_round_trips_rng_states() -> None:
    import random

    import numpy as np

    from dlrm_scale.train.trainer import rng_state

    state = rng_state(torch.device("cpu"))
    back = unpack(pack(state))
    assert torch.equal(back["torch"], state["torch"]) and back["python"] == state["python"]
    assert back["numpy"][0] == state["numpy"][0] and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["numpy"][2:] == state["numpy"][2:]
    np.random.set_state(back["numpy"])
    random.setstate(back["python"])
    assert unpack(pack({1: (2, "x"), "$k": [None, 1.5]})) == {1: (2, "x"), "$k": [None, 1.5]}
    with pytest.raises(CheckpointError, match="damaged"):
        unpack(torch.tensor([1, 2, 3], dtype=torch.uint8))
