"""Kernel tests run the Triton kernels compiled on CUDA, or under Triton's CPU interpreter where there is no GPU.

``TRITON_INTERPRET=1`` is set only while a test of this folder runs (it must be set when the kernels are decorated,
on the first fused call, and while they run), so the rest of the suite never sees it; with CUDA it stays unset and
the kernels are compiled.
"""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    if not HAS_CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    # The default launch config, not one timed per shape (each test shape would time every candidate);
    # test_launch_configs.py times them itself.
    monkeypatch.setenv("DLRM_SCALE_KERNEL_TUNING", "0")


@pytest.fixture
def fused_device() -> torch.device:
    """Where the fused kernels run: CUDA if present, else the CPU through the interpreter (skips without Triton,
    or when this process already compiled the kernels without the interpreter)."""
    pytest.importorskip("triton")
    if HAS_CUDA:
        return torch.device("cuda")
    from dlrm_scale.kernels import dot_triton

    if not dot_triton.interpreted():
        pytest.skip("dlrm_scale.kernels.dot_triton was imported without TRITON_INTERPRET=1 earlier in this process")
    return torch.device("cpu")
