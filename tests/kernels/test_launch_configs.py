"""Launch configurations of the fused dot kernels: every candidate computes the right values (persistent grids
included), the chooser keeps the fastest and caches it, the committed sm_90 resource reports cover every
candidate with no spill under Triton 3.6 and 3.9, a compile error in the first fused call falls back to the plain
ops with one warning, and the bf16 path runs as compiled except where the interpreter cannot (its bf16 dot)."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from dlrm_scale.kernels import dot_interaction, num_pairs, reference_dot_interaction
from dlrm_scale.kernels.launch_configs import (
    _GRAM_ELEMENTS,
    ConfigChooser,
    LaunchConfig,
    block_fields,
    candidates,
)

dispatch = importlib.import_module("dlrm_scale.kernels.dot_interaction")
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
# The shapes of the presets and benchmarks (Kaggle D = 16; Terabyte / MLPerf D = 128), as kernel_resources.py
# compiles them.
SHAPES = [(features, dim) for features in (8, 26, 40) for dim in (16, 64, 128)]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    assert torch.isfinite(got).all()
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize(("features", "dim"), SHAPES)
def test_candidates_hold_more_samples_within_register_budgets(features: int, dim: int, dtype: torch.dtype) -> None:
    options = candidates(features, dim, dtype)
    assert len(set(options)) == len(options) >= 1
    fields = block_fields(features)
    for option in options:
        assert option.block_b * fields * fields <= _GRAM_ELEMENTS[dtype != torch.float32]
        assert option.block_d >= 16 and option.num_warps == 8
    # a persistent grid is among the 16-bit candidates (where the sm_90 report allows it: F' <= 32)
    if fields <= 32:
        assert any(option.programs_per_sm for option in options) == (dtype != torch.float32)
    if dim >= 64 and fields <= 32:
        assert max(option.block_b for option in options) >= 2 * options[0].block_b


@pytest.mark.parametrize("version", ["3.6.0", "3.9.0"])
def test_committed_resource_report_covers_every_candidate_without_spills(version: str) -> None:
    """``benchmarks/kernel_resources.py`` compiled every candidate for sm_90 under both Triton releases; a
    candidate added later without re-running it fails here."""
    report = json.loads((RESULTS / f"kernel_resources_triton-{version}.json").read_text())
    assert report["meta"]["triton"] == version and report["meta"]["arch"] == 90
    compiled = {(r["dtype"], r["features"], r["dim"], r["kernel"], r["config"]): r for r in report["records"]}
    for dtype_name, dtype in DTYPES.items():
        for features, dim in SHAPES:
            for option in candidates(features, dim, dtype):
                for kernel in ("fwd", "bwd"):
                    record = compiled[(dtype_name, features, dim, kernel, option.label())]
                    assert record["stack_bytes"] == 0, record
                    assert record["shared_bytes"] <= 227 * 1024  # an H100 / H200 block's limit
                    if dtype_name == "bf16":
                        assert "HMMA.16816.F32.BF16" in record["ops"]  # the tensor-core path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_every_candidate_computes_the_reference(fused_device: torch.device, dtype: torch.dtype) -> None:
    """Forward and backward of each candidate, persistent grids included (one "multiprocessor" on the CPU, so a
    program walks several blocks), on a batch that leaves a partial last block."""
    from dlrm_scale.kernels import dot_triton

    features, dim, batch = 26, 64, 37
    generator = torch.Generator().manual_seed(5)
    dense = torch.randn(batch, dim, generator=generator).to(fused_device, dtype)
    sparse = torch.randn(batch, features, dim, generator=generator).to(fused_device, dtype)
    width = dim + num_pairs(features, self_interaction=False) + 3
    upstream = torch.randn(batch, width, generator=generator).to(fused_device, dtype)
    dense64, sparse64 = dense.double().requires_grad_(), sparse.double().requires_grad_()
    want = reference_dot_interaction(dense64, sparse64, output_dim=width)
    want_grads = torch.autograd.grad(want, (dense64, sparse64), upstream.double())
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    for option in candidates(features, dim, dtype):
        out = torch.full((batch, width), float("nan"), device=fused_device, dtype=dtype)
        dot_triton.forward(dense, sparse, out, self_interaction=False, compute_dtype=dtype, config=option)
        grads = (torch.full_like(dense, float("nan")), torch.full_like(sparse, float("nan")))
        dot_triton.backward(upstream, dense, sparse, *grads, self_interaction=False, compute_dtype=dtype,
                            config=option)
        for got, expected in ((out, want), *zip(grads, want_grads)):
            assert relative_error(got, expected) < tolerance, option


def test_bf16_runs_as_compiled_except_the_interpreters_dot(fused_device: torch.device) -> None:
    """Under the interpreter only bf16 dots are widened to fp32, and only while the interpreter's bf16 dot is
    wrong (a direct probe, so the real path is exercised once Triton fixes it); fp16 and fp32 never are, and
    compiled kernels never widen."""
    from dlrm_scale.kernels import dot_triton

    assert not dot_triton._widen_dot(torch.float16) and not dot_triton._widen_dot(torch.float32)
    if not dot_triton.interpreted():
        assert not dot_triton._widen_dot(torch.bfloat16)
        return
    a = torch.randn(16, 16).to(torch.bfloat16)
    b = torch.randn(16, 16).to(torch.bfloat16)
    out = torch.empty(16, 16)
    dot_triton._dot_probe_kernel[(1,)](a, b, out)
    interpreter_right = torch.allclose(out, a.float() @ b.float(), rtol=1e-3, atol=1e-3)
    assert dot_triton._widen_dot(torch.bfloat16) == (not interpreter_right)


def test_chooser_keeps_the_fastest_skips_failures_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLRM_SCALE_KERNEL_CACHE", str(tmp_path / "configs.json"))
    options = [LaunchConfig(block_b=b, block_d=32, num_warps=8, num_stages=1) for b in (1, 2, 4)]
    timed = []

    def timer(config: LaunchConfig) -> float:
        timed.append(config)
        if config.block_b == 4:
            raise RuntimeError("out of resources: shared memory")
        return {1: 3.0, 2: 1.0}[config.block_b]

    assert ConfigChooser().choose("case", options, timer) == options[1]
    assert len(timed) == 3
    stored = json.loads((tmp_path / "configs.json").read_text())
    assert stored == {"case": [2, 32, 8, 1, 0]}
    # A new process reads the verdict instead of timing again; without a timer the default is taken.
    assert ConfigChooser().choose("case", options, timer) == options[1] and len(timed) == 3
    assert ConfigChooser().choose("other", options, None) == options[0] and len(timed) == 3
    # A stored config that is no longer a candidate is ignored (re-timed); all failing is an error.
    (tmp_path / "configs.json").write_text(json.dumps({"case": [9, 9, 9, 9, 9]}))
    assert ConfigChooser().choose("case", options, timer) == options[1] and len(timed) == 6
    with pytest.raises(RuntimeError, match="no launch configuration.*out of resources"):
        ConfigChooser().choose("bad", options[2:], timer)


def test_a_compile_error_in_the_first_fused_call_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                                             fused_device: torch.device) -> None:
    """A forward kernel that fails to compile (a real ``tl.static_assert`` failure, compiled or interpreted):
    ``auto`` warns once, returns the reference, and never tries the kernels again for that case."""
    import triton
    import triton.language as tl

    from dlrm_scale.kernels import dot_triton

    @triton.jit
    def broken(dense_ptr, sparse_ptr, out_ptr, B, F, D, num_pairs, output_dim, stride_dense, stride_sparse_b,
               stride_sparse_f, stride_out, SELF_INTERACTION: tl.constexpr, COMPUTE: tl.constexpr,
               PRECISION: tl.constexpr, WIDEN_DOT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_F: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_PAD: tl.constexpr, PERSISTENT: tl.constexpr):
        tl.static_assert(BLOCK_B < 0, "forced compile error")

    monkeypatch.setattr(dispatch, "fused_supported", lambda dense, sparse: True)
    monkeypatch.setattr(dispatch, "_checked", {})
    monkeypatch.setattr(dot_triton, "_dot_forward_kernel", broken)
    generator = torch.Generator().manual_seed(2)
    dense = torch.randn(9, 16, generator=generator).to(fused_device)
    sparse = torch.randn(9, 4, 16, generator=generator).to(fused_device)
    want = reference_dot_interaction(dense, sparse)
    with pytest.warns(RuntimeWarning, match="fused Triton kernels failed.*forced compile error") as caught:
        first = dot_interaction(dense, sparse)
    assert len([w for w in caught if "fused Triton kernels" in str(w.message)]) == 1
    assert torch.equal(first, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(dot_interaction(dense, sparse), want)


@pytest.mark.gpu
def test_on_a_gpu_the_fastest_candidate_is_chosen_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlrm_scale.kernels import dot_triton

    monkeypatch.setenv("DLRM_SCALE_KERNEL_TUNING", "1")
    monkeypatch.setenv("DLRM_SCALE_KERNEL_CACHE", str(tmp_path / "configs.json"))
    monkeypatch.setattr(dot_triton, "chooser", ConfigChooser())
    device = torch.device("cuda")
    chosen = {kernel: dot_triton._choose(kernel, 26, 128, torch.bfloat16, False, device) for kernel in ("fwd", "bwd")}
    assert all(config in candidates(26, 128, torch.bfloat16) for config in chosen.values())
    stored = json.loads((tmp_path / "configs.json").read_text())
    assert len(stored) == 2 and all(torch.cuda.get_device_name(device) in key for key in stored)
    print("chosen at F=26, D=128, bf16:", {kernel: config.label() for kernel, config in chosen.items()})
