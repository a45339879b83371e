"""The non-finite guard: a NaN loss stops a run before any checkpoint of the poisoned model, naming the step, and
the previous checkpoint survives; ``skip_batch`` skips and counts the optimizer step of a non-finite batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dlrm_scale.train.nonfinite import MAX_CONSECUTIVE_SKIPS, GuardedOptimizer, NonFiniteError, NonFiniteGuard
from tests.dist_utils import REPO


def _optimizer(model: nn.Module):
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

    return CombinedOptimizer([KeyedOptimizerWrapper(dict(model.named_parameters()),
                                                    lambda params: torch.optim.SGD(params, lr=0.1))])


def _step(model: nn.Module, guarded: GuardedOptimizer, guard: NonFiniteGuard, step: int, scale: float) -> bool:
    guarded.zero_grad()
    loss = model(torch.ones(1, 2)).sum() * scale
    loss.backward()
    guarded.step()
    return guard.after_step(step, loss)


def test_stop_mode_names_the_first_bad_step_at_the_next_check() -> None:
    model = nn.Linear(2, 1)
    guarded = GuardedOptimizer(_optimizer(model), skip=False)
    guard = NonFiniteGuard(guarded, device=torch.device("cpu"))
    assert _step(model, guarded, guard, 1, 1.0)
    guard.check()
    assert _step(model, guarded, guard, 2, float("nan")) and _step(model, guarded, guard, 3, 1.0)
    with pytest.raises(NonFiniteError, match=r"^step 2: the loss or the dense gradient norm is not finite .*"
                                             r"\(newest: ckpt-1\)"):
        guard.check(newest_checkpoint=lambda: "ckpt-1")


def test_skip_mode_skips_counts_and_gives_up_after_a_streak() -> None:
    model = nn.Linear(2, 1)
    guarded = GuardedOptimizer(_optimizer(model), skip=True)
    guard = NonFiniteGuard(guarded, device=torch.device("cpu"))
    before = model.weight.detach().clone()
    assert not _step(model, guarded, guard, 1, float("inf"))
    assert torch.equal(model.weight, before) and guard.skipped == 1  # the step was skipped
    assert _step(model, guarded, guard, 2, 1.0) and not torch.equal(model.weight, before)
    guard.check()
    with pytest.raises(NonFiniteError, match=f"{MAX_CONSECUTIVE_SKIPS + 1} batches in a row"):
        for step in range(3, 3 + MAX_CONSECUTIVE_SKIPS + 1):
            _step(model, guarded, guard, step, float("nan"))
    assert torch.isfinite(model.weight).all()


def test_a_run_whose_loss_becomes_nan_stops_and_keeps_its_checkpoint(tmp_path: Path) -> None:
    """A learning rate of 1e19 (dense Adagrad: steps of about lr) makes step 2's forward overflow; before the
    guard the run went on to the end, exit 0, writing NaN checkpoints."""
    out = tmp_path / "run"
    settings = ["data.source=synthetic", "data.cardinalities=[50,60,70]", "data.synthetic_rows=640", "train.batch_size=32",
                "train.epochs=1", "train.checkpoint_every_steps=1", "train.keep_checkpoints=1",
                "train.log_every_steps=1", "train.progress=false", "optimizer.dense.lr=1e19",
                "model.embedding_dim=4", "model.bottom_mlp=[8,4]", "model.top_mlp=[8,1]", f"train.out_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "dlrm_scale.cli", "train", "--config", "tiny_cpu",
                           *[a for s in settings for a in ("--set", s)]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dlrm-scale train: error: step 2: the loss or the dense gradient norm is not finite")
    assert "ckpt-00000001" in last and "Traceback" not in proc.stderr
    assert "lower the learning rates (optimizer.embedding.lr=0.05 (rowwise_adagrad), optimizer.dense.lr=1e+19" in last
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("ckpt-*")) == ["ckpt-00000001"]
    assert (checkpoints / "latest").read_text().strip() == "ckpt-00000001"
    assert json.loads((checkpoints / "ckpt-00000001" / "manifest.json").read_text())["finite"] is True


@pytest.mark.multiproc
def test_under_torchrun_the_failure_is_one_line_and_status_2(tmp_path: Path) -> None:
    from tests.dist_utils import run_torchrun

    settings = ["data.source=synthetic", "data.cardinalities=[50,60,70]", "data.synthetic_rows=640", "train.batch_size=32",
                "train.epochs=1", "train.log_every_steps=1", "train.progress=false", "optimizer.dense.lr=1e19",
                "model.embedding_dim=4", "model.bottom_mlp=[8,4]", "model.top_mlp=[8,1]",
                f"train.out_dir={tmp_path / 'run'}"]
    proc = run_torchrun(["-m", "dlrm_scale.cli", "train", "--config", "tiny_cpu",
                         *[a for s in settings for a in ("--set", s)]], check=False, timeout=240)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dlrm-scale train: error: ")]
    # torchrun's agent stops the other workers as soon as one has exited, so a slower rank may be killed before
    # it prints: one or two lines, each the same one-line error
    assert 1 <= len(errors) <= 2 and all("step 2: the loss or the dense gradient norm is not finite" in e for e in errors)
    assert "exitcode  : 2" in proc.stderr  # torchrun's report of the failed workers
    assert not (tmp_path / "run" / "checkpoints").exists()
