"""Interaction benchmark: every registered interaction, forward and forward+backward, against the `bmm` reference.

For each dtype, F (sparse features), D (embedding width) and B (batch), times on fresh random inputs:
- ``bmm_reference``: DLRM's dot interaction as TorchRec computes it (``bmm`` + triu gather + ``cat``), eager, with
  the ``triu_indices`` built once per shape on the device (as ``InteractionArch`` caches them), not per call;
  every ratio is against this row, measured in the same run;
- ``bmm_reference_compiled``: the same function through ``torch.compile`` (CUDA; ``--compile-shapes`` picks F x D);
- ``bmm_reference_max_autotune``: the same with ``torch.compile(mode="max-autotune")`` (Inductor benchmarks Triton
  templates for the ``bmm`` and fuses the gather; compiling takes minutes, so only at ``--compile-shapes``);
- every registered interaction (``dot``, ``dot_fused``, ``dcnv2``, …) built with its default options; on CUDA
  ``dot`` (``kernel="auto"``) and ``dot_fused`` both run the fused Triton kernels, on the CPU both the plain ops.

``fwd`` runs under ``torch.no_grad``; ``fwd_bwd`` runs the forward and ``torch.autograd.grad`` of the inputs and
parameters. Times are medians after a warm-up (CUDA events around each call; ``perf_counter`` on the CPU), with
input sets rotated so small batches are not served from L2. Each record also gives:
- GB/s over the minimum bytes: inputs, parameters read once and the output written once; for ``fwd_bwd`` add the
  backward's own minimum (output gradient, inputs and parameters read, their gradients written). Shown next to the
  device's copy bandwidth measured in this run, as "% of copy" (the memory roofline);
- TFLOP/s: for the dot layout the useful products, 2·B·P·D forward and 4·B·P·D backward (P = F'(F'-1)/2 pairs, not
  the full Gram matrix ``bmm`` computes); for other interactions the matmul FLOPs ``FlopCounterMode`` counts;
  shown next to the matmul rate measured in this run;
- for the dot layout, the relative error against a float64 reference on the same inputs (a wrong result is
  reported as WRONG, not hidden behind a fast time).

``--sweep`` also times the fused kernels alone at the headline shape over a grid of launch configurations.
Results: ``benchmarks/results/<date>_<device>/interaction_<tag>.{json,md,png}`` (PNG when matplotlib is installed).

Examples::

    python benchmarks/bench_interaction.py --device cpu --quick
    python benchmarks/bench_interaction.py --implementations dot --sweep --tag dot   # on a GPU
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `dlrm_scale` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    markdown_table,
    measure_copy_bandwidth,
    measure_matmul_rate,
    results_dir,
    time_it,
)
from dlrm_scale.kernels import num_pairs, reference_dot_interaction  # noqa: E402
from dlrm_scale.models.interactions import INTERACTIONS, build_interaction, load_builtin  # noqa: E402

REFERENCE = "bmm_reference"
COMPILED = "bmm_reference_compiled"
MAX_AUTOTUNE = "bmm_reference_max_autotune"
COMPILED_NAMES = (COMPILED, MAX_AUTOTUNE)
DOT_FAMILY = (REFERENCE, COMPILED, MAX_AUTOTUNE, "dot", "dot_fused")
HEADLINE = (26, 128)  # (F, D) of Criteo with D = 128: the goals are stated at this shape, B = 64k
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}  # relative error vs float64 (fp32 leaves room for TF32 if enabled)
GOALS = {"roofline": 0.70, "vs_eager": 11.0, "vs_compiled": 5.0}


@dataclass(kw_only=True)
class Record:
    """One measurement. ``ratio_to_reference`` = reference time / this time (> 1: faster), reference named in
    ``reference`` and measured in the same run at the same shape, dtype and pass."""

    benchmark: str
    implementation: str
    dtype: str
    batch: int
    features: int
    dim: int
    status: str = "ok"
    median_ms: float | None = None
    min_ms: float | None = None
    repeat: int = 0
    bytes: int = 0
    flops: int = 0
    gb_per_s: float | None = None
    percent_of_copy: float | None = None
    tflop_per_s: float | None = None
    reference: str = REFERENCE
    ratio_to_reference: float | None = None
    relative_error: float | None = None


@dataclass(kw_only=True)
class Implementation:
    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    params: list[torch.Tensor]


def build_implementation(name: str, *, features: int, dim: int, dtype: torch.dtype,
                         device: torch.device) -> Implementation:
    if name in (REFERENCE, *COMPILED_NAMES):
        pair_rows, pair_cols = torch.triu_indices(features + 1, features + 1, offset=1, device=device)
        reference = functools.partial(reference_dot_interaction, pair_rows=pair_rows, pair_cols=pair_cols)
        if name == REFERENCE:
            return Implementation(name=name, fn=reference, params=[])
        torch._dynamo.reset()  # a fresh compile per shape: no recompile limit, no stale guards
        mode = "max-autotune" if name == MAX_AUTOTUNE else None
        return Implementation(name=name, fn=torch.compile(reference, mode=mode), params=[])
    module = build_interaction(name, {}, num_sparse_features=features, embedding_dim=dim).to(device=device,
                                                                                              dtype=dtype)
    return Implementation(name=name, fn=module, params=list(module.parameters()))


def input_sets(batch: int, features: int, dim: int, *, dtype: torch.dtype, device: torch.device, count: int,
               seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator(device=device).manual_seed(seed)
    return [(torch.randn(batch, dim, generator=generator, device=device, dtype=dtype),
             torch.randn(batch, features, dim, generator=generator, device=device, dtype=dtype))
            for _ in range(count)]


def set_count(batch: int, features: int, dim: int, dtype: torch.dtype, device: torch.device) -> int:
    """Enough input sets that one pass over them is at least 3x the L2 cache (1 on the CPU)."""
    if device.type != "cuda":
        return 1
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20)
    per_set = batch * (features + 1) * dim * dtype.itemsize
    return max(1, min(16, math.ceil(3 * l2 / per_set)))


def minimum_bytes(*, batch: int, features: int, dim: int, dtype: torch.dtype, out: torch.Tensor,
                  params: list[torch.Tensor], backward: bool) -> int:
    inputs = batch * (features + 1) * dim * dtype.itemsize
    output = out.numel() * out.element_size()
    weights = sum(p.numel() * p.element_size() for p in params)
    forward = inputs + weights + output
    return forward + (output + 2 * inputs + 2 * weights if backward else 0)


def count_flops(impl: Implementation, dense: torch.Tensor, sparse: torch.Tensor, *, backward: bool) -> int:
    if impl.name in DOT_FAMILY:
        useful = 2 * dense.shape[0] * num_pairs(sparse.shape[1], self_interaction=False) * dense.shape[1]
        return 3 * useful if backward else useful
    from torch.utils.flop_counter import FlopCounterMode

    # FlopCounterMode's module hooks reject torch.autograd.grad on leaves, so count through .backward() on copies.
    dense, sparse = dense.detach().clone().requires_grad_(backward), sparse.detach().clone().requires_grad_(backward)
    with FlopCounterMode(display=False) as counter:
        if backward:
            impl.fn(dense, sparse).sum().backward()
        else:
            with torch.no_grad():
                impl.fn(dense, sparse)
    for param in impl.params:
        param.grad = None
    return counter.get_total_flops()


def run_once(impl: Implementation, dense: torch.Tensor, sparse: torch.Tensor, grad_out: torch.Tensor | None, *,
             backward: bool):
    if not backward:
        with torch.no_grad():
            return impl.fn(dense, sparse)
    dense, sparse = dense.detach().requires_grad_(), sparse.detach().requires_grad_()
    out = impl.fn(dense, sparse)
    grad_out = torch.ones_like(out) if grad_out is None else grad_out
    return out, torch.autograd.grad(out, [dense, sparse, *impl.params], grad_out)


def relative_error(impl: Implementation, dense: torch.Tensor, sparse: torch.Tensor, grad_out: torch.Tensor | None,
                   *, backward: bool) -> float:
    """Worst of the output's and (with ``backward``) the input gradients' errors vs float64."""
    dense64 = dense.detach().double().requires_grad_()
    sparse64 = sparse.detach().double().requires_grad_()
    want = reference_dot_interaction(dense64, sparse64)
    if not backward:
        got = run_once(impl, dense, sparse, None, backward=False)
        pairs = [(got[:, : want.shape[1]], want)]
    else:
        grad64 = grad_out[:, : want.shape[1]].double()
        want_grads = torch.autograd.grad(want, [dense64, sparse64], grad64)
        got, got_grads = run_once(impl, dense, sparse, grad_out, backward=True)
        pairs = [(got[:, : want.shape[1]], want.detach()), *zip(got_grads[:2], want_grads)]
    return max(((g.double() - w).norm() / w.norm()).item() for g, w in pairs)


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def measure(impl: Implementation, *, batch: int, features: int, dim: int, dtype_name: str, backward: bool,
            device: torch.device, warmup: int, target_ms: float, max_call_s: float, seed: int) -> Record:
    dtype = DTYPES[dtype_name]
    record = Record(benchmark="interaction_fwd_bwd" if backward else "interaction_fwd", implementation=impl.name,
                    dtype=dtype_name, batch=batch, features=features, dim=dim)
    sets = input_sets(batch, features, dim, dtype=dtype, device=device,
                      count=set_count(batch, features, dim, dtype, device), seed=seed)
    first = run_once(impl, *sets[0], None, backward=False)  # compiles / autotunes; gives the output's shape
    grads = [torch.randn(first.shape, device=device, dtype=first.dtype) for _ in sets] if backward else None
    if impl.name in DOT_FAMILY:
        record.relative_error = relative_error(impl, *sets[0], grads[0] if grads else None, backward=backward)
        if not record.relative_error < TOLERANCE[dtype_name]:
            record.status = f"WRONG (relative error {record.relative_error:.2e})"
    record.bytes = minimum_bytes(batch=batch, features=features, dim=dim, dtype=dtype, out=first,
                                 params=impl.params, backward=backward)
    record.flops = count_flops(impl, *sets[0], backward=backward)
    def call(i: int) -> object:
        k = i % len(sets)
        return run_once(impl, *sets[k], grads[k] if grads else None, backward=backward)

    # One call sets the number of repeats (on a GPU after one more warm-up call: a compiled backward, say).
    probe = time_it(call, device=device, warmup=0 if device.type == "cpu" else 1, repeat=1)
    if probe.median_ms / 1e3 > max_call_s:  # too slow to repeat: keep this one call, skip larger batches
        slow = f"slow: one call, {probe.median_ms / 1e3:.1f} s; larger batches skipped"
        record.status = f"ok ({slow})" if record.status == "ok" else f"{record.status}; {slow}"
        timing = probe
    else:
        repeat = int(min(200, max(3 if device.type == "cpu" else 20, target_ms / max(probe.median_ms, 1e-3))))
        timing = time_it(call, device=device, warmup=warmup, repeat=repeat)
    record.median_ms, record.min_ms, record.repeat = timing.median_ms, timing.min_ms, timing.repeat
    record.gb_per_s = record.bytes / (timing.median_ms * 1e-3) / 1e9
    record.tflop_per_s = record.flops / (timing.median_ms * 1e-3) / 1e12
    return record


def sweep(*, device: torch.device, batch: int, dtype_names: list[str], warmup: int, target_ms: float,
          seed: int) -> list[Record]:
    """The fused kernels alone (no autograd), at ``batch`` x F x D = HEADLINE, over every candidate launch
    configuration (``dlrm_scale.kernels.launch_configs.candidates``); ratios are against the default (the first)
    measured here. Each kernel's row the chooser picks (its own timing, on ``TUNE_ROWS`` rows) is marked."""
    from dlrm_scale.kernels import dot_triton
    from dlrm_scale.kernels.launch_configs import candidates

    features, dim = HEADLINE
    records = []
    for dtype_name in dtype_names:
        dtype = DTYPES[dtype_name]
        configs = candidates(features, dim, dtype)
        chosen = {kind: dot_triton._choose(kind.removeprefix("sweep_"), features, dim, dtype, False, device)
                  for kind in ("sweep_fwd", "sweep_bwd")}
        sets = input_sets(batch, features, dim, dtype=dtype, device=device,
                          count=set_count(batch, features, dim, dtype, device), seed=seed)
        width = dim + num_pairs(features, self_interaction=False)
        outs = [torch.empty(batch, width, device=device, dtype=dtype) for _ in sets]
        grads = [torch.randn(batch, width, device=device, dtype=dtype) for _ in sets]
        grad_inputs = [(torch.empty_like(d), torch.empty_like(s)) for d, s in sets]
        dense64 = sets[0][0].double().requires_grad_()
        sparse64 = sets[0][1].double().requires_grad_()
        want = reference_dot_interaction(dense64, sparse64)
        want_grads = torch.autograd.grad(want, (dense64, sparse64), grads[0].double())
        baseline: dict[str, float] = {}
        for config in configs:
            for kind in ("sweep_fwd", "sweep_bwd"):
                label = f"dot_fused[{config.label()}]" + (" (chosen)" if chosen[kind] == config else "")
                call = kernel_call(kind, config, sets=sets, outs=outs, grads=grads, grad_inputs=grad_inputs,
                                   dtype=dtype)
                record = Record(benchmark=kind, implementation=label, dtype=dtype_name, batch=batch,
                                features=features, dim=dim, reference="default config")
                for tensor in (outs[0], *grad_inputs[0]):  # poisoned: every element must be written again
                    tensor.fill_(float("nan"))
                try:
                    probe = time_it(call, device=device, warmup=1, repeat=1)
                    timing = time_it(call, device=device, warmup=warmup,
                                     repeat=int(min(200, max(20, target_ms / max(probe.median_ms, 1e-3)))))
                except Exception as error:  # a config the compiler rejects (shared memory, registers)
                    record.status = f"failed: {type(error).__name__}: {str(error)[:200]}"
                    records.append(record)
                    continue
                inputs = batch * (features + 1) * dim * dtype.itemsize
                outputs = batch * width * dtype.itemsize
                record.bytes = inputs + outputs if kind == "sweep_fwd" else outputs + 2 * inputs
                record.median_ms, record.min_ms, record.repeat = timing.median_ms, timing.min_ms, timing.repeat
                record.gb_per_s = record.bytes / (timing.median_ms * 1e-3) / 1e9
                baseline.setdefault(kind, timing.median_ms)
                record.ratio_to_reference = baseline[kind] / timing.median_ms
                pairs = [(outs[0], want)] if kind == "sweep_fwd" else list(zip(grad_inputs[0], want_grads))
                record.relative_error = max(((got.double() - w).norm() / w.norm()).item() for got, w in pairs)
                if not record.relative_error < TOLERANCE[dtype_name]:  # NaN (an unwritten element) fails too
                    record.status = f"WRONG (relative error {record.relative_error:.2e})"
                records.append(record)
    return records


def kernel_call(kind: str, config, *, sets: list, outs: list, grads: list, grad_inputs: list,
                dtype: torch.dtype) -> Callable[[int], None]:
    """``call(i)``: one fused forward (``sweep_fwd``) or backward kernel launch on input set ``i``."""
    from dlrm_scale.kernels import dot_triton

    def call(i: int) -> None:
        k = i % len(sets)
        if kind == "sweep_fwd":
            dot_triton.forward(*sets[k], outs[k], self_interaction=False, compute_dtype=dtype, config=config)
        else:
            dot_triton.backward(grads[k], *sets[k], *grad_inputs[k], self_interaction=False, compute_dtype=dtype,
                                config=config)

    return call


def fill_ratios(records: list[Record], copy_gbps: float) -> None:
    reference = {(r.benchmark, r.dtype, r.batch, r.features, r.dim): r.median_ms for r in records
                 if r.implementation == REFERENCE and r.median_ms}
    for r in records:
        if r.gb_per_s is not None:
            r.percent_of_copy = 100 * r.gb_per_s / copy_gbps
        ref = reference.get((r.benchmark, r.dtype, r.batch, r.features, r.dim))
        if r.benchmark.startswith("interaction") and ref and r.median_ms:
            r.ratio_to_reference = ref / r.median_ms


def headline(records: list[Record], batch: int) -> list[str]:
    """The issue's goals, checked on this run's numbers (fused dot, B = ``batch``, F x D = HEADLINE)."""
    lines = []
    features, dim = HEADLINE
    for dtype_name in DTYPES:
        for benchmark in ("interaction_fwd", "interaction_fwd_bwd"):
            rows = {r.implementation: r for r in records if r.benchmark == benchmark and r.dtype == dtype_name
                    and (r.batch, r.features, r.dim) == (batch, features, dim) and r.median_ms}
            fused, eager = rows.get("dot_fused"), rows.get(REFERENCE)
            if not fused or not eager:
                continue
            text = (f"{dtype_name} {benchmark.removeprefix('interaction_')} B={batch} F={features} D={dim}: "
                    f"dot_fused {fused.median_ms:.3f} ms = {fused.percent_of_copy:.0f}% of copy bandwidth, "
                    f"{eager.median_ms / fused.median_ms:.1f}x eager bmm ({eager.median_ms:.3f} ms)")
            # the goal holds against the faster of the two compiled references
            compiled = min((rows[name] for name in COMPILED_NAMES if name in rows), key=lambda r: r.median_ms,
                           default=None)
            for name in COMPILED_NAMES:
                if name in rows:
                    text += (f", {rows[name].median_ms / fused.median_ms:.1f}x {name.removeprefix('bmm_reference_')} "
                             f"({rows[name].median_ms:.3f} ms)")
            if dtype_name == "bf16" and benchmark == "interaction_fwd_bwd":
                met = [fused.percent_of_copy >= 100 * GOALS["roofline"],
                       eager.median_ms / fused.median_ms >= GOALS["vs_eager"]]
                if compiled:
                    met.append(compiled.median_ms / fused.median_ms >= GOALS["vs_compiled"])
                text += (f" -- goal (>= {GOALS['roofline']:.0%} of roofline, >= {GOALS['vs_eager']:.0f}x eager, "
                         f">= {GOALS['vs_compiled']:.0f}x compiled): {'MET' if all(met) else 'NOT MET'}")
            lines.append(text)
    return lines


def to_markdown(records: list[Record], meta: dict, summary: list[str]) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "" if value is None else format(value, spec)

    parts = [f"# Interaction benchmark ({meta['device_name']}, {meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}; copy bandwidth {meta['copy_gb_per_s']:.0f} GB/s "
             f"(read + write); matmul {meta['matmul_tflop_per_s']['bf16']:.3g} TFLOP/s bf16, "
             f"{meta['matmul_tflop_per_s']['fp32']:.3g} TFLOP/s fp32. "
             f"Ratio = {REFERENCE} time / time (> 1: faster), measured in this run.", ""]
    if meta["device"] == "cpu":
        parts += [f"CPU run: {meta['cpu_count']} cores, load average {meta['load_average_at_start']:.1f} at the start "
                  f"(other processes share them): a smoke test of the code paths, not a performance result. "
                  f"On the CPU `dot` and `dot_fused` run the plain ops (the kernels' exact fallback).", ""]
    if summary:
        parts += ["## Headline", "", *[f"- {line}" for line in summary], ""]
    header = ["implementation", "dtype", "B", "F", "D", "median ms", "GB/s", "% of copy", "TFLOP/s", "ratio",
              "rel. error", "status"]
    for benchmark in dict.fromkeys(r.benchmark for r in records):
        rows = [[r.implementation, r.dtype, str(r.batch), str(r.features), str(r.dim), fmt(r.median_ms, ".4f"),
                 fmt(r.gb_per_s, ".1f"), fmt(r.percent_of_copy, ".1f"), fmt(r.tflop_per_s, ".3f"),
                 fmt(r.ratio_to_reference, ".2f"), fmt(r.relative_error, ".1e"), r.status]
                for r in records if r.benchmark == benchmark]
        parts += [f"## {benchmark}", "", markdown_table(header, rows), ""]
    return "\n".join(parts)


def plot(records: list[Record], path: Path) -> str:
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed: no PNG written (pip install matplotlib to get one)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features, dim = HEADLINE
    shown = [r for r in records if r.benchmark.startswith("interaction") and r.median_ms
             and (r.features, r.dim) == (features, dim)]
    if not shown:
        shown = [r for r in records if r.benchmark.startswith("interaction") and r.median_ms]
        features, dim = (shown[0].features, shown[0].dim) if shown else (0, 0)
        shown = [r for r in shown if (r.features, r.dim) == (features, dim)]
    dtypes = list(dict.fromkeys(r.dtype for r in shown))
    benchmarks = list(dict.fromkeys(r.benchmark for r in shown))
    if not shown:
        return "nothing to plot"
    figure, axes = plt.subplots(len(benchmarks), len(dtypes), figsize=(6 * len(dtypes), 4 * len(benchmarks)),
                                squeeze=False)
    names = list(dict.fromkeys(r.implementation for r in shown))
    colors = plt.get_cmap("tab20").colors  # one colour per implementation: the 10 of the default cycle repeat
    for row, benchmark in enumerate(benchmarks):
        for col, dtype_name in enumerate(dtypes):
            axis = axes[row][col]
            for index, name in enumerate(names):
                points = sorted((r.batch, r.median_ms) for r in shown
                                if (r.benchmark, r.dtype, r.implementation) == (benchmark, dtype_name, name))
                if points:
                    axis.plot(*zip(*points), marker="o", label=name, color=colors[index % len(colors)],
                              linewidth=2.5 if name in ("dot_fused", REFERENCE) else 1)
            axis.set(xscale="log", yscale="log", xlabel="batch B", ylabel="median ms",
                     title=f"{benchmark.removeprefix('interaction_')} {dtype_name}, F={features}, D={dim}")
            axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"wrote {path}"


def parse_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (CPU smoke run)")
    parser.add_argument("--batch-sizes", type=parse_ints)
    parser.add_argument("--features", type=parse_ints)
    parser.add_argument("--dims", type=parse_ints)
    parser.add_argument("--dtypes", default=None, help="default fp32,bf16 (fp32 on the CPU: bf16 matmuls crawl there)")
    parser.add_argument("--passes", default="fwd,fwd_bwd")
    parser.add_argument("--implementations", default="all",
                        help="comma list of names; 'all' = every registered interaction plus the references; "
                             "'dot' = the dot family (references, dot, dot_fused); bmm_reference is always run")
    parser.add_argument("--compile-shapes", default=None,
                        help="FxD list for the compiled reference, 'all' or 'none' (default 26x128 on CUDA, none "
                             "on the CPU)")
    parser.add_argument("--sweep", action="store_true", help="also time fused-kernel launch configurations")
    parser.add_argument("--no-grid", action="store_true", help="skip the main grid (e.g. with --sweep)")
    parser.add_argument("--target-ms", type=float, help="timed milliseconds per measurement (sets repeats)")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--max-call-s", type=float, default=None,
                        help="time an implementation with 3 calls and skip its larger batches once a call takes "
                             "longer than this (default 2 s; 0.25 s with --quick)")
    parser.add_argument("--time-budget-s", type=float, default=float("inf"),
                        help="start no new shape after this many seconds (results so far are written)")
    parser.add_argument("--tag", default=None, help="file name part: interaction_<tag>.*")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default results/<date>_<device>)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    batch_sizes = args.batch_sizes or ([128, 512] if args.quick else [2048, 4096, 8192, 16384, 32768, 65536])
    features_list = args.features or ([8, 26] if args.quick else [8, 26, 40])
    dims = args.dims or ([64] if args.quick else [64, 128])
    dtype_names = [d for d in (args.dtypes or ("fp32" if cpu else "fp32,bf16")).split(",") if d]
    max_call_s = args.max_call_s or (0.25 if args.quick else 2.0)
    passes = [p == "fwd_bwd" for p in args.passes.split(",") if p]
    warmup = args.warmup if args.warmup is not None else (1 if args.quick or cpu else 10)
    target_ms = args.target_ms or (100.0 if args.quick or cpu else 300.0)
    compile_shapes = args.compile_shapes or ("none" if cpu else f"{HEADLINE[0]}x{HEADLINE[1]}")
    tag = args.tag or ("quick" if args.quick else "full")

    load_builtin()
    names = {"all": [REFERENCE, *COMPILED_NAMES, *INTERACTIONS.names()], "dot": list(DOT_FAMILY)}.get(
        args.implementations, [REFERENCE, *args.implementations.split(",")])
    names = list(dict.fromkeys([REFERENCE, *names]))

    meta = {"date": time.strftime("%Y-%m-%d"), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if not cpu else platform.processor() or "cpu",
            "torch": torch.__version__, "triton": _triton_version(), "python": platform.python_version(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}
    print(f"device {meta['device_name']}: measuring copy bandwidth and matmul rates", flush=True)
    meta["copy_gb_per_s"] = measure_copy_bandwidth(device, nbytes=(64 if cpu else 2048) * 2**20)
    meta["matmul_tflop_per_s"] = {name: measure_matmul_rate(device, DTYPES[name], size=512 if cpu else 8192)
                                  for name in ("bf16", "fp32")}
    print(f"  copy {meta['copy_gb_per_s']:.0f} GB/s, matmul bf16 {meta['matmul_tflop_per_s']['bf16']:.3g} / fp32 "
          f"{meta['matmul_tflop_per_s']['fp32']:.3g} TFLOP/s", flush=True)

    out_dir = args.out or results_dir(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    started = time.perf_counter()

    def save() -> None:
        fill_ratios(records, meta["copy_gb_per_s"])
        summary = headline(records, max(batch_sizes))
        (out_dir / f"interaction_{tag}.json").write_text(
            json.dumps({"meta": meta, "headline": summary, "records": [asdict(r) for r in records]}, indent=1))
        (out_dir / f"interaction_{tag}.md").write_text(to_markdown(records, meta, summary))

    if args.sweep:
        records += sweep(device=device, batch=max(batch_sizes), dtype_names=dtype_names, warmup=warmup,
                         target_ms=target_ms, seed=args.seed)
        save()
    stopped: set[tuple] = set()  # (implementation, dtype, F, D, pass) that ran out of memory or time
    for dtype_name in [] if args.no_grid else dtype_names:
        for features in features_list:
            for dim in dims:
                for batch in batch_sizes:
                    if time.perf_counter() - started > args.time_budget_s:
                        print(f"time budget of {args.time_budget_s:.0f} s reached: stopping", flush=True)
                        break
                    for name in names:
                        if name in COMPILED_NAMES and compile_shapes != "all" and f"{features}x{dim}" not in \
                                compile_shapes.split(","):
                            continue
                        for backward in passes:
                            key = (name, dtype_name, features, dim, backward)
                            if key in stopped:
                                continue
                            record = run_guarded(name, key, stopped, batch=batch, features=features, dim=dim,
                                                 dtype_name=dtype_name, backward=backward, device=device,
                                                 warmup=warmup, target_ms=target_ms, max_call_s=max_call_s,
                                                 seed=args.seed + batch)
                            records.append(record)
                            print(f"  {record.benchmark:20s} {name:24s} {dtype_name} B={batch:6d} F={features:2d} "
                                  f"D={dim:3d}: {record.median_ms or float('nan'):9.4f} ms "
                                  f"{record.gb_per_s or float('nan'):8.1f} GB/s {record.status}", flush=True)
                    save()
    save()
    print(plot(records, out_dir / f"interaction_{tag}.png"))
    print(to_markdown([r for r in records if r.implementation in DOT_FAMILY and r.benchmark.startswith("int")
                       and r.batch == max(batch_sizes)] or records, meta, headline(records, max(batch_sizes))))
    print(f"results in {out_dir}/interaction_{tag}.*")
    return 1 if any(r.status.startswith("WRONG") for r in records) else 0


def run_guarded(name: str, key: tuple, stopped: set[tuple], **kwargs) -> Record:
    """One measurement; out-of-memory or a too-slow call stops that implementation's larger batches."""
    base = Record(benchmark="interaction_fwd_bwd" if kwargs["backward"] else "interaction_fwd", implementation=name,
                  dtype=kwargs["dtype_name"], batch=kwargs["batch"], features=kwargs["features"], dim=kwargs["dim"])
    try:
        impl = build_implementation(name, features=kwargs["features"], dim=kwargs["dim"],
                                    dtype=DTYPES[kwargs["dtype_name"]], device=kwargs["device"])
        record = measure(impl, **kwargs)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
        if not is_oom(error):
            raise
        torch.cuda.empty_cache() if kwargs["device"].type == "cuda" else None
        base.status = "out of memory"
        stopped.add(key)
        return base
    if "slow: " in record.status:
        stopped.add(key)
    return record


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed"
    return triton.__version__


if __name__ == "__main__":
    raise SystemExit(main())
