"""The multi-hot reference, restated from facebookresearch/dlrm ``torchrec_dlrm/multi_hot.py``
(``Multihot.__make_multi_hot_indices_tables``) and ``scripts/materialize_synthetic_multihot_dataset.py`` as plainly
as they are written (one global seed, whole tables, ``embedding(ids % rows, table)``), and a runner of
``dlrm-scale prep multihot``. No code shared with data_prep.multihot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrm_scale.cli import main as dlrm_main
from tests.data_prep.raw import prep, random_lines, write_lines

SIZES = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]


def reference_tables(num_embeddings_per_feature: list[int], multi_hot_sizes: list[int], dist_type: str,
                     seed: int = 0) -> list[np.ndarray]:
    """The reference's lookup tables, int32 (it casts them with ``torch.from_numpy(table).int()``)."""
    np.random.seed(seed)
    tables = []
    for embs_count, multi_hot_size in zip(num_embeddings_per_feature, multi_hot_sizes):
        embedding_ids = np.arange(embs_count)[:, np.newaxis]
        if dist_type == "uniform":
            synthetic_sparse_ids = np.random.randint(0, embs_count, size=(embs_count, multi_hot_size - 1))
        else:
            synthetic_sparse_ids = np.random.pareto(a=0.25, size=(embs_count, multi_hot_size - 1)).astype(
                np.int32) % embs_count
        tables.append(np.concatenate((embedding_ids, synthetic_sparse_ids), axis=-1).astype(np.int32))
    return tables


def mh(*args) -> int:
    return dlrm_main(["prep", "multihot", *map(str, args), "--no-progress"])


def prepared_one_hot(root: Path) -> Path:
    """Two days, contiguous ids capped at 40 (so several columns wrap), small shards and row groups."""
    lines = random_lines(900, seed=8)
    days = [write_lines(root / f"day_{d}", lines[d * 450:(d + 1) * 450]) for d in range(2)]
    out = root / "out"
    assert prep("--input", *days, "--out", out, "--dataset", "terabyte", "--encoding", "contiguous",
                "--max-ind-range", "40", "--rows-per-shard", "300", "--row-group-rows", "128", "--workers",
                "1") == 0
    return out
