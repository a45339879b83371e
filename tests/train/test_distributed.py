"""Two real ranks (torchrun, gloo, CPU): sharding, data-parallel consistency, exact resume, recovery from a
SIGKILLed rank, and exact evaluation over padded uneven splits.

The launches share one small setup (16 steps: 2 epochs of 8 batches of 2 x 64 slots over 1,000 synthetic rows,
so the last batch of each epoch is padded) and are made once per module:

- ``reference``: 16 steps straight through ``tests/train/dist_train.py`` (the CLI's builder), pipelined,
  evaluating every 6 steps, checkpointing every 5, logging each rank's rows;
- ``resumed``: ``dlrm-scale train`` for 6 steps with the plain loop, then again (pipelined) to the end;
- ``killed``: ``launch/torchrun.sh`` with ``MAX_RESTARTS=1``; rank 1 SIGKILLs itself after step 12 on the first
  attempt, torchrun restarts both ranks, and they resume from the step-10 checkpoint.

Single processes then evaluate the reference's final checkpoint (``dlrm-scale eval``, world size 1, one unpadded
batch) and try to resume it on the wrong world size.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.dist_utils import REPO, free_port, run_torchrun

pytestmark = pytest.mark.multiproc

ROWS, BATCH, STEPS_PER_EPOCH, EPOCHS = 1000, 64, 8, 2
STEPS = STEPS_PER_EPOCH * EPOCHS
CARDINALITIES = "[97,211,1003,53,4001,17]"


def config_args(out_dir: Path, *extra: str) -> list[str]:
    settings = [
        "data.source=synthetic", f"data.cardinalities={CARDINALITIES}", f"data.synthetic_rows={ROWS}",
        "data.shuffle_buffer_batches=2", f"train.batch_size={BATCH}", f"train.epochs={EPOCHS}",
        "train.log_every_steps=1", "train.checkpoint_every_steps=5", "train.keep_checkpoints=0",
        "train.eval_every_steps=6", "train.progress=false", "sharding.default_type=row_wise",
        f"train.out_dir={out_dir}", *extra,
    ]
    return ["--config", "tiny_cpu", *[arg for setting in settings for arg in ("--set", setting)]]


def _pythonpath() -> str:
    return f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"


def _single_process_env() -> dict[str, str]:
    """The environment of a plain (non-torchrun) process: a world of one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _pythonpath()}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run_job(cmd: list[str], *, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Runs ``cmd`` in its own process group and kills the whole group (torchrun's workers too) on timeout."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s: {cmd}\n{stdout[-3000:]}\n{stderr[-5000:]}") from None
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode})\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def records(out_dir: Path, kind: str) -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def losses_by_step(out_dir: Path) -> dict[int, float]:
    """The last logged loss of each step (a restarted job logs the steps after its checkpoint again)."""
    return {r["step"]: r["loss"] for r in records(out_dir, "train")}


def row_log(out_dir: Path) -> dict[tuple[int, int], dict]:
    """(rank, step) -> the record of the latest attempt that trained that step."""
    steps: dict[tuple[int, int], dict] = {}
    for path in sorted((out_dir / "debug").glob("rows-rank*.jsonl")):
        for record in map(json.loads, path.read_text().splitlines()):
            key = (record["rank"], record["step"])
            if key not in steps or record["attempt"] >= steps[key]["attempt"]:
                steps[key] = record
    return steps


def final_checkpoint(out_dir: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """Model and optimizer tensors of the newest checkpoint, assembled into full tensors."""
    latest = out_dir / "checkpoints" / (out_dir / "checkpoints" / "latest").read_text().strip()
    target = tmp_path / f"{out_dir.name}-{latest.name}.pt"
    dcp_to_torch_save(latest, target)
    state = torch.load(target, weights_only=False)
    return {f"{top}.{key}": value for top in ("model", "optimizer")
            for key, value in _flatten(state[top]).items() if isinstance(value, torch.Tensor)}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    run_torchrun(["tests/train/dist_train.py", *config_args(out)], env={"DLRM_SCALE_DEBUG_ROWS": "1"})
    return out


def test_tables_are_sharded_and_dense_parameters_identical(reference: Path) -> None:
    views = [torch.load(reference / f"final-rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    tables = views[0]["shards"]
    assert len(tables) == len(json.loads(CARDINALITIES)), "every table should be row-wise sharded"
    for name, table in tables.items():
        rows, dim = table["size"]
        held = [sum(s["sizes"][0] * s["sizes"][1] for s in view["shards"][name]["local"]) for view in views]
        assert sum(held) == rows * dim, f"{name}: the ranks' shards must cover the table exactly once"
        assert all(0 < h < rows * dim for h in held), f"{name}: each rank must hold only part of it: {held}"
    dense = views[0]["replicated"]
    assert dense, "the DLRM has dense parameters"
    assert dense.keys() == views[1]["replicated"].keys()
    for name, value in dense.items():
        assert torch.equal(value, views[1]["replicated"][name]), f"{name} differs between ranks"


def test_every_row_trained_once_per_epoch(reference: Path) -> None:
    steps = row_log(reference)
    assert sorted(steps) == [(rank, step) for rank in (0, 1) for step in range(1, STEPS + 1)]
    for epoch in range(EPOCHS):
        rows = [key for (rank, step), record in steps.items() if record["epoch"] == epoch for key in record["rows"]]
        assert len(rows) == ROWS and len(set(rows)) == ROWS
    summary = records(reference, "summary")[-1]
    assert summary["samples"] == ROWS * EPOCHS and summary["steps"] == STEPS


def test_resume_continues_the_same_loss_curve(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    run_torchrun(["-m", "dlrm_scale.cli", "train", *config_args(out, "train.max_steps=6", "train.pipeline=false")])
    assert losses_by_step(out).keys() == set(range(1, 7))
    second = run_torchrun(["-m", "dlrm_scale.cli", "train", *config_args(out)])
    assert "resumed from" in second.stdout and "ckpt-00000006" in second.stdout
    assert losses_by_step(out) == losses_by_step(reference)
    resumed, straight = final_checkpoint(out, tmp_path), final_checkpoint(reference, tmp_path)
    assert resumed.keys() == straight.keys() and any(k.startswith("optimizer.") for k in straight)
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name


def test_compiled_mlps_train_like_eager(reference: Path, tmp_path: Path) -> None:
    """``train.compile`` (aot_eager here: the same graphs as inductor's, without its C++ build) through TorchRec's
    pipeline on 2 ranks: the eager run's loss at every step, and checkpoints with the same tensor names."""
    out = tmp_path / "compiled"
    run_torchrun(["-m", "dlrm_scale.cli", "train",
                  *config_args(out, "train.compile=true", "train.compile_backend=aot_eager")])
    compiled, eager = losses_by_step(out), losses_by_step(reference)
    assert compiled.keys() == eager.keys() == set(range(1, STEPS + 1))
    for step, loss in eager.items():
        assert abs(compiled[step] - loss) <= 1e-5 * max(1.0, abs(loss)), (step, compiled[step], loss)
    assert final_checkpoint(out, tmp_path).keys() == final_checkpoint(reference, tmp_path).keys()


def test_sigkilled_rank_restarts_and_resumes_from_checkpoint(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHON": sys.executable, "MASTER_PORT": str(free_port()), "NPROC_PER_NODE": "2",
           "MAX_RESTARTS": "1", "RDZV_ID": f"kill-{os.getpid()}", "DLRM_SCALE_DEBUG_ROWS": "1",
           "DLRM_SCALE_DEBUG_KILL": "1:12", "PYTHONPATH": _pythonpath()}
    proc = run_job(["bash", "launch/torchrun.sh", *config_args(out)], env=env)
    assert "resumed from" in proc.stdout and "ckpt-00000010" in proc.stdout
    steps = row_log(out)
    assert {record["attempt"] for record in steps.values()} == {0, 1}
    assert min(step for (_, step), r in steps.items() if r["attempt"] == 1) == 11, "restart resumes after step 10"
    reference_steps = row_log(reference)
    assert steps.keys() == reference_steps.keys()
    for key, record in reference_steps.items():
        assert steps[key]["rows"] == record["rows"], f"rank {key[0]} step {key[1]} trained on other rows"
    assert losses_by_step(out) == pytest.approx(losses_by_step(reference), rel=1e-6, abs=1e-7)
    recovered, straight = final_checkpoint(out, tmp_path), final_checkpoint(reference, tmp_path)
    assert recovered.keys() == straight.keys()
    for name, value in straight.items():
        torch.testing.assert_close(recovered[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_eval_is_exact_over_padded_ranks(reference: Path, tmp_path: Path) -> None:
    """The 2-rank evaluation (batches of 64 per rank, the last one padded) equals a 1-process evaluation of the
    same checkpoint in one unpadded batch: padding is excluded and every row counted once."""
    in_training = records(reference, "eval")[-1]
    assert in_training["rows"] == ROWS and in_training["step"] == STEPS
    result = tmp_path / "eval.json"
    run_job([sys.executable, "-m", "dlrm_scale.cli", "eval", "--split", "val", "--json", str(result),
             *config_args(reference, f"train.eval_batch_size={ROWS}")], env=_single_process_env())
    single = json.loads(result.read_text())
    assert single["rows"] == ROWS and single["checkpoint"].endswith(f"ckpt-{STEPS:08d}")
    for metric in ("auc", "logloss", "ne", "accuracy", "ctr"):
        assert single[metric] == pytest.approx(in_training[metric], rel=1e-6, abs=1e-9), metric
    assert 0.5 < single["auc"] < 1.0


def test_resume_on_another_world_size_is_refused(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "one-rank"
    shutil.copytree(reference / "checkpoints", out / "checkpoints")
    proc = subprocess.run([sys.executable, "-m", "dlrm_scale.cli", "train", *config_args(out)], cwd=REPO,
                          env=_single_process_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "was written by 2 ranks but this job has 1" in proc.stderr and "Traceback" not in proc.stderr
