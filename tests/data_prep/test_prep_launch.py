"""The torchx prep component: one rank per replica, and a real 2-replica run on ``local_cwd``."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrm_scale.data.manifest import Manifest
from launch.prep_components import prep as prep_component
from tests.data_prep.raw import prep, random_lines, write_lines
from tests.dist_utils import run_torchx


def test_spec_gives_each_replica_its_rank() -> None:
    app = prep_component("--input", "/d/day_0", "/d/day_1", "--out", "/d/out", replicas=4, workers=8, cpu=8,
                         max_retries=2, mounts=["type=bind", "src=/d", "dst=/d"])
    (role,) = app.roles
    assert role.num_replicas == 4 and role.max_retries == 2 and role.resource.cpu == 8
    assert role.entrypoint == "python"
    assert role.args == ["-m", "dlrm_scale.cli", "prep", "criteo", "--input", "/d/day_0", "/d/day_1", "--out",
                         "/d/out", "--rank", "${replica_id}", "--world-size", "4", "--workers", "8"]
    assert role.mounts[0].src_path == "/d"
    with pytest.raises(ValueError, match="--rank"):
        prep_component("--input", "x", "--rank", "1")


@pytest.mark.multiproc
def test_torchx_local_cwd_two_replicas(tmp_path: Path) -> None:
    days = [write_lines(tmp_path / f"day_{d}", random_lines(300, seed=d)) for d in range(3)]
    args = ["--input", *map(str, days), "--dataset", "terabyte", "--encoding", "vocab", "--chunk-bytes", "20000",
            "--no-progress"]
    single = tmp_path / "single"
    assert prep(*args, "--out", single, "--workers", "1") == 0
    output = run_torchx(["-s", "local_cwd", "launch/prep_components.py:prep", "--replicas", "2", "--workers", "1",
                         "--", *args, "--out", str(tmp_path / "shared")])
    assert "SUCCEEDED" in output and "rank 1 done" in output
    shared, reference = Manifest.load(tmp_path / "shared"), Manifest.load(single)
    assert shared.splits == reference.splits and shared.cardinalities == reference.cardinalities
