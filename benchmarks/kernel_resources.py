"""Compiles the fused dot-interaction kernels for a GPU target on a machine without one, and prints the compiler's
resource report: registers, stack (spilled bytes), shared memory, and the SASS instruction mix (are the loads 16
bytes wide, are the tensor-core ``HMMA`` instructions there, any ``STL``/``LDL`` local-memory traffic).

Costs no GPU time: run it before a GPU session to reject launch configurations that spill or overflow shared
memory (H100: 227 KB per block). Triton's bundled ``ptxas`` and ``cuobjdump`` do the work. Arguments are
specialised as Triton's JIT does at launch (16-byte-aligned pointers, strides divisible by 16 where they are), so
vector widths match a real launch. Runs under Triton 3.9 (the CPU venv) and 3.6 (the GPU machine's release:
``STACK=gpu-machine bash scripts/install.sh`` then ``.venv-gpu-machine/bin/python benchmarks/kernel_resources.py``),
whose register allocations differ; a real launch remains the judge.

Example::

    python benchmarks/kernel_resources.py                       # default configs at the benchmark's shapes
    python benchmarks/kernel_resources.py --dtype bf16 --features 26 --dim 128 --configs 1,128,4,1 2,128,4,1
"""

from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlrm_scale.kernels import dot_triton  # noqa: E402
from dlrm_scale.kernels.dot_triton import LaunchConfig  # noqa: E402

DTYPES = {"bf16": (torch.bfloat16, tl.bfloat16), "fp32": (torch.float32, tl.float32)}
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
OPS = re.compile(r"\b((?:LDG|STG|LDS|STS|LDSM|LDGSTS|HMMA|HGMMA|STL|LDL|FFMA)[A-Z0-9._]*)")


def compile_kernel(kernel, *, dtype: str, features: int, dim: int, config: LaunchConfig, padding: int,
                   arch: int) -> triton.compiler.CompiledKernel:
    torch_dtype, tl_dtype = DTYPES[dtype]
    width = dim + (features + 1) * features // 2 + padding
    values = {"F": features, "D": dim, "stride_dense": dim, "stride_sparse_b": features * dim,
              "stride_sparse_f": dim, "stride_out": width, "stride_grad_out": width, "stride_grad_dense": dim,
              "stride_grad_sparse_b": features * dim, "stride_grad_sparse_f": dim}
    constexprs = {"SELF_INTERACTION": False, "COMPUTE": tl_dtype,
                  "PRECISION": dot_triton._precision(torch_dtype), "WIDEN_DOT": False,
                  "BLOCK_B": config.block_b, "BLOCK_F": dot_triton._block_fields(features),
                  "BLOCK_D": config.block_d, "BLOCK_PAD": triton.next_power_of_2(padding) if padding else 0}
    signature, attrs = {}, {}
    for index, name in enumerate(inspect.signature(kernel.fn).parameters):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = f"*{dtype}"
            attrs[(index,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if values.get(name, 1) % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    constexprs = {k: v for k, v in constexprs.items() if signature.get(k) == "constexpr"}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": config.num_warps, "num_stages": config.num_stages})


def report(compiled: triton.compiler.CompiledKernel) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([BIN / "cuobjdump", "-res-usage", cubin], capture_output=True, text=True).stdout
        sass = subprocess.run([BIN / "cuobjdump", "-sass", cubin], capture_output=True, text=True).stdout
    registers = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    ops = Counter(OPS.findall(sass))
    mix = " ".join(f"{op}:{count}" for op, count in sorted(ops.items()))
    return (f"regs {registers.group(1)}, stack {registers.group(2)} B, shared {compiled.metadata.shared} B | "
            f"{mix}")


def parse_config(text: str) -> LaunchConfig:
    block_b, block_d, num_warps, num_stages = (int(part) for part in text.split(","))
    return LaunchConfig(block_b=block_b, block_d=block_d, num_warps=num_warps, num_stages=num_stages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=list(DTYPES), action="append")
    parser.add_argument("--features", type=int, action="append")
    parser.add_argument("--dim", type=int, action="append")
    parser.add_argument("--configs", nargs="*", type=parse_config, default=None,
                        help="block_b,block_d,num_warps,num_stages (default: dot_triton.default_config)")
    parser.add_argument("--padding", type=int, default=0)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90 = H100/H200)")
    args = parser.parse_args(argv)
    for dtype in args.dtype or list(DTYPES):
        for features in args.features or [8, 26, 40]:
            for dim in args.dim or [64, 128]:
                configs = args.configs or [dot_triton.default_config(features, dim, DTYPES[dtype][0])]
                for config in configs:
                    for name, kernel in (("fwd", dot_triton._dot_forward_kernel),
                                         ("bwd", dot_triton._dot_backward_kernel)):
                        compiled = compile_kernel(kernel, dtype=dtype, features=features, dim=dim, config=config,
                                                  padding=args.padding if name == "fwd" else 0, arch=args.arch)
                        print(f"{dtype} F={features:2d} D={dim:3d} {name} b={config.block_b} d={config.block_d} "
                              f"w={config.num_warps} s={config.num_stages}: {report(compiled)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
