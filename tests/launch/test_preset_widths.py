"""The GPU presets feed the top MLP an aligned width (a multiple of 16), so its first GEMM runs on tensor cores
without ragged tiles; the interaction reports the width, as every module does."""

from __future__ import annotations

import pytest

from dlrm_scale.config import load_config
from dlrm_scale.models.interactions import build_interaction, load_builtin


@pytest.mark.parametrize("preset", ["criteo_kaggle", "criteo_terabyte", "mlperf_dcnv2"])
def test_top_mlp_input_width_is_a_multiple_of_16(preset: str) -> None:
    load_builtin()
    cfg = load_config(preset)
    interaction = build_interaction(cfg.model.interaction.name, cfg.model.interaction.params,
                                    num_sparse_features=len(cfg.data.cardinalities),
                                    embedding_dim=cfg.model.embedding_dim)
    assert interaction.output_dim % 16 == 0
