"""The GPU knobs of ``[sharding]``: quantized all-to-all through TorchRec's codecs (numerically, on 2 real ranks),
cache load factor and prefetch flag carried to the plan as ``CacheParams``, the prefetch pipeline chosen from the
plan, and their one-line validation errors (``dlrm-scale config`` included)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torchrec.distributed.train_pipeline import PrefetchTrainPipelineSparseDist, TrainPipelineSparseDist
from torchrec.distributed.types import CacheParams, ParameterSharding

from dlrm_scale.cli import main
from dlrm_scale.config import ConfigError, load_config
from dlrm_scale.models.dlrm import build_dlrm
from dlrm_scale.sharding.constraints import make_constraints
from dlrm_scale.sharding.options import check_options
from dlrm_scale.sharding.planner import plan_tables, prepare_model
from dlrm_scale.sharding.sharders import check_device_support, make_sharders
from dlrm_scale.train.steps import pipeline_class
from tests.dist_utils import run_torchrun

SMALL = ["data.cardinalities=[40, 30, 50, 20]", "model.embedding_dim=8", "model.bottom_mlp=[16, 8]",
         "model.top_mlp=[16, 1]", "train.batch_size=16"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["sharding.prefetch_pipeline=true", "train.pipeline=false"],
     "sharding.prefetch_pipeline = true needs train.pipeline = true"),
    (["sharding.cache_load_factor=0.1", "sharding.default_kernel=fused"],
     "sharding.cache_load_factor = 0.1 only applies to 'fused_uvm_caching' tables"),
    (["sharding.prefetch_pipeline=true", "sharding.default_kernel=fused_uvm"],
     "sharding.prefetch_pipeline = true only applies"),
    (["sharding.cache_load_factor=1.5"], "sharding.cache_load_factor must be in (0, 1]"),
    (["sharding.qcomms_forward=fp8"], "sharding.qcomms_forward: 'fp8' is not one of"),
])
def test_bad_knobs_are_one_line_errors_in_dlrm_scale_config(overrides: list[str], message: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", *[arg for o in overrides for arg in ("--set", o)]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlrm-scale config: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_good_knobs_print_in_dlrm_scale_config(capsys: pytest.CaptureFixture[str]) -> None:
    settings = ["sharding.qcomms_forward=fp16", "sharding.qcomms_backward=bf16", "sharding.cache_load_factor=0.3",
                "sharding.prefetch_pipeline=true", "sharding.tables.C1.compute_kernel=fused_uvm_caching",
                "sharding.default_kernel=fused", "train.tf32=true"]
    assert main(["config", *[arg for s in settings for arg in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    for line in ('qcomms_forward = "fp16"', 'qcomms_backward = "bf16"', "cache_load_factor = 0.3",
                 "prefetch_pipeline = true", "tf32 = true"):
        assert line in out


@pytest.mark.parametrize(("overrides", "key"), [
    (["sharding.qcomms_forward=bf16"], "sharding.qcomms_forward = 'bf16' needs CUDA"),
    (["sharding.qcomms_backward=bf16"], "sharding.qcomms_backward = 'bf16' needs CUDA"),
    (["sharding.prefetch_pipeline=true"], "sharding.prefetch_pipeline = true needs CUDA"),
])
def test_cuda_only_knobs_are_refused_on_cpu(overrides: list[str], key: str) -> None:
    cfg = load_config(None, [*SMALL, *overrides])
    check_options(cfg)
    with pytest.raises(ConfigError, match=key):
        check_device_support(cfg.sharding, cfg.optimizer.embedding.name, "cpu")
    check_device_support(cfg.sharding, cfg.optimizer.embedding.name, "cuda")


def test_qcomms_become_torchrecs_codec_registry() -> None:
    assert make_sharders(load_config(None, SMALL).sharding)[0].qcomm_codecs_registry is None
    cfg = load_config(None, [*SMALL, "sharding.qcomms_forward=fp16", "sharding.qcomms_backward=fp16"])
    registry = make_sharders(cfg.sharding, "cpu")[0].qcomm_codecs_registry
    assert "POOLED_EMBEDDINGS_ALL_TO_ALL" in registry
    codec = registry["POOLED_EMBEDDINGS_ALL_TO_ALL"]
    values = torch.randn(4, 8)
    assert codec.forward.encode(values).dtype == torch.float16
    assert torch.equal(codec.backward.decode(codec.backward.encode(values)), values.half().float())


def test_cache_params_reach_the_tables_that_may_be_cached() -> None:
    cfg = load_config(None, [*SMALL, "sharding.cache_load_factor=0.25", "sharding.prefetch_pipeline=true",
                             "sharding.tables.C2.compute_kernel=fused"])
    model = build_dlrm(cfg.model, cfg.data.cardinalities, device="meta")
    constraints = make_constraints(model, cfg)
    assert constraints["t_C1"].cache_params == CacheParams(load_factor=0.25, prefetch_pipeline=True)
    assert constraints["t_C2"].cache_params is None  # pinned to a kernel without a cache
    assert make_constraints(model, load_config(None, SMALL))["t_C1"].cache_params is None


def test_planner_sizes_uvm_caches_with_the_load_factor() -> None:
    """TorchRec's planner (CUDA topology, no device needed) puts cache_load_factor x rows of a cached table in
    HBM: a larger factor plans more HBM for the same table."""
    hbm = {}
    for factor in (0.1, 0.5):
        cfg = load_config(None, [*SMALL, "sharding.tables.C3.compute_kernel=fused_uvm_caching",
                                 "sharding.default_kernel=fused", f"sharding.cache_load_factor={factor}"])
        model = build_dlrm(cfg.model, cfg.data.cardinalities, device="meta")
        prepare_model(model, cfg)
        result = plan_tables(model, cfg, world_size=1, compute_device="cuda")
        sharding = next(plan["t_C3"] for plan in result.plan.plan.values() if "t_C3" in plan)
        assert sharding.compute_kernel == "fused_uvm_caching" and sharding.cache_params.load_factor == factor
        hbm[factor] = result.estimate.tables["t_C3"].hbm_bytes
    assert hbm[0.5] > hbm[0.1]


def _planned(kernel: str, prefetch: bool | None) -> SimpleNamespace:
    cache_params = CacheParams(prefetch_pipeline=prefetch) if prefetch is not None else None
    sharding = ParameterSharding(sharding_type="table_wise", compute_kernel=kernel, ranks=[0], cache_params=cache_params)
    return SimpleNamespace(plan=SimpleNamespace(plan={"model.sparse.ebc": {"t_C1": sharding}}))


@pytest.mark.parametrize(("kernel", "prefetch", "expected"), [
    ("fused_uvm_caching", True, PrefetchTrainPipelineSparseDist),
    ("fused_uvm_caching", None, TrainPipelineSparseDist),
    ("fused", True, TrainPipelineSparseDist),
])
def test_prefetch_pipeline_only_when_a_cached_table_was_sharded_for_it(kernel: str, prefetch: bool | None,
                                                                       expected: type) -> None:
    assert pipeline_class(_planned(kernel, prefetch)) is expected


@pytest.mark.multiproc
def test_fp16_qcomms_round_the_all_to_all_as_fbgemms_codec(tmp_path: Path) -> None:
    """Two ranks, a table on each: with fp16 qcomms every pooled embedding arrives rounded to fp16 (exactly), and
    the table updates (fused SGD, lr 1: minus the summed gradients that crossed back) differ from fp32's by fp16
    rounding of the gradients, no more."""
    out = tmp_path / "qcomms.json"
    run_torchrun([str(Path(__file__).with_name("_qcomms_worker.py")), str(out)], nproc=2, timeout=240)
    results = json.loads(out.read_text())
    exact, quantized = (torch.tensor(results[p]["pooled"]) for p in ("fp32", "fp16"))
    assert not torch.equal(exact, quantized)
    assert torch.equal(quantized, exact.half().float())
    for name, update in results["fp32"]["updates"].items():
        exact_update, quantized_update = torch.tensor(update), torch.tensor(results["fp16"]["updates"][name])
        difference = (quantized_update - exact_update).norm() / exact_update.norm()
        assert 0 < difference < 2**-10
