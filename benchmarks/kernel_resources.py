"""Compiles the fused dot-interaction kernels for a GPU target on a machine without one, and prints the compiler's
resource report: registers, stack (spilled bytes), shared memory, and the SASS instruction mix (are the loads 16
bytes wide, are the tensor-core ``HMMA`` instructions there, any ``STL``/``LDL`` local-memory traffic).

Costs no GPU time: run it before a GPU session to reject launch configurations that spill or overflow shared
memory (H100: 227 KB per block). Triton's bundled ``ptxas`` and ``cuobjdump`` do the work. Arguments are
specialised as Triton's JIT does at launch (16-byte-aligned pointers, strides divisible by 16 where they are), so
vector widths match a real launch. Runs under Triton 3.9 (the CPU venv) and 3.6 (the GPU machine's release:
``STACK=gpu-machine bash scripts/install.sh`` then ``.venv-gpu-machine/bin/python benchmarks/kernel_resources.py``),
whose register allocations differ; a real launch remains the judge.

By default every candidate configuration (``dlrm_scale.kernels.launch_configs.candidates``) of every benchmark
shape is compiled, and the report is also written to ``benchmarks/results/kernel_resources_triton-<version>.{json,
md}``: the record that the configurations the kernels may choose spill nothing under that release
(``tests/kernels/test_launch_configs.py`` checks the committed reports against the current candidates).

Example::

    python benchmarks/kernel_resources.py                       # every candidate at the benchmark's shapes
    python benchmarks/kernel_resources.py --dtype bf16 --features 26 --dim 128 --configs 1,128,4,1 2,128,4,1,2
"""

from __future__ import annotations

import argparse
import inspect
import json
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

from benchmarks.common import markdown_table  # noqa: E402
from dlrm_scale.kernels import dot_triton  # noqa: E402
from dlrm_scale.kernels.launch_configs import LaunchConfig, block_fields, candidates  # noqa: E402

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
                  "BLOCK_B": config.block_b, "BLOCK_F": block_fields(features),
                  "BLOCK_D": config.block_d, "BLOCK_PAD": triton.next_power_of_2(padding) if padding else 0,
                  "PERSISTENT": config.programs_per_sm > 0}
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


def report(compiled: triton.compiler.CompiledKernel) -> dict:
    """Registers per thread, stack bytes (spills), shared memory per program and the SASS instruction mix."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([BIN / "cuobjdump", "-res-usage", cubin], capture_output=True, text=True).stdout
        sass = subprocess.run([BIN / "cuobjdump", "-sass", cubin], capture_output=True, text=True).stdout
    registers = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    ops = Counter(OPS.findall(sass))
    return {"registers": int(registers.group(1)), "stack_bytes": int(registers.group(2)),
            "shared_bytes": int(compiled.metadata.shared),
            "ops": " ".join(f"{op}:{count}" for op, count in sorted(ops.items()))}


def parse_config(text: str) -> LaunchConfig:
    """``block_b,block_d,num_warps,num_stages[,programs_per_sm]``."""
    parts = [int(part) for part in text.split(",")]
    return LaunchConfig(block_b=parts[0], block_d=parts[1], num_warps=parts[2], num_stages=parts[3],
                        programs_per_sm=parts[4] if len(parts) > 4 else 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=list(DTYPES), action="append")
    parser.add_argument("--features", type=int, action="append")
    parser.add_argument("--dim", type=int, action="append")
    parser.add_argument("--configs", nargs="*", type=parse_config, default=None,
                        help="block_b,block_d,num_warps,num_stages[,programs_per_sm] (default: every candidate)")
    parser.add_argument("--padding", type=int, default=0)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90 = H100/H200)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for kernel_resources_triton-<version>.{json,md} (default: benchmarks/results "
                             "when every candidate is compiled, else none)")
    args = parser.parse_args(argv)
    records = []
    for dtype in args.dtype or list(DTYPES):
        for features in args.features or [8, 26, 40]:
            for dim in args.dim or [16, 64, 128]:
                configs = args.configs or candidates(features, dim, DTYPES[dtype][0])
                for config in configs:
                    for name, kernel in (("fwd", dot_triton._dot_forward_kernel),
                                         ("bwd", dot_triton._dot_backward_kernel)):
                        compiled = compile_kernel(kernel, dtype=dtype, features=features, dim=dim, config=config,
                                                  padding=args.padding if name == "fwd" else 0, arch=args.arch)
                        usage = report(compiled)
                        records.append({"dtype": dtype, "features": features, "dim": dim, "kernel": name,
                                        "config": config.label(), **usage})
                        print(f"{dtype} F={features:2d} D={dim:3d} {name} {config.label()}: regs {usage['registers']}"
                              f", stack {usage['stack_bytes']} B, shared {usage['shared_bytes']} B | {usage['ops']}",
                              flush=True)
    spilled = [r for r in records if r["stack_bytes"]]
    print(f"triton {triton.__version__}, sm_{args.arch}: {len(records)} kernels compiled, {len(spilled)} spill"
          + "".join(f"\n  SPILL {r['dtype']} F={r['features']} D={r['dim']} {r['kernel']} {r['config']}: "
                    f"{r['stack_bytes']} B" for r in spilled))
    out = args.out or (Path(__file__).resolve().parent / "results"
                       if not (args.configs or args.dtype or args.features or args.dim) else None)
    if out is not None:
        write_report(records, out, arch=args.arch)
    return 1 if spilled else 0


def write_report(records: list[dict], out: Path, *, arch: int) -> None:
    stem = f"kernel_resources_triton-{triton.__version__}"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"triton": triton.__version__, "torch": torch.__version__, "arch": arch}
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    rows = [[str(v) for v in (r["dtype"], r["features"], r["dim"], r["kernel"], r["config"], r["registers"],
                               r["stack_bytes"], r["shared_bytes"])] for r in records]
    table = markdown_table(["dtype", "F", "D", "kernel", "config", "registers", "stack (spill) B", "shared B"], rows)
    (out / f"{stem}.md").write_text(f"# Fused dot-interaction kernels: sm_{arch} resources, Triton "
                                       f"{triton.__version__}\n\nEvery candidate launch configuration "
                                       f"(`candidates(F, D, dtype)`), compiled without a GPU by "
                                       f"`benchmarks/kernel_resources.py`.\n\n{table}\n")
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    raise SystemExit(main())
