"""The fused dot interaction (Triton forward and backward) against the plain reference and the `dot` module, on
fresh random inputs: odd B, F and D, with and without self-interaction and padding, fp32 and bf16, every output
element written, strided and mixed-dtype inputs, autocast, and torch.compile capture."""

from __future__ import annotations

import pytest
import torch

from dlrm_scale.kernels import dot_interaction, num_pairs, reference_dot_interaction
from dlrm_scale.models.interactions import build_interaction

# Relative error ||got - want|| / ||want|| against a float64 reference: fp32 products in full fp32 (TF32 is off
# by default, and the kernels follow torch's switch), bf16 rounds inputs and outputs to 8 mantissa bits.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
SHAPES = [(5, 3, 7), (33, 26, 128), (4, 1, 16), (3, 40, 33)]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    assert torch.isfinite(got).all()
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def random_inputs(batch: int, features: int, dim: int, *, dtype: torch.dtype, device: torch.device, seed: int):
    generator = torch.Generator().manual_seed(seed)
    dense = torch.randn(batch, dim, generator=generator).to(device=device, dtype=dtype)
    sparse = torch.randn(batch, features, dim, generator=generator).to(device=device, dtype=dtype)
    return dense.requires_grad_(), sparse.requires_grad_()


def reference_with_grads(dense, sparse, upstream, *, self_interaction, output_dim):
    """Output and input gradients of the reference in float64."""
    dense64 = dense.detach().double().requires_grad_()
    sparse64 = sparse.detach().double().requires_grad_()
    out = reference_dot_interaction(dense64, sparse64, self_interaction=self_interaction, output_dim=output_dim)
    return (out, *torch.autograd.grad(out, (dense64, sparse64), upstream.double()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("self_interaction", "pad_to_multiple"), [(False, 1), (True, 1), (False, 8), (True, 16)])
@pytest.mark.parametrize(("batch", "features", "dim"), SHAPES)
def test_matches_reference_and_dot_module(fused_device, dtype, self_interaction, pad_to_multiple, batch, features,
                                          dim) -> None:
    dot = build_interaction("dot", {"self_interaction": self_interaction, "pad_to_multiple": pad_to_multiple},
                            num_sparse_features=features, embedding_dim=dim).to(fused_device)
    fused = build_interaction("dot_fused", {"self_interaction": self_interaction, "pad_to_multiple": pad_to_multiple},
                              num_sparse_features=features, embedding_dim=dim).to(fused_device)
    assert fused.output_dim == dot.output_dim
    dense, sparse = random_inputs(batch, features, dim, dtype=dtype, device=fused_device,
                                  seed=batch * 1000 + features * 10 + dim + self_interaction)
    out = dot_interaction(dense, sparse, self_interaction=self_interaction, output_dim=dot.output_dim,
                          backend="triton")
    assert out.shape == (batch, dot.output_dim) and out.dtype == dtype
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(fused_device, dtype)
    grad_dense, grad_sparse = torch.autograd.grad(out, (dense, sparse), upstream)
    want, want_dense, want_sparse = reference_with_grads(dense, sparse, upstream, self_interaction=self_interaction,
                                                         output_dim=dot.output_dim)
    for got, expected in ((out, want), (grad_dense, want_dense), (grad_sparse, want_sparse)):
        assert relative_error(got, expected) < TOLERANCE[dtype]
    # The dense passthrough is copied, and the padding is zeros, exactly.
    assert torch.equal(out[:, :dim], dense.detach())
    assert not out[:, dim + num_pairs(features, self_interaction=self_interaction):].any()
    # The models engineer's `dot`, run in the same dtype, agrees to the same tolerance.
    dot_out = dot(dense, sparse)
    dot_dense, dot_sparse = torch.autograd.grad(dot_out, (dense, sparse), upstream)
    for got, expected in ((out, dot_out), (grad_dense, dot_dense), (grad_sparse, dot_sparse)):
        assert relative_error(got, expected) < TOLERANCE[dtype]


def test_every_element_is_written(fused_device) -> None:
    """Outputs and gradients poisoned with NaN before the launch come back finite and right."""
    from dlrm_scale.kernels import dot_triton

    dense, sparse = random_inputs(9, 5, 19, dtype=torch.float32, device=fused_device, seed=3)
    dense, sparse = dense.detach(), sparse.detach()
    output_dim = 19 + num_pairs(5, self_interaction=False) + 3
    out = torch.full((9, output_dim), float("nan"), device=fused_device)
    dot_triton.forward(dense, sparse, out, self_interaction=False, compute_dtype=torch.float32)
    want = reference_dot_interaction(dense.double(), sparse.double(), output_dim=output_dim)
    assert relative_error(out, want) < 1e-5
    grad_out = torch.randn(9, output_dim, device=fused_device)
    grad_dense = torch.full_like(dense, float("nan"))
    grad_sparse = torch.full_like(sparse, float("nan"))
    dot_triton.backward(grad_out, dense, sparse, grad_dense, grad_sparse, self_interaction=False,
                        compute_dtype=torch.float32)
    _, want_dense, want_sparse = reference_with_grads(dense, sparse, grad_out, self_interaction=False,
                                                      output_dim=output_dim)
    assert relative_error(grad_dense, want_dense) < 1e-5 and relative_error(grad_sparse, want_sparse) < 1e-5


def test_strided_inputs_and_broadcast_gradient(fused_device) -> None:
    """Views with a non-unit inner stride or padded rows, and the stride-0 gradient of ``out.sum()``."""
    base = torch.randn(6, 8, 2 * 12, device=fused_device)
    sparse = base[:, 1:, ::2].requires_grad_()  # (6, 7, 12), last-dim stride 2
    dense = torch.randn(6, 20, device=fused_device)[:, 3:15].requires_grad_()  # row stride 20
    out = dot_interaction(dense, sparse, output_dim=12 + 28 + 4, backend="triton")
    out.sum().backward()
    want, want_dense, want_sparse = reference_with_grads(dense, sparse, torch.ones_like(out), self_interaction=False,
                                                         output_dim=44)
    assert relative_error(out, want) < 1e-5
    assert relative_error(dense.grad, want_dense) < 1e-5 and relative_error(sparse.grad, want_sparse) < 1e-5


def test_mixed_dtypes_follow_the_reference(fused_device) -> None:
    """fp32 dense with bf16 sparse: computed and returned in fp32, as ``cat`` promotes in the reference; each
    gradient in its input's dtype."""
    dense, _ = random_inputs(7, 4, 24, dtype=torch.float32, device=fused_device, seed=5)
    _, sparse = random_inputs(7, 4, 24, dtype=torch.bfloat16, device=fused_device, seed=6)
    out = dot_interaction(dense, sparse, backend="triton")
    want = reference_dot_interaction(dense, sparse)
    assert out.dtype == want.dtype == torch.float32
    assert relative_error(out, want) < 1e-5
    grad_dense, grad_sparse = torch.autograd.grad(out.sum(), (dense, sparse))
    want_dense, want_sparse = torch.autograd.grad(want.sum(), (dense, sparse))
    assert grad_dense.dtype == torch.float32 and grad_sparse.dtype == torch.bfloat16
    assert relative_error(grad_dense, want_dense) < 1e-5 and relative_error(grad_sparse, want_sparse) < 1e-2


def test_autocast_computes_in_the_autocast_dtype(fused_device) -> None:
    """Under autocast ``bmm`` runs in bf16 and ``cat`` promotes back to fp32: the fused op does the same."""
    dense, sparse = random_inputs(6, 5, 32, dtype=torch.float32, device=fused_device, seed=8)
    with torch.autocast(fused_device.type, dtype=torch.bfloat16):
        out = dot_interaction(dense, sparse, backend="triton")
        want = reference_dot_interaction(dense, sparse)
    assert out.dtype == want.dtype == torch.float32
    exact = reference_dot_interaction(dense.double(), sparse.double())
    assert relative_error(want, exact) > 1e-4  # the reference really ran in bf16 ...
    assert relative_error(out, exact) < 1e-2  # ... and so did the fused op, to bf16 accuracy
    assert torch.equal(out[:, :32], dense.detach())


def test_empty_batch(fused_device) -> None:
    dense, sparse = random_inputs(0, 3, 8, dtype=torch.float32, device=fused_device, seed=0)
    out = dot_interaction(dense, sparse, output_dim=16, backend="triton")
    assert out.shape == (0, 16)
    grad_dense, grad_sparse = torch.autograd.grad(out.sum(), (dense, sparse))
    assert grad_dense.shape == (0, 8) and grad_sparse.shape == (0, 3, 8)


def test_torch_compile_fullgraph(fused_device) -> None:
    """Dynamo captures the fused op (custom ops inside the autograd.Function) without graph breaks."""
    torch._dynamo.reset()

    def interaction(dense, sparse):
        return dot_interaction(dense, sparse, self_interaction=True, output_dim=24, backend="triton")

    compiled = torch.compile(interaction, backend="aot_eager", fullgraph=True)
    dense, sparse = random_inputs(5, 3, 9, dtype=torch.float32, device=fused_device, seed=11)
    out = compiled(dense, sparse)
    want, want_dense, want_sparse = reference_with_grads(dense, sparse, torch.ones_like(out), self_interaction=True,
                                                         output_dim=24)
    grad_dense, grad_sparse = torch.autograd.grad(out.sum(), (dense, sparse))
    assert relative_error(out, want) < 1e-5
    assert relative_error(grad_dense, want_dense) < 1e-5 and relative_error(grad_sparse, want_sparse) < 1e-5


@pytest.mark.gpu
def test_batch_beyond_32_bit_offsets() -> None:
    """More than 2^31 elements in ``sparse``: per-program 64-bit base offsets keep the last rows right (checked on
    a sample of rows, first and last included)."""
    features, dim = 26, 128
    batch = 2**31 // (features * dim) + 1001
    generator = torch.Generator(device="cuda").manual_seed(0)
    dense = torch.randn(batch, dim, device="cuda", dtype=torch.bfloat16, generator=generator).requires_grad_()
    sparse = torch.randn(batch, features, dim, device="cuda", dtype=torch.bfloat16,
                         generator=generator).requires_grad_()
    out = dot_interaction(dense, sparse, backend="triton")
    upstream = torch.randn(out.shape, device="cuda", dtype=torch.bfloat16, generator=generator)
    grad_dense, grad_sparse = torch.autograd.grad(out, (dense, sparse), upstream)
    rows = torch.cat((torch.arange(4), torch.randint(0, batch, (60,), generator=generator, device="cuda").cpu(),
                      torch.arange(batch - 4, batch))).cuda()
    want, want_dense, want_sparse = reference_with_grads(dense[rows], sparse[rows], upstream[rows],
                                                         self_interaction=False, output_dim=out.shape[1])
    assert relative_error(out[rows], want) < 1e-2
    assert relative_error(grad_dense[rows], want_dense) < 1e-2
    assert relative_error(grad_sparse[rows], want_sparse) < 1e-2
