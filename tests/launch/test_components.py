"""The torchx component: a scheduler-agnostic torchrun job spec, and a real 2-process run on ``local_cwd``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.components import train
from launch.torchx_cmds import join_repeated
from tests.dist_utils import REPO, run_torchx


def test_spec_is_torchrun_of_the_train_command_with_restarts() -> None:
    app = train("--config", "mlperf_dcnv2", "--set=train.out_dir=/shared/run1", j="4x8", gpu=8, max_restarts=3,
                max_retries=2, image="registry/dlrm-scale:1")
    (role,) = app.roles
    assert role.num_replicas == 4 and role.max_retries == 2 and role.resource.gpu == 8
    assert role.image == "registry/dlrm-scale:1"
    command = role.args[-1]
    assert command.startswith("torchrun --max_restarts 3 --rdzv_backend c10d ")
    assert "--nnodes 4 --nproc_per_node 8" in command
    assert command.endswith("-m dlrm_scale.cli train --config mlperf_dcnv2 --set=train.out_dir=/shared/run1")
    assert str(REPO) not in command, "the spec must not depend on this checkout's location"
    with pytest.raises(ValueError, match="max_restarts"):
        train("--config", "tiny_cpu", max_restarts=-1)
    with pytest.raises(ValueError, match="need a run folder every attempt finds: --set train.out_dir="):
        train("--config", "tiny_cpu", max_restarts=1)


def test_repeated_set_is_joined_for_torchx() -> None:
    assert join_repeated(["launch/components.py:train", "-j", "1x2", "--", "--config", "x", "--set", "a=1",
                          "--set", "b={c = 2}", "--set=d=3"]) == [
        "launch/components.py:train", "-j", "1x2", "--", "--config", "x", "--set=a=1", "--set=b={c = 2}", "--set=d=3"]
    from importlib.metadata import entry_points

    tomllib = __import__("tomllib")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["torchx.cli.cmds"]
    assert declared == {"run": "launch.torchx_cmds:CmdRun"}
    installed = {ep.name: ep.value for ep in entry_points(group="torchx.cli.cmds")}
    assert installed.get("run", "launch.torchx_cmds:CmdRun") == "launch.torchx_cmds:CmdRun"


@pytest.mark.multiproc
def test_torchx_local_cwd_runs_the_quickstart_config_on_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    overrides = ["data.source=synthetic", "data.cardinalities=[500,60,7000,9]", "data.synthetic_rows=900",
                 "train.batch_size=32", "train.max_steps=6", "train.checkpoint_every_steps=3",
                 "train.progress=false", f"train.out_dir={out}"]
    output = run_torchx(["-s", "local_cwd", "launch/components.py:train", "-j", "1x2", "--", "--config", "tiny_cpu",
                         *[arg for setting in overrides for arg in ("--set", setting)]])
    assert "SUCCEEDED" in output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = records[-1]
    assert summary["kind"] == "summary" and summary["steps"] == 6 and summary["samples"] == 6 * 2 * 32
    assert 0 < summary["eval_auc"] < 1 and summary["eval_rows"] == 900
    assert (out / "checkpoints" / "ckpt-00000006" / ".metadata").is_file()
