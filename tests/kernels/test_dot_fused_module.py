"""`dot_fused`: registered, same width as `dot`, and on CPU (no Triton involved) bit-identical to `dot` in the
forward and backward passes; float64 gradcheck through that fallback; clear errors for bad calls; `dot`'s
``kernel`` option picks the kernels or the plain ops."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import pytest
import torch

from dlrm_scale.kernels import dot_interaction, fused_supported, reference_dot_interaction
from dlrm_scale.models.interactions import INTERACTIONS, build_interaction, load_builtin

# The module, not the function of the same name that `dlrm_scale.kernels` exports.
dispatch = importlib.import_module("dlrm_scale.kernels.dot_interaction")


@pytest.mark.parametrize(("features", "dim", "params"), [
    (26, 128, {}), (26, 128, {"pad_to_multiple": 8}), (1, 3, {"self_interaction": True}),
    (40, 64, {"self_interaction": True, "pad_to_multiple": 16}), (8, 7, {"pad_to_multiple": 5}),
])
def test_output_dim_equals_dot(features: int, dim: int, params: dict) -> None:
    load_builtin()
    assert "dot_fused" in INTERACTIONS.names()
    dot = build_interaction("dot", params, num_sparse_features=features, embedding_dim=dim)
    fused = build_interaction("dot_fused", params, num_sparse_features=features, embedding_dim=dim)
    assert fused.output_dim == dot.output_dim


@pytest.mark.parametrize(("self_interaction", "pad_to_multiple"), [(False, 1), (True, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cpu_fallback_is_bit_identical_to_dot(self_interaction: bool, pad_to_multiple: int,
                                              dtype: torch.dtype) -> None:
    params = {"self_interaction": self_interaction, "pad_to_multiple": pad_to_multiple}
    dot = build_interaction("dot", params, num_sparse_features=26, embedding_dim=33)
    fused = build_interaction("dot_fused", params, num_sparse_features=26, embedding_dim=33)
    generator = torch.Generator().manual_seed(int(self_interaction) + pad_to_multiple)
    dense = torch.randn(17, 33, generator=generator).to(dtype)
    sparse = torch.randn(17, 26, 33, generator=generator).to(dtype)
    assert not fused_supported(dense, sparse)
    inputs = [(dense.clone().requires_grad_(), sparse.clone().requires_grad_()) for _ in range(2)]
    out_dot, out_fused = dot(*inputs[0]), fused(*inputs[1])
    assert torch.equal(out_fused, out_dot)
    upstream = torch.randn(out_dot.shape, generator=generator).to(dtype)
    for got, want in zip(torch.autograd.grad(out_fused, inputs[1], upstream),
                         torch.autograd.grad(out_dot, inputs[0], upstream)):
        assert torch.equal(got, want)


def test_gradcheck_float64_through_the_fallback() -> None:
    fused = build_interaction("dot_fused", {"self_interaction": True, "pad_to_multiple": 4}, num_sparse_features=3,
                              embedding_dim=5).double()
    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    sparse = torch.randn(3, 3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fused, (dense, sparse), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradcheck(lambda d, s: reference_dot_interaction(d, s), (dense, sparse), eps=1e-6,
                                    atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize(("dense_shape", "sparse_shape", "kwargs", "match"), [
    ((4, 8), (4, 3, 7), {}, "needs dense"),
    ((4, 8), (5, 3, 8), {}, "needs dense"),
    ((4, 8), (4, 3, 8), {"output_dim": 10}, "output_dim 10 < D \\+ P = 14"),
    ((4, 8), (4, 3, 8), {"backend": "cuda"}, "backend must be"),
])
def test_bad_calls_name_the_problem(dense_shape, sparse_shape, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        dot_interaction(torch.randn(dense_shape), torch.randn(sparse_shape), **kwargs)


def test_unsupported_dtype_for_the_kernels_is_a_clear_error(fused_device) -> None:
    with pytest.raises(ValueError, match="fused dot interaction: dense must be"):
        dot_interaction(torch.randn(2, 4, dtype=torch.float64, device=fused_device),
                        torch.randn(2, 3, 4, dtype=torch.float64, device=fused_device), backend="triton")


def test_cpu_tensors_without_the_interpreter_are_a_clear_error() -> None:
    """In a fresh process without TRITON_INTERPRET, asking for the kernels on CPU tensors names the fix."""
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    code = ("import torch; from dlrm_scale.kernels import dot_interaction\n"
            "try:\n    dot_interaction(torch.randn(2, 4), torch.randn(2, 3, 4), backend='triton')\n"
            "except ValueError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "the Triton kernels need CUDA tensors, or TRITON_INTERPRET=1" in result.stdout, result.stderr


@pytest.mark.parametrize(("kernel", "fused_applies", "expect_fused"), [
    ("auto", True, True), ("auto", False, False), ("torch", True, False), ("triton", False, True),
])
def test_dot_kernel_option_selects_the_implementation(monkeypatch: pytest.MonkeyPatch, fused_device: torch.device,
                                                      kernel: str, fused_applies: bool, expect_fused: bool) -> None:
    """`dot`'s ``kernel``: ``auto`` follows ``fused_supported`` (true for CUDA tensors; forced here either way, so
    without a GPU the kernels run under Triton's interpreter), ``torch`` never takes the kernels, ``triton`` always
    does; each gives the reference's values."""
    calls = []
    original = dispatch._fused_forward

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(dispatch, "_fused_forward", spy)
    _forced_auto(monkeypatch, applies=fused_applies)
    dot = build_interaction("dot", {"kernel": kernel, "pad_to_multiple": 8}, num_sparse_features=5,
                            embedding_dim=12)
    generator = torch.Generator().manual_seed(3)
    dense = torch.randn(6, 12, generator=generator).to(fused_device)
    sparse = torch.randn(6, 5, 12, generator=generator).to(fused_device)
    out = dot.to(fused_device)(dense, sparse)
    assert bool(calls) == expect_fused
    want = dispatch.reference_dot_interaction(dense, sparse, output_dim=dot.output_dim)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def _forced_auto(monkeypatch: pytest.MonkeyPatch, *, applies: bool = True) -> list[str | None]:
    """``fused_supported`` answers ``applies`` for any tensors (so without a GPU the kernels run under the
    interpreter), with a fresh self-check cache; returns the list the self-check appends its verdicts to."""
    verdicts: list[str | None] = []
    check = dispatch._self_check

    def counted(*args, **kwargs):
        verdicts.append(check(*args, **kwargs))
        return verdicts[-1]

    monkeypatch.setattr(dispatch, "fused_supported", lambda dense, sparse: applies)
    monkeypatch.setattr(dispatch, "_checked", {})
    monkeypatch.setattr(dispatch, "_self_check", counted)
    return verdicts


def _inputs(device: torch.device, batch: int = 70) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return (torch.randn(batch, 12, generator=generator).to(device),
            torch.randn(batch, 5, 12, generator=generator).to(device))


def test_auto_checks_the_kernels_once_per_case_then_uses_them(monkeypatch: pytest.MonkeyPatch,
                                                              fused_device: torch.device) -> None:
    verdicts = _forced_auto(monkeypatch)
    dense, sparse = _inputs(fused_device)
    first = dot_interaction(dense, sparse)
    second = dot_interaction(dense, sparse)
    assert verdicts == [None]  # checked once, passed
    dot_interaction(dense[:, :8].contiguous(), sparse[:, :, :8].contiguous())  # another D: another check
    assert verdicts == [None, None]
    want = reference_dot_interaction(dense, sparse)
    torch.testing.assert_close(first, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, second)


@pytest.mark.parametrize(("broken", "named"), [("_fused_forward", "output"), ("_fused_backward", "d dense")])
def test_auto_falls_back_to_the_reference_when_the_kernels_disagree(monkeypatch: pytest.MonkeyPatch,
                                                                    fused_device: torch.device, broken: str,
                                                                    named: str) -> None:
    """A kernel that computes wrong values on some machine (simulated: doubled results) is caught by the first
    call's self-check, forward or backward; that call and every later one return the reference, with one warning."""
    verdicts = _forced_auto(monkeypatch)
    original = getattr(dispatch, broken)

    def doubled(*args, **kwargs):
        result = original(*args, **kwargs)
        if isinstance(result, tuple):
            return tuple(part * 2 for part in result)
        return result * 2

    monkeypatch.setattr(dispatch, broken, doubled)
    dense, sparse = _inputs(fused_device)
    want = reference_dot_interaction(dense, sparse)
    with pytest.warns(RuntimeWarning, match=f"disagree with the reference.*{named}"):
        first = dot_interaction(dense, sparse)
    assert torch.equal(first, want)
    assert len(verdicts) == 1 and named in verdicts[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(dot_interaction(dense, sparse), want)  # no second check, no second warning
    assert len(verdicts) == 1
    if broken == "_fused_forward":  # an explicit backend="triton" is never second-guessed (benchmarks time it)
        torch.testing.assert_close(dot_interaction(dense, sparse, backend="triton"), want * 2)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_self_check_runs_under_evaluation_modes(monkeypatch: pytest.MonkeyPatch, fused_device: torch.device,
                                                mode: str) -> None:
    """Evaluation calls the interaction without autograd; the first call's check still needs gradients."""
    verdicts = _forced_auto(monkeypatch)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        dense, sparse = _inputs(fused_device)
        out = dot_interaction(dense, sparse)
    assert verdicts == [None]
    torch.testing.assert_close(out, reference_dot_interaction(dense, sparse), rtol=1e-5, atol=1e-5)
