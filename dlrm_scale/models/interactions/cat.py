"""Concatenation of the F + 1 vectors, DLRM's alternative to dot products (``--arch-interaction-op=cat``).

Paper: Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation Systems", 2019
(https://arxiv.org/abs/1906.00091), section 2.1 (and facebookresearch/dlrm's ``interact_features``). Every
interaction is left to the top MLP.

Shapes: ``dense (B, D)``, ``sparse (B, F, D)`` -> ``(B, (F + 1) * D)``, the dense vector first.

Example::

    cat = CatInteraction(num_sparse_features=26, embedding_dim=16)
    cat(torch.rand(4, 16), torch.rand(4, 26, 16)).shape  # (4, 432)
"""

from __future__ import annotations

import torch

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, stack_fields


@INTERACTIONS.register("cat")
class CatInteraction(Interaction):
    """DLRM's concatenation: the F + 1 vectors side by side, interactions left to the top MLP."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        self.output_dim = (num_sparse_features + 1) * embedding_dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return stack_fields(dense, sparse).flatten(1)
