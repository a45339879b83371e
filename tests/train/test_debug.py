"""Test hooks: row keys identify real rows; the kill hook fires once, on the first attempt only."""

from __future__ import annotations

import json
import signal

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.data.batch import Batch
from dlrm_scale.train import debug


def _batch(dense: torch.Tensor, ids: list[list[int]], mask: list[float]) -> Batch:
    """One id per (feature, row): ``ids[f][row]``."""
    b = dense.shape[0]
    lengths = torch.ones(len(ids) * b, dtype=torch.int32)
    values = torch.tensor([i for feature in ids for i in feature])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=[f"C{f + 1}" for f in range(len(ids))], values=values,
                                              lengths=lengths)
    return Batch(dense_features=dense, sparse_features=kjt, labels=torch.zeros(b), mask=torch.tensor(mask))


def test_row_keys_distinguish_rows_and_skip_padding() -> None:
    dense = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    keys = debug.row_keys(_batch(dense, [[5, 6, 5, 0], [7, 7, 7, 0]], [1, 1, 1, 0]))
    assert len(keys) == 3 and len(set(keys)) == 3  # rows 0 and 1 differ only in C1's id
    same = debug.row_keys(_batch(dense[[2, 0]], [[5, 5], [7, 7]], [1, 1]))
    assert same[1] == keys[0]


def test_hooks_log_rows_and_kill_on_first_attempt_only(tmp_path, monkeypatch) -> None:
    kills = []
    monkeypatch.setattr(debug.os, "kill", lambda pid, sig: kills.append(sig))
    env = {"DLRM_SCALE_DEBUG_ROWS": "1", "DLRM_SCALE_DEBUG_KILL": "1:3", "TORCHELASTIC_RESTART_COUNT": "0"}
    hooks = debug.DebugHooks(out_dir=tmp_path, rank=1, environ=env)
    for step in (1, 2, 3):
        hooks.after_step(step=step, epoch=0, rows=[f"r{step}"])
    assert kills == [signal.SIGKILL]
    records = [json.loads(line) for line in (tmp_path / "debug" / "rows-rank1.jsonl").read_text().splitlines()]
    assert [r["rows"] for r in records] == [["r1"], ["r2"], ["r3"]] and records[0]["attempt"] == 0
    debug.DebugHooks(out_dir=tmp_path, rank=0, environ=env).after_step(step=3, epoch=0, rows=None)
    debug.DebugHooks(out_dir=tmp_path, rank=1, environ={**env, "TORCHELASTIC_RESTART_COUNT": "1"}).after_step(
        step=3, epoch=0, rows=None)
    assert kills == [signal.SIGKILL]
    inert = debug.DebugHooks(out_dir=tmp_path / "x", rank=1, environ={})
    inert.after_step(step=3, epoch=0, rows=["r"])
    assert not inert.log_rows and not (tmp_path / "x").exists()
