"""Our `dot`, `dcnv2` and `projection` DLRMs against TorchRec's `DLRM`, `DLRM_DCN` and `DLRM_Projection`: with the
same weights, the same logits and the same gradients (embedding tables, MLPs, interaction, dense input)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchrec.models.dlrm import DLRM, DLRM_DCN, DLRM_Projection
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from dlrm_scale.config import InteractionConfig, ModelConfig, sparse_feature_names
from dlrm_scale.models.dlrm import build_dlrm, embedding_bag_configs
from tests.models.helpers import copy_params, random_kjt

CARDINALITIES = [11, 7, 30, 5, 19]
NUM_DENSE = 6
DIM = 8
BOTTOM = [16, DIM]
TOP = [12, 7, 1]

CASES: dict[str, tuple[type, dict[str, Any], dict[str, Any]]] = {
    # name: (TorchRec class, its extra constructor args, our interaction params)
    "dot": (DLRM, {}, {}),
    "dcnv2": (DLRM_DCN, {"dcn_num_layers": 3, "dcn_low_rank_dim": 5}, {"num_layers": 3, "low_rank": 5}),
    "projection": (
        DLRM_Projection,
        {"interaction_branch1_layer_sizes": [20, 3 * DIM], "interaction_branch2_layer_sizes": [2 * DIM]},
        {"interaction_branch1_layer_sizes": [20, 3 * DIM], "interaction_branch2_layer_sizes": [2 * DIM]},
    ),
}


def build_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    reference_cls, reference_args, params = CASES[name]
    torch.manual_seed(0)
    tables = embedding_bag_configs(CARDINALITIES, DIM, sparse_feature_names(len(CARDINALITIES)))
    reference = reference_cls(embedding_bag_collection=EmbeddingBagCollection(tables=tables),
                              dense_in_features=NUM_DENSE, dense_arch_layer_sizes=BOTTOM,
                              over_arch_layer_sizes=TOP, **reference_args)
    cfg = ModelConfig(embedding_dim=DIM, bottom_mlp=BOTTOM, top_mlp=TOP,
                      interaction=InteractionConfig(name=name, params=params))
    ours = build_dlrm(cfg, CARDINALITIES, num_dense=NUM_DENSE, device="cpu")
    pairs = []
    for theirs, mine in ((reference.sparse_arch.embedding_bag_collection, ours.sparse_arch.embedding_bag_collection),
                         (reference.dense_arch, ours.bottom_mlp), (reference.inter_arch, ours.interaction),
                         (reference.over_arch, ours.top_mlp)):
        pairs += copy_params(theirs, mine)
    assert len(pairs) == len(list(reference.parameters())) == len(list(ours.parameters()))
    return reference, ours, pairs


@pytest.mark.parametrize("name", list(CASES))
def test_same_logits_and_gradients_as_torchrec(name: str) -> None:
    reference, ours, pairs = build_pair(name)
    generator = torch.Generator().manual_seed(1)
    for batch_size in (1, 9):
        sparse = random_kjt(CARDINALITIES, batch_size, generator=generator)
        dense = torch.randn(batch_size, NUM_DENSE, generator=generator)
        dense_theirs, dense_ours = dense.clone().requires_grad_(), dense.clone().requires_grad_()
        logits_theirs = reference(dense_theirs, sparse)
        logits_ours = ours(dense_ours, sparse)
        assert logits_theirs.shape == (batch_size, 1) and logits_ours.shape == (batch_size,)
        torch.testing.assert_close(logits_ours, logits_theirs.squeeze(1), rtol=1e-6, atol=1e-6)

        upstream = torch.randn(batch_size, generator=generator)
        reference.zero_grad()
        ours.zero_grad()
        (logits_theirs.squeeze(1) * upstream).sum().backward()
        (logits_ours * upstream).sum().backward()
        torch.testing.assert_close(dense_ours.grad, dense_theirs.grad, rtol=1e-5, atol=1e-6)
        for theirs, mine in pairs:
            assert theirs.grad is not None and mine.grad is not None
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-6)
        # Not vacuous: every table that saw an id got a gradient.
        assert any(mine.grad.abs().sum() > 0 for _, mine in pairs[: len(CARDINALITIES)])


def test_weights_matter_for_the_comparison() -> None:
    """A perturbed top-MLP weight must break the match, so the test above can fail."""
    reference, ours, _ = build_pair("dot")
    with torch.no_grad():
        ours.top_mlp[0].weight[0, -1] += 0.5
    sparse = random_kjt(CARDINALITIES, 16, generator=torch.Generator().manual_seed(2))
    dense = torch.randn(16, NUM_DENSE)
    assert not torch.allclose(ours(dense, sparse), reference(dense, sparse).squeeze(1), atol=1e-4)
