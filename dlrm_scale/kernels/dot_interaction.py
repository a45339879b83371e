"""DLRM's dot interaction as one fused op (Triton forward and backward) with an exact PyTorch fallback.

``dot_interaction(dense (B, D), sparse (B, F, D), self_interaction=False, output_dim=None) -> (B, output_dim)``:
``[dense | P pairwise dot products of the F' = F + 1 vectors [dense; sparse] | zero padding]``, pairs in TorchRec's
order (``InteractionArch``: row-major over ``torch.triu_indices(F', F', offset=1)``, or ``offset=0`` with
``self_interaction``), the layout of :class:`~dlrm_scale.models.interactions.dot.DotInteraction`.

Which implementation runs (``backend``):
- ``"auto"``: the Triton kernels for CUDA tensors of dtype fp32 / bf16 / fp16 when Triton is installed, else the
  reference. CPU inputs always take the reference, so results there are bit-identical to ``dot``'s. The first
  fused call for each device, shape and dtype in a process checks itself (:func:`_self_check`): forward and
  backward on up to 64 of the batch's rows against a float64 reference. Should a GPU or Triton release ever make
  the kernels wrong there, or fail (a compile error, a launch the GPU rejects: any exception in that first call),
  one warning says so and the reference serves that case from then on: a fast path that was never run on some
  machine can cost speed there, never a crash or a silently wrong model.
- ``"torch"``: :func:`reference_dot_interaction` (``bmm`` + gather + ``cat`` + pad), differentiable by autograd.
- ``"triton"``: the kernels, whatever the device: on CPU tensors this needs ``TRITON_INTERPRET=1`` set before the
  first fused call (the tests do this).

The fused op is a ``torch.autograd.Function`` whose forward writes only the kept pairs (never the ``(B, F', F')``
Gram matrix) and whose backward computes ``d dense``, ``d sparse`` from ``d out`` directly (see
:mod:`dlrm_scale.kernels.dot_triton`). Under ``torch.compile`` it calls the same launchers through two
``torch.library`` custom ops, which Dynamo treats as opaque (with shape functions), so ``fullgraph`` capture works;
eager calls skip the custom-op dispatcher, whose Python overhead (about 35 µs per call, measured on the
2-core CPU VM) would rival the kernels' time at small batches.

Mixed precision follows the reference: the products are computed in the autocast dtype when autocast is on for the
inputs' device (as ``bmm`` would be), else in the promoted dtype of ``dense`` and ``sparse``; the output has the
dtype ``cat((dense, pairs))`` would give.

Example::

    out = dot_interaction(torch.randn(4, 128), torch.randn(4, 26, 128))  # (4, 128 + 27 * 26 / 2) = (4, 479)
"""

from __future__ import annotations

import importlib.util
import warnings
from types import ModuleType
from typing import Any, Literal

import torch
import torch.nn.functional as F

from dlrm_scale.kernels.launch_configs import num_pairs

Backend = Literal["auto", "torch", "triton"]

TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def reference_dot_interaction(dense: torch.Tensor, sparse: torch.Tensor, *, self_interaction: bool = False,
                              output_dim: int | None = None, pair_rows: torch.Tensor | None = None,
                              pair_cols: torch.Tensor | None = None) -> torch.Tensor:
    """The plain PyTorch interaction, op for op the one of ``dot`` (and TorchRec's ``InteractionArch``):
    stack ``(B, F', D)``, ``bmm`` to the Gram matrix ``(B, F', F')``, gather the kept pairs, concatenate after
    ``dense``, pad with zeros to ``output_dim``. ``pair_rows`` / ``pair_cols``: precomputed triu indices."""
    num_fields = sparse.shape[1] + 1
    if pair_rows is None or pair_cols is None:
        pair_rows, pair_cols = torch.triu_indices(num_fields, num_fields, offset=0 if self_interaction else 1,
                                                  device=dense.device)
    fields = torch.cat((dense.unsqueeze(1), sparse), dim=1)  # (B, F', D)
    gram = torch.bmm(fields, fields.transpose(1, 2))  # (B, F', F')
    out = torch.cat((dense, gram[:, pair_rows, pair_cols]), dim=1)
    padding = 0 if output_dim is None else output_dim - out.shape[1]
    return F.pad(out, (0, padding)) if padding else out


def _kernels() -> ModuleType:
    """The Triton module, imported on first use (``import triton`` is slow, and the interpreter switch is read when
    the kernels are decorated)."""
    from dlrm_scale.kernels import dot_triton

    return dot_triton


def _dtypes(dense: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(compute dtype, output dtype), as the reference's ``cat`` -> ``bmm`` -> ``cat`` would have them."""
    device_type = dense.device.type
    if torch.is_autocast_enabled(device_type):
        compute = torch.get_autocast_dtype(device_type)
    else:
        compute = torch.promote_types(dense.dtype, sparse.dtype)
    return compute, torch.promote_types(dense.dtype, compute)


def _fused_forward(dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool, output_dim: int,
                   compute_dtype: torch.dtype, out_dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty((dense.shape[0], output_dim), dtype=out_dtype, device=dense.device)
    return _kernels().forward(dense, sparse, out, self_interaction=self_interaction, compute_dtype=compute_dtype)


def _fused_backward(grad_out: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool,
                    compute_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    grad_dense = torch.empty(dense.shape, dtype=dense.dtype, device=dense.device)
    grad_sparse = torch.empty(sparse.shape, dtype=sparse.dtype, device=sparse.device)
    return _kernels().backward(grad_out, dense, sparse, grad_dense, grad_sparse, self_interaction=self_interaction,
                               compute_dtype=compute_dtype)


@torch.library.custom_op("dlrm_scale::dot_interaction_forward", mutates_args=())
def _forward_op(dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool, output_dim: int,
                compute_dtype: torch.dtype, out_dtype: torch.dtype) -> torch.Tensor:
    return _fused_forward(dense, sparse, self_interaction, output_dim, compute_dtype, out_dtype)


@_forward_op.register_fake
def _(dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool, output_dim: int,
      compute_dtype: torch.dtype, out_dtype: torch.dtype) -> torch.Tensor:
    return dense.new_empty((dense.shape[0], output_dim), dtype=out_dtype)


@torch.library.custom_op("dlrm_scale::dot_interaction_backward", mutates_args=())
def _backward_op(grad_out: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool,
                 compute_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return _fused_backward(grad_out, dense, sparse, self_interaction, compute_dtype)


@_backward_op.register_fake
def _(grad_out: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool,
      compute_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(dense, memory_format=torch.contiguous_format), \
        torch.empty_like(sparse, memory_format=torch.contiguous_format)


class DotInteractionFunction(torch.autograd.Function):
    """The fused op: ``apply(dense (B, D), sparse (B, F, D), self_interaction, output_dim, compute_dtype,
    out_dtype) -> (B, output_dim)``; the backward returns ``(d dense, d sparse)`` from the Triton kernel."""

    @staticmethod
    def forward(ctx: Any, dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool, output_dim: int,
                compute_dtype: torch.dtype, out_dtype: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(dense, sparse)
        ctx.self_interaction = self_interaction
        ctx.compute_dtype = compute_dtype
        if torch.compiler.is_compiling():
            return _forward_op(dense, sparse, self_interaction, output_dim, compute_dtype, out_dtype)
        return _fused_forward(dense, sparse, self_interaction, output_dim, compute_dtype, out_dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dense, sparse = ctx.saved_tensors
        if torch.compiler.is_compiling():
            grad_dense, grad_sparse = _backward_op(grad_out, dense, sparse, ctx.self_interaction, ctx.compute_dtype)
        else:
            grad_dense, grad_sparse = _fused_backward(grad_out, dense, sparse, ctx.self_interaction,
                                                      ctx.compute_dtype)
        return grad_dense, grad_sparse, None, None, None, None


# Relative error (norm of the difference over the reference's norm, float64) the self-check accepts: full-precision
# fp32 products; TF32, bf16 and fp16 round inputs or outputs to 8-11 mantissa bits. A wrong pair, row or sign gives
# errors of order one.
_CHECK_TOLERANCE = {"ieee": 1e-4, "low": 2e-2}
_CHECK_ROWS = 64
_checked: dict[tuple, bool] = {}


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.double()
    difference = (got.double() - want).norm().item()
    scale = want.norm().item()
    return difference / scale if scale > 0 else difference


def _self_check(dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool, output_dim: int,
                compute_dtype: torch.dtype, out_dtype: torch.dtype) -> str | None:
    """Runs the fused forward and backward on up to ``_CHECK_ROWS`` rows of this call's inputs and compares them
    with the float64 reference; returns what differs (None when all agree within ``_CHECK_TOLERANCE``)."""
    rows = min(_CHECK_ROWS, dense.shape[0])
    generator = torch.Generator().manual_seed(0)
    upstream = torch.randn((rows, output_dim), generator=generator, dtype=torch.float64)
    # Gradients are needed whatever the caller's mode: evaluation under no_grad or inference_mode too.
    with torch.inference_mode(False), torch.enable_grad():
        inputs = (dense[:rows].detach().clone().requires_grad_(), sparse[:rows].detach().clone().requires_grad_())
        got = DotInteractionFunction.apply(*inputs, self_interaction, output_dim, compute_dtype, out_dtype)
        got_grads = torch.autograd.grad(got, inputs, upstream.to(got.device, got.dtype))
        exact = tuple(part.detach().double().cpu().requires_grad_() for part in inputs)
        want = reference_dot_interaction(*exact, self_interaction=self_interaction, output_dim=output_dim)
        want_grads = torch.autograd.grad(want, exact, upstream)
    # The kernels' own choice of product precision (full fp32 or TF32 / 16-bit operands) sets the tolerance.
    tolerance = _CHECK_TOLERANCE["ieee" if _kernels()._precision(compute_dtype) == "ieee" else "low"]
    for name, value, reference in (("output", got, want), ("d dense", got_grads[0], want_grads[0]),
                                   ("d sparse", got_grads[1], want_grads[1])):
        error = _relative_error(value.detach().cpu(), reference)
        if not error < tolerance:  # also catches NaN
            return f"{name}: relative error {error:.2e} > {tolerance:.0e}"
    return None


def _fused_checked(dense: torch.Tensor, sparse: torch.Tensor, self_interaction: bool, output_dim: int,
                   compute_dtype: torch.dtype, out_dtype: torch.dtype) -> bool:
    """Whether the kernels passed their self-check for this case (run once per process and case)."""
    key = (str(dense.device), tuple(sparse.shape[1:]), dense.dtype, sparse.dtype, self_interaction, output_dim,
           compute_dtype, out_dtype, bool(torch.backends.cuda.matmul.allow_tf32))
    if key not in _checked:
        try:
            problem = _self_check(dense, sparse, self_interaction, output_dim, compute_dtype, out_dtype)
            verdict = "disagree with the reference"
        except Exception as error:  # a compile error, a launch failure: any of them means "do not use"
            problem = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
            verdict = "failed"
        _checked[key] = problem is None
        if problem:
            warnings.warn(f"dot interaction: the fused Triton kernels {verdict} on {dense.device} "
                          f"(F={sparse.shape[1]}, D={sparse.shape[2]}, {dense.dtype}/{sparse.dtype}, compute "
                          f"{compute_dtype}): {problem}. Using the plain PyTorch ops for this case; please report "
                          f"it with your GPU, torch and Triton versions.", RuntimeWarning, stacklevel=3)
    return _checked[key]


def fused_supported(dense: torch.Tensor, sparse: torch.Tensor) -> bool:
    """Whether ``backend="auto"`` takes the Triton kernels for these inputs."""
    return TRITON_INSTALLED and dense.is_cuda and sparse.is_cuda and dense.dtype in _FUSED_DTYPES \
        and sparse.dtype in _FUSED_DTYPES


def dot_interaction(dense: torch.Tensor, sparse: torch.Tensor, *, self_interaction: bool = False,
                    output_dim: int | None = None, pair_rows: torch.Tensor | None = None,
                    pair_cols: torch.Tensor | None = None, backend: Backend = "auto") -> torch.Tensor:
    """``dense (B, D)``, ``sparse (B, F, D)`` -> ``(B, output_dim)`` (default ``D + P``, no padding); see the
    module docstring for the layout and ``backend``. ``pair_rows`` / ``pair_cols`` only serve the reference."""
    if dense.dim() != 2 or sparse.dim() != 3 or sparse.shape[0] != dense.shape[0] \
            or sparse.shape[2] != dense.shape[1]:
        raise ValueError(f"dot interaction needs dense (B, D) and sparse (B, F, D); got {tuple(dense.shape)} "
                         f"and {tuple(sparse.shape)}")
    unpadded = dense.shape[1] + num_pairs(sparse.shape[1], self_interaction=self_interaction)
    output_dim = unpadded if output_dim is None else output_dim
    if output_dim < unpadded:
        raise ValueError(f"dot interaction: output_dim {output_dim} < D + P = {unpadded}")
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"dot interaction: backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    if backend == "torch" or (backend == "auto" and not fused_supported(dense, sparse)):
        return reference_dot_interaction(dense, sparse, self_interaction=self_interaction, output_dim=output_dim,
                                          pair_rows=pair_rows, pair_cols=pair_cols)
    if not TRITON_INSTALLED:
        raise RuntimeError("dot interaction: backend='triton' needs the `triton` package")
    compute_dtype, out_dtype = _dtypes(dense, sparse)
    # Checked in eager calls only: under torch.compile the check (Python on real values) cannot run, and the
    # graph calls the kernels.
    if backend == "auto" and dense.shape[0] > 0 and not torch.compiler.is_compiling() \
            and not _fused_checked(dense, sparse, self_interaction, output_dim, compute_dtype, out_dtype):
        return reference_dot_interaction(dense, sparse, self_interaction=self_interaction, output_dim=output_dim,
                                          pair_rows=pair_rows, pair_cols=pair_cols)
    return DotInteractionFunction.apply(dense, sparse, self_interaction, output_dim, compute_dtype, out_dtype)
