"""Dense transforms and categorical encodings: the numbers written to the shards.

Dense (every integer column, missing read as 0 first, as DLRM's and TorchRec's readers do):

- ``log1p`` (default, facebookresearch/dlrm): ``log(max(x, 0) + 1)``; negatives are clipped to 0.
- ``log3`` (TorchRec before 2025 / MLPerf DLRMv2 / NVIDIA): ``log(max(x, -2) + 3)``. Identical to the
  references for x >= -2; they give log(0) = -inf for x = -3 (Criteo's I2 has such values), which we clip to
  -2, so the result is always finite and >= 0. A missing value becomes log(3).

Categorical, from the 32-bit value ``h = int(hex or "0", 16)``:

- ``hash``: ``h % max_ind_range`` (``h`` itself when max_ind_range is 0), as DLRM's ``--max-ind-range`` and
  TorchRec's ``tsv_to_npys`` followed by ``% num_embeddings``. Missing is ``h = 0``, like "00000000".
- ``vocab``: the id of ``h % max_ind_range`` (or ``h``) in the column's vocabulary (:mod:`data_prep.vocab`);
  0 for missing, rare and unseen values.
- ``contiguous``: TorchRec's first-appearance numbering of ``h`` (:mod:`data_prep.contiguous`), then
  ``% max_ind_range``.
"""

from __future__ import annotations

import numpy as np

from data_prep.choices import CHOICES
from data_prep.errors import PrepError


def transform_dense(raw: np.ndarray, transform: str) -> np.ndarray:
    """``raw (D, N) float64`` integers with missing = 0 -> ``(D, N) float32``."""
    if transform == "log1p":
        return np.log1p(np.maximum(raw, 0.0)).astype(np.float32)
    if transform == "log3":
        return np.log(np.maximum(raw, -2.0) + 3.0).astype(np.float32)
    raise PrepError(f"unknown dense transform {transform!r}; choose from {', '.join(CHOICES['dense_transform'])}")


def reduce_hash(values: np.ndarray, max_ind_range: int) -> np.ndarray:
    """``values (..., N) uint32`` (missing already 0) -> the same modulo ``max_ind_range`` (0: unchanged)."""
    if max_ind_range <= 0 or max_ind_range >= 2**32:
        return values
    return values % np.uint32(max_ind_range)
