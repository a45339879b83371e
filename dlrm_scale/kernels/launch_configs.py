"""Launch configurations of the fused dot-interaction kernels: the candidates per shape, and the choice among them.

A configuration tiles the batch into blocks of ``block_b`` samples, each walked over D in ``block_d`` columns, with
Triton's ``num_warps`` and ``num_stages``; ``programs_per_sm`` > 0 makes the grid persistent (that many programs
per multiprocessor, each looping over blocks) instead of one program per block.

:func:`candidates` lists, per (F, D, compute dtype), the configurations the sm_90 compiler report
(``benchmarks/kernel_resources.py``; results under ``benchmarks/results/kernel_resources_*``) accepted under
Triton 3.6 and 3.9 with no spilled register. The first is the heuristic default, what runs where nothing is timed
(the CPU interpreter). The others hold more samples per program (Hopper wants more bytes in flight per SM than
two samples' 14 KB): ``block_b`` x2, x4, x8 at a narrower ``block_d``, keeping the X tile about the same size and
the fp32 Gram / gradient tiles within a register budget; and, for 16-bit inputs, persistent variants.

:class:`ConfigChooser` picks one per (kernel, F, D, dtype, self-interaction) on a real GPU the way
``triton.autotune`` would (each candidate timed once on a fixed synthetic batch, the fastest kept), but keyed on
the shape alone rather than on B, with candidates that fail to compile skipped, and the verdicts cached in a JSON
file (``$DLRM_SCALE_KERNEL_CACHE``, default ``~/.cache/dlrm_scale/dot_configs.json``) per GPU and Triton release,
so a job pays for the sweep once per machine image (seconds), not per process.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path

import torch

# Per program, keyed by "16-bit inputs": elements of X held per step over D; elements of the fp32 Gram (forward)
# or S + S^T (backward) tile (16384: 64 registers per thread at 8 warps; fp32 tiles leave room for half that); and
# samples. Past these the sm_90 report showed spills (fp32 b=16 at F' = 32: 240 bytes; bf16 b=64 at F' = 16).
_TILE_ELEMENTS = {True: 8192, False: 4096}
_GRAM_ELEMENTS = {True: 16384, False: 8192}
_MAX_SAMPLES = {True: 32, False: 8}
_PERSISTENT_ELEMENTS = 2048


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """One launch's tiling (see the module docstring)."""

    block_b: int
    block_d: int
    num_warps: int
    num_stages: int
    programs_per_sm: int = 0

    def label(self) -> str:
        text = f"b={self.block_b},d={self.block_d},w={self.num_warps},s={self.num_stages}"
        return text + (f",p={self.programs_per_sm}" if self.programs_per_sm else "")


def _next_power_of_2(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


def num_pairs(num_sparse_features: int, *, self_interaction: bool) -> int:
    """P: pairs i < j of the F' = F + 1 vectors, or i <= j with self-interaction (here, below both the dispatch
    and the kernels, which both need it)."""
    fields = num_sparse_features + 1
    return fields * (fields + 1) // 2 if self_interaction else fields * (fields - 1) // 2


def block_fields(num_sparse: int) -> int:
    """BLOCK_F: F' = F + 1 padded to a power of two >= 16 (``tl.dot`` needs every tile dimension >= 16)."""
    return max(16, _next_power_of_2(num_sparse + 1))


def candidates(num_sparse: int, dim: int, compute_dtype: torch.dtype) -> list[LaunchConfig]:
    """The configurations tried for ``sparse (B, F = num_sparse, D = dim)`` in ``compute_dtype``; the first is the
    default. BLOCK_D up to 128 for 16-bit inputs and F' <= 32, 64 for fp32 or F' <= 32, else 32; eight warps; two
    pipeline stages only for 16-bit inputs at F' <= 32 with several steps over D (at F' > 32 the second stage's
    buffers made Triton 3.6 spill)."""
    fields = block_fields(num_sparse)
    wide = compute_dtype != torch.float32
    widest = 128 if wide and fields <= 32 else 64 if wide or fields <= 32 else 32
    block_d = max(16, min(_next_power_of_2(dim), widest))
    block_b = max(1, min(_MAX_SAMPLES[wide], 16, _TILE_ELEMENTS[wide] // (fields * block_d),
                         _GRAM_ELEMENTS[wide] // (fields * fields)))

    def config(samples: int, columns: int, programs_per_sm: int = 0) -> LaunchConfig:
        stages = 2 if wide and fields <= 32 and columns < dim else 1
        return LaunchConfig(block_b=samples, block_d=columns, num_warps=8, num_stages=stages,
                            programs_per_sm=programs_per_sm)

    # Persistent kernels keep index tiles live across blocks: only 16-bit inputs with at most 2048 elements of X
    # per sample and step (fp32, F' = 64 or BLOCK_D = 128 at F' = 32 spilled under Triton 3.6 or 3.9).
    persistent = wide and fields * block_d <= _PERSISTENT_ELEMENTS
    found = [config(block_b, block_d)]
    if persistent:
        found.append(config(block_b, block_d, programs_per_sm=4))
    for factor in (2, 4, 8):
        samples, columns = block_b * factor, max(16, block_d // factor)
        if samples > _MAX_SAMPLES[wide] or samples * fields * fields > _GRAM_ELEMENTS[wide] \
                or samples * fields * columns > 2 * _TILE_ELEMENTS[wide]:
            break
        if not wide and fields == 32 and columns == 32:
            continue  # fp32 b=4, d=32 at F' = 32: 8 spilled bytes in the forward under Triton 3.6
        found.append(config(samples, columns))
        if factor == 4 and wide and fields * columns <= _PERSISTENT_ELEMENTS:
            found.append(config(samples, columns, programs_per_sm=2))
    return found


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def cache_path() -> Path:
    return Path(os.environ.get("DLRM_SCALE_KERNEL_CACHE", Path.home() / ".cache" / "dlrm_scale" / "dot_configs.json"))


class ConfigChooser:
    """Chooses and remembers one launch configuration per case (see the module docstring).

    ``choose(key, options, timer)``: ``key`` names the case (kernel, F, D, dtype, self-interaction, device, Triton
    release), ``options`` the candidates in order, ``timer(config) -> ms`` times one; with ``timer`` None (nothing
    to time, e.g. under the interpreter) the first option is taken without being remembered on disk.
    """

    def __init__(self) -> None:
        self.chosen: dict[str, LaunchConfig] = {}

    def choose(self, key: str, options: list[LaunchConfig],
               timer: Callable[[LaunchConfig], float] | None) -> LaunchConfig:
        if key in self.chosen:
            return self.chosen[key]
        if timer is None:
            self.chosen[key] = options[0]
            return options[0]
        stored = self._load().get(key)
        known = {astuple(option): option for option in options}
        if isinstance(stored, list) and tuple(stored) in known:
            self.chosen[key] = known[tuple(stored)]
            return self.chosen[key]
        timings, failures = {}, []
        for option in options:
            try:
                timings[option] = timer(option)
            except Exception as error:  # a candidate this compiler or GPU rejects: the others remain
                failures.append(f"{option.label()}: {type(error).__name__}: {str(error)[:120]}")
        if not timings:
            raise RuntimeError(f"no launch configuration of the fused dot interaction ran for {key}: "
                               + "; ".join(failures))
        best = min(timings, key=timings.get)
        self.chosen[key] = best
        self._store(key, best)
        return best

    def _load(self) -> dict:
        path = cache_path()
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return values if isinstance(values, dict) else {}

    def _store(self, key: str, config: LaunchConfig) -> None:
        path = cache_path()
        values = self._load()
        values[key] = list(astuple(config))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(values, indent=1, sort_keys=True))
            temporary.replace(path)
        except OSError as error:  # a read-only home: the choice still holds for this process
            warnings.warn(f"dot interaction: cannot cache the tuned launch config in {path}: {error}",
                          RuntimeWarning, stacklevel=2)


def case_key(kernel: str, num_sparse: int, dim: int, compute_dtype: torch.dtype, self_interaction: bool,
             device: torch.device, triton_version: str) -> str:
    return (f"{_device_name(device)}|triton {triton_version}|{kernel}|F={num_sparse}|D={dim}|"
            f"{str(compute_dtype).removeprefix('torch.')}|self={int(self_interaction)}")
