"""Shared fixtures and markers. ``slow`` tests run only with DLRM_SCALE_SLOW=1 (or --runslow); ``gpu`` tests only
with CUDA; tests on the real Criteo samples skip when ../shared/data/criteo-samples is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the fused Triton kernels run under Triton's CPU interpreter. The switch is read when `triton` is
# first imported (its own @jit helpers are decorated then), and torch.compile tests import triton early, so it must
# be set for the whole process, before any test module is collected. It changes nothing but Triton kernels.
if not torch.cuda.is_available():  # importing torch does not import triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
CRITEO_SAMPLES = Path(os.environ.get("DLRM_SCALE_CRITEO_SAMPLES", REPO.parent / "shared" / "data" / "criteo-samples"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--runslow") or os.environ.get("DLRM_SCALE_SLOW") == "1"
    has_gpu = torch.cuda.is_available()
    skip_slow = pytest.mark.skip(reason="slow: set DLRM_SCALE_SLOW=1 or pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def criteo_samples() -> Path:
    """The real Criteo samples (internal use only, never committed); skips when the folder is absent."""
    if not CRITEO_SAMPLES.is_dir():
        pytest.skip(f"real Criteo samples not found at {CRITEO_SAMPLES}")
    return CRITEO_SAMPLES
