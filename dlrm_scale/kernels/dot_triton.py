"""Triton kernels for DLRM's dot interaction: forward and backward, fused, one program per block of samples.

Imported lazily (by :mod:`dlrm_scale.kernels.dot_interaction`, on the first fused call), so CPU users never pay
for ``import triton``, and tests can set ``TRITON_INTERPRET=1`` before the kernels are decorated.

Notation: B samples, F sparse vectors, F' = F + 1 fields ``X = [dense; sparse_1 … sparse_F]`` of width D, and
P pairs (i, j) with i < j (i <= j with self-interaction), in TorchRec's row-major order over the upper triangle
(``torch.triu_indices(F', F', offset=1)``; pair (i, j) and (j, i) are the same dot product).

Forward, per program of ``BLOCK_B`` samples: the Gram tile ``(BLOCK_B, BLOCK_F, BLOCK_F)`` is accumulated in fp32
registers over D in chunks of ``BLOCK_D`` (F' padded to a power of two >= 16 with masked, never-fetched rows), and
only the P kept entries are stored, next to the dense passthrough and the zero padding: the full
``(B, F', F')`` Gram matrix never reaches global memory. Inputs are read once, the output written once.

Backward: with S the ``(F', F')`` matrix holding the P output gradients at their pair positions (zeros elsewhere),
``d X = (S + S^T) X``. The symmetric ``S + S^T`` is gathered straight from the output gradient (each pair's
gradient lands at (i, j) and (j, i); a self pair's at (i, i), doubled, as ``d <x, x> / d x = 2 x``), multiplied
with the X tile in registers, and the dense passthrough gradient is added to row 0. Reads the output gradient and
X once, writes ``d dense`` and ``d sparse`` once.

Dense and sparse may differ in dtype (fp32 / bf16 / fp16); both are cast to the compute dtype on load, products
accumulate in fp32, and results are cast to each output's dtype on store.

A program handles one block of ``BLOCK_B`` samples, or with ``PERSISTENT`` (a persistent grid of a few programs per
multiprocessor) the blocks ``program_id, program_id + programs, …``. The launch configuration is chosen per
shape by :mod:`dlrm_scale.kernels.launch_configs` (timed once on a GPU, the heuristic default elsewhere).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from dlrm_scale.kernels.launch_configs import ConfigChooser, LaunchConfig, block_fields, candidates, case_key
from dlrm_scale.kernels.launch_configs import num_pairs as count_pairs

_SUPPORTED = (torch.float32, torch.bfloat16, torch.float16)
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@triton.jit
def _pair_position(rows, cols, num_fields, SELF_INTERACTION: tl.constexpr):
    """Row-major index of pair (rows, cols), rows <= cols, among the kept pairs (TorchRec's triu order)."""
    start = rows * num_fields - rows * (rows - 1) // 2  # pairs in rows above, with the diagonal
    if SELF_INTERACTION:
        return start + cols - rows
    return start - rows + cols - rows - 1  # minus one diagonal entry per row above and in this row


@triton.jit
def _load_fields(dense_ptr, sparse_ptr, samples, fields, dims, num_samples, F, D, stride_dense, stride_sparse_b,
                 stride_sparse_f, COMPUTE: tl.constexpr):
    """X's ``(BLOCK_B, BLOCK_F, BLOCK_D)`` tile in the compute dtype (row 0 ``dense``, rows 1..F ``sparse``,
    zeros past the batch, F' and D: masked lanes are not fetched), and the dense rows ``(BLOCK_B, 1, BLOCK_D)``
    as stored. ``samples``, ``fields``, ``dims``: broadcastable 3-D offsets from the program's first sample."""
    in_range = (samples < num_samples) & (dims < D)
    dense_rows = tl.load(dense_ptr + samples * stride_dense + dims, mask=in_range, other=0.0)
    sparse_rows = tl.load(sparse_ptr + samples * stride_sparse_b + (fields - 1) * stride_sparse_f + dims,
                          mask=in_range & (fields >= 1) & (fields <= F), other=0.0)
    return tl.where(fields == 0, dense_rows.to(COMPUTE), sparse_rows.to(COMPUTE)), dense_rows


@triton.jit
def _forward_block(dense_ptr, sparse_ptr, out_ptr, block, B, F, D, num_pairs, output_dim, stride_dense,
                   stride_sparse_b, stride_sparse_f, stride_out, SELF_INTERACTION: tl.constexpr,
                   COMPUTE: tl.constexpr, PRECISION: tl.constexpr, WIDEN_DOT: tl.constexpr, BLOCK_B: tl.constexpr,
                   BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_PAD: tl.constexpr):
    """The forward of samples ``block * BLOCK_B …`` (up to BLOCK_B of them)."""
    # 64-bit arithmetic once per block (the batch may exceed 2^31 elements); offsets inside it are 32-bit.
    first = tl.cast(block, tl.int64) * BLOCK_B
    dense_ptr += first * stride_dense
    sparse_ptr += first * stride_sparse_b
    out_ptr += first * stride_out
    num_samples = tl.minimum(B - first, BLOCK_B).to(tl.int32)
    samples = tl.arange(0, BLOCK_B)[:, None, None]
    fields = tl.arange(0, BLOCK_F)[None, :, None]
    gram = tl.zeros((BLOCK_B, BLOCK_F, BLOCK_F), dtype=tl.float32)
    for start in range(0, D, BLOCK_D):
        dims = start + tl.arange(0, BLOCK_D)[None, None, :]
        tile, dense_rows = _load_fields(dense_ptr, sparse_ptr, samples, fields, dims, num_samples, F, D,
                                        stride_dense, stride_sparse_b, stride_sparse_f, COMPUTE)
        if WIDEN_DOT:
            tile = tile.to(tl.float32)
        gram = tl.dot(tile, tl.permute(tile, (0, 2, 1)), gram, input_precision=PRECISION)
        # Dense passthrough as stored (not the compute-dtype tile): exactly the reference's concat.
        tl.store(out_ptr + samples * stride_out + dims, dense_rows.to(out_ptr.dtype.element_ty),
                 mask=(samples < num_samples) & (dims < D))
    cols = tl.arange(0, BLOCK_F)[None, None, :]
    if SELF_INTERACTION:
        kept = fields <= cols
    else:
        kept = fields < cols
    kept = kept & (cols <= F) & (samples < num_samples)
    position = D + _pair_position(fields, cols, F + 1, SELF_INTERACTION)
    tl.store(out_ptr + samples * stride_out + position, gram.to(out_ptr.dtype.element_ty), mask=kept)
    if BLOCK_PAD > 0:
        rows = tl.arange(0, BLOCK_B)[:, None]
        pad = D + num_pairs + tl.arange(0, BLOCK_PAD)[None, :]
        zeros = tl.zeros((BLOCK_B, BLOCK_PAD), dtype=out_ptr.dtype.element_ty)
        tl.store(out_ptr + rows * stride_out + pad, zeros, mask=(rows < num_samples) & (pad < output_dim))


@triton.jit
def _dot_forward_kernel(dense_ptr, sparse_ptr, out_ptr, B, F, D, num_pairs, output_dim,
                        stride_dense, stride_sparse_b, stride_sparse_f, stride_out,
                        SELF_INTERACTION: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
                        WIDEN_DOT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_F: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_PAD: tl.constexpr, PERSISTENT: tl.constexpr):
    if PERSISTENT:
        for block in range(tl.program_id(0), tl.cdiv(B, BLOCK_B), tl.num_programs(0)):
            _forward_block(dense_ptr, sparse_ptr, out_ptr, block, B, F, D, num_pairs, output_dim, stride_dense,
                           stride_sparse_b, stride_sparse_f, stride_out, SELF_INTERACTION, COMPUTE, PRECISION,
                           WIDEN_DOT, BLOCK_B, BLOCK_F, BLOCK_D, BLOCK_PAD)
    else:
        _forward_block(dense_ptr, sparse_ptr, out_ptr, tl.program_id(0), B, F, D, num_pairs, output_dim,
                       stride_dense, stride_sparse_b, stride_sparse_f, stride_out, SELF_INTERACTION, COMPUTE,
                       PRECISION, WIDEN_DOT, BLOCK_B, BLOCK_F, BLOCK_D, BLOCK_PAD)


@triton.jit
def _backward_block(grad_out_ptr, dense_ptr, sparse_ptr, grad_dense_ptr, grad_sparse_ptr, block, B, F, D,
                    stride_grad_out, stride_dense, stride_sparse_b, stride_sparse_f, stride_grad_dense,
                    stride_grad_sparse_b, stride_grad_sparse_f, SELF_INTERACTION: tl.constexpr,
                    COMPUTE: tl.constexpr, PRECISION: tl.constexpr, WIDEN_DOT: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr):
    """The backward of samples ``block * BLOCK_B …`` (up to BLOCK_B of them)."""
    first = tl.cast(block, tl.int64) * BLOCK_B
    grad_out_ptr += first * stride_grad_out
    dense_ptr += first * stride_dense
    sparse_ptr += first * stride_sparse_b
    grad_dense_ptr += first * stride_grad_dense
    grad_sparse_ptr += first * stride_grad_sparse_b
    num_samples = tl.minimum(B - first, BLOCK_B).to(tl.int32)
    samples = tl.arange(0, BLOCK_B)[:, None, None]
    fields = tl.arange(0, BLOCK_F)[None, :, None]
    cols = tl.arange(0, BLOCK_F)[None, None, :]
    low = tl.minimum(fields, cols)
    high = tl.maximum(fields, cols)
    paired = (high <= F) & (samples < num_samples)
    if not SELF_INTERACTION:
        paired = paired & (fields != cols)
    position = D + _pair_position(low, high, F + 1, SELF_INTERACTION)
    # S + S^T gathered in one load: entry (i, j) and (j, i) both read pair (min, max)'s gradient.
    symmetric = tl.load(grad_out_ptr + samples * stride_grad_out + position, mask=paired, other=0.0)
    symmetric = symmetric.to(tl.float32)
    if SELF_INTERACTION:
        symmetric = tl.where(fields == cols, 2.0 * symmetric, symmetric)
    symmetric = symmetric.to(COMPUTE)
    if WIDEN_DOT:
        symmetric = symmetric.to(tl.float32)
    for start in range(0, D, BLOCK_D):
        dims = start + tl.arange(0, BLOCK_D)[None, None, :]
        tile, _ = _load_fields(dense_ptr, sparse_ptr, samples, fields, dims, num_samples, F, D, stride_dense,
                               stride_sparse_b, stride_sparse_f, COMPUTE)
        if WIDEN_DOT:
            tile = tile.to(tl.float32)
        grad_fields = tl.dot(symmetric, tile, input_precision=PRECISION)  # (BLOCK_B, BLOCK_F, BLOCK_D), fp32
        in_range = (samples < num_samples) & (dims < D)
        passthrough = tl.load(grad_out_ptr + samples * stride_grad_out + dims, mask=in_range, other=0.0)
        grad_fields += tl.where(fields == 0, passthrough.to(tl.float32), 0.0)
        # Row 0 to d dense, rows 1..F to d sparse: two masked stores (their dtypes may differ).
        tl.store(grad_dense_ptr + samples * stride_grad_dense + dims + fields * 0,
                 grad_fields.to(grad_dense_ptr.dtype.element_ty), mask=in_range & (fields == 0))
        tl.store(grad_sparse_ptr + samples * stride_grad_sparse_b + (fields - 1) * stride_grad_sparse_f + dims,
                 grad_fields.to(grad_sparse_ptr.dtype.element_ty), mask=in_range & (fields >= 1) & (fields <= F))


@triton.jit
def _dot_backward_kernel(grad_out_ptr, dense_ptr, sparse_ptr, grad_dense_ptr, grad_sparse_ptr, B, F, D,
                         stride_grad_out, stride_dense, stride_sparse_b, stride_sparse_f, stride_grad_dense,
                         stride_grad_sparse_b, stride_grad_sparse_f,
                         SELF_INTERACTION: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
                         WIDEN_DOT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_F: tl.constexpr,
                         BLOCK_D: tl.constexpr, PERSISTENT: tl.constexpr):
    if PERSISTENT:
        for block in range(tl.program_id(0), tl.cdiv(B, BLOCK_B), tl.num_programs(0)):
            _backward_block(grad_out_ptr, dense_ptr, sparse_ptr, grad_dense_ptr, grad_sparse_ptr, block, B, F, D,
                            stride_grad_out, stride_dense, stride_sparse_b, stride_sparse_f, stride_grad_dense,
                            stride_grad_sparse_b, stride_grad_sparse_f, SELF_INTERACTION, COMPUTE, PRECISION,
                            WIDEN_DOT, BLOCK_B, BLOCK_F, BLOCK_D)
    else:
        _backward_block(grad_out_ptr, dense_ptr, sparse_ptr, grad_dense_ptr, grad_sparse_ptr, tl.program_id(0), B,
                        F, D, stride_grad_out, stride_dense, stride_sparse_b, stride_sparse_f, stride_grad_dense,
                        stride_grad_sparse_b, stride_grad_sparse_f, SELF_INTERACTION, COMPUTE, PRECISION,
                        WIDEN_DOT, BLOCK_B, BLOCK_F, BLOCK_D)


@triton.jit
def _dot_probe_kernel(a_ptr, b_ptr, out_ptr):
    """``out = a @ b`` for one 16 x 16 tile: asks the interpreter whether its bf16 ``tl.dot`` is right."""
    rows = tl.arange(0, 16)[:, None]
    cols = tl.arange(0, 16)[None, :]
    product = tl.dot(tl.load(a_ptr + rows * 16 + cols), tl.load(b_ptr + rows * 16 + cols))
    tl.store(out_ptr + rows * 16 + cols, product)


def interpreted() -> bool:
    """Whether the kernels were decorated under ``TRITON_INTERPRET=1`` (they then run on CPU tensors)."""
    return not isinstance(_dot_forward_kernel, triton.runtime.JITFunction)


_interpreter_bf16_dot: list[bool] = []


def _widen_dot(compute_dtype: torch.dtype) -> bool:
    """Whether the launch passes ``WIDEN_DOT``: only under the interpreter, for bf16, while its ``tl.dot`` still
    multiplies bf16 operands as their raw uint16 bits (triton-lang/triton#11584, seen under Triton 3.6 and 3.9):
    the tiles are then widened to fp32 right before each dot, which is exact (a product of two bf16 numbers fits
    in fp32's mantissa). Everything else on the bf16 path (loads, casts, masks, stores) runs as compiled, and fp16
    and fp32 dots run unwidened. A probe decides once per process, so the real bf16 dot is exercised as soon as
    the interpreter gets it right; compiled kernels never widen."""
    if not interpreted() or compute_dtype != torch.bfloat16:
        return False
    if not _interpreter_bf16_dot:
        generator = torch.Generator().manual_seed(0)
        a, b = (torch.randn(16, 16, generator=generator).to(torch.bfloat16) for _ in range(2))
        out = torch.empty(16, 16)
        _dot_probe_kernel[(1,)](a, b, out)
        want = a.float() @ b.float()
        _interpreter_bf16_dot.append(bool(((out - want).norm() <= 1e-3 * want.norm()).item()))
    return not _interpreter_bf16_dot[0]


def default_config(num_sparse: int, dim: int, compute_dtype: torch.dtype) -> LaunchConfig:
    """The heuristic default: the first of :func:`~dlrm_scale.kernels.launch_configs.candidates`."""
    return candidates(num_sparse, dim, compute_dtype)[0]


def _precision(compute_dtype: torch.dtype) -> str:
    # fp32 follows torch's own switch for matmuls (bmm in the reference): full fp32 unless TF32 is allowed.
    if compute_dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"  # the default; ignored for bf16 / fp16 operands


def _check(name: str, tensor: torch.Tensor, dims: int) -> torch.Tensor:
    if tensor.dim() != dims or tensor.dtype not in _SUPPORTED:
        raise ValueError(f"fused dot interaction: {name} must be a {dims}-D tensor of dtype "
                         f"{', '.join(map(str, _SUPPORTED))}; got shape {tuple(tensor.shape)}, {tensor.dtype}")
    if not tensor.is_cuda and not interpreted():
        raise ValueError(f"fused dot interaction: {name} is on {tensor.device}; the Triton kernels need CUDA "
                         f"tensors, or TRITON_INTERPRET=1 set before the first fused call to run on the CPU")
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


def _grid(batch: int, config: LaunchConfig, device: torch.device) -> tuple[int]:
    """One program per block of samples, or ``programs_per_sm`` per multiprocessor (one "multiprocessor" on the
    CPU, so the interpreter runs the persistent loop over several blocks too)."""
    blocks = triton.cdiv(batch, config.block_b)
    if not config.programs_per_sm:
        return (blocks,)
    multiprocessors = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    return (min(blocks, config.programs_per_sm * multiprocessors),)


# Rows of the synthetic batch each candidate configuration is timed on: enough blocks to fill an H100 many times.
TUNE_ROWS = 32768
chooser = ConfigChooser()


def _choose(kernel: str, num_sparse: int, dim: int, compute_dtype: torch.dtype, self_interaction: bool,
            device: torch.device) -> LaunchConfig:
    """The launch configuration for this case: timed on a GPU (:class:`ConfigChooser`), the default elsewhere or
    with ``DLRM_SCALE_KERNEL_TUNING=0`` (the kernel tests, which compile many shapes, set it)."""
    options = candidates(num_sparse, dim, compute_dtype)
    timer = None
    if device.type == "cuda" and not interpreted() and os.environ.get("DLRM_SCALE_KERNEL_TUNING", "1") != "0":
        timer = _timer(kernel, num_sparse, dim, compute_dtype, self_interaction, device)
    key = case_key(kernel, num_sparse, dim, compute_dtype, self_interaction, device, triton.__version__)
    return chooser.choose(key, options, timer)


def _timer(kernel: str, num_sparse: int, dim: int, compute_dtype: torch.dtype, self_interaction: bool,
           device: torch.device):
    """``timer(config) -> ms``: the median time of one ``kernel`` launch on a fixed random batch of ``TUNE_ROWS``."""
    generator = torch.Generator(device=device).manual_seed(0)
    dense = torch.randn(TUNE_ROWS, dim, device=device, generator=generator).to(compute_dtype)
    sparse = torch.randn(TUNE_ROWS, num_sparse, dim, device=device, generator=generator).to(compute_dtype)
    width = dim + count_pairs(num_sparse, self_interaction=self_interaction)
    out = torch.randn(TUNE_ROWS, width, device=device, generator=generator).to(compute_dtype)  # d out in "bwd"
    grad_inputs = (torch.empty_like(dense), torch.empty_like(sparse))

    def launch(config: LaunchConfig) -> None:
        if kernel == "fwd":
            forward(dense, sparse, out, self_interaction=self_interaction, compute_dtype=compute_dtype,
                    config=config)
        else:
            backward(out, dense, sparse, *grad_inputs, self_interaction=self_interaction,
                     compute_dtype=compute_dtype, config=config)

    def timer(config: LaunchConfig) -> float:
        from triton.testing import do_bench

        launch(config)  # compiles; a rejected configuration raises here
        torch.cuda.synchronize(device)
        return do_bench(lambda: launch(config), warmup=5, rep=20, return_mode="median")

    return timer


def forward(dense: torch.Tensor, sparse: torch.Tensor, out: torch.Tensor, *, self_interaction: bool,
            compute_dtype: torch.dtype, config: LaunchConfig | None = None) -> torch.Tensor:
    """Writes ``out (B, output_dim)`` = ``[dense (B, D) | P pair products | zeros]``.

    ``dense (B, D)``, ``sparse (B, F, D)``; ``out`` must be contiguous, of any supported dtype, with
    ``output_dim >= D + P``. Every element of ``out`` is written. ``config``: the launch configuration (default:
    the one chosen for this shape).
    """
    dense, sparse = _check("dense", dense, 2), _check("sparse", sparse, 3)
    batch, num_sparse, dim = sparse.shape
    num_pairs = count_pairs(num_sparse, self_interaction=self_interaction)
    if dense.shape != (batch, dim) or not out.is_contiguous() or out.shape[0] != batch \
            or out.shape[1] < dim + num_pairs:
        raise ValueError(f"fused dot interaction: shapes do not fit: dense {tuple(dense.shape)}, sparse "
                         f"{tuple(sparse.shape)}, out {tuple(out.shape)} (needs >= {dim + num_pairs} columns)")
    if batch == 0:
        return out
    config = config or _choose("fwd", num_sparse, dim, compute_dtype, self_interaction, dense.device)
    padding = out.shape[1] - dim - num_pairs
    _dot_forward_kernel[_grid(batch, config, dense.device)](
        dense, sparse, out, batch, num_sparse, dim, num_pairs, out.shape[1],
        dense.stride(0), sparse.stride(0), sparse.stride(1), out.stride(0),
        SELF_INTERACTION=self_interaction, COMPUTE=_TL_DTYPES[compute_dtype], PRECISION=_precision(compute_dtype),
        WIDEN_DOT=_widen_dot(compute_dtype), BLOCK_B=config.block_b, BLOCK_F=block_fields(num_sparse),
        BLOCK_D=config.block_d, BLOCK_PAD=triton.next_power_of_2(padding) if padding else 0,
        PERSISTENT=config.programs_per_sm > 0, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


def backward(grad_out: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor, grad_dense: torch.Tensor,
             grad_sparse: torch.Tensor, *, self_interaction: bool, compute_dtype: torch.dtype,
             config: LaunchConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Writes ``grad_dense (B, D)`` and ``grad_sparse (B, F, D)`` from ``grad_out (B, output_dim)`` (the
    padding columns' gradient is ignored: those outputs are constant zeros)."""
    grad_out = _check("grad_out", grad_out, 2)
    dense, sparse = _check("dense", dense, 2), _check("sparse", sparse, 3)
    batch, num_sparse, dim = sparse.shape
    if grad_dense.shape != dense.shape or grad_sparse.shape != sparse.shape or grad_out.shape[0] != batch \
            or grad_out.shape[1] < dim + count_pairs(num_sparse, self_interaction=self_interaction) \
            or grad_dense.stride(-1) != 1 or grad_sparse.stride(-1) != 1:
        raise ValueError(f"fused dot interaction backward: shapes do not fit: grad_out {tuple(grad_out.shape)}, "
                         f"dense {tuple(dense.shape)}, sparse {tuple(sparse.shape)}")
    if batch == 0:
        return grad_dense, grad_sparse
    config = config or _choose("bwd", num_sparse, dim, compute_dtype, self_interaction, dense.device)
    _dot_backward_kernel[_grid(batch, config, dense.device)](
        grad_out, dense, sparse, grad_dense, grad_sparse, batch, num_sparse, dim,
        grad_out.stride(0), dense.stride(0), sparse.stride(0), sparse.stride(1), grad_dense.stride(0),
        grad_sparse.stride(0), grad_sparse.stride(1),
        SELF_INTERACTION=self_interaction, COMPUTE=_TL_DTYPES[compute_dtype], PRECISION=_precision(compute_dtype),
        WIDEN_DOT=_widen_dot(compute_dtype), BLOCK_B=config.block_b, BLOCK_F=block_fields(num_sparse),
        BLOCK_D=config.block_d, PERSISTENT=config.programs_per_sm > 0, num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return grad_dense, grad_sparse
