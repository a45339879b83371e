"""Dot products between two learned projections of the F + 1 vectors (TorchRec's ``DLRM_Projection``).

Reference: TorchRec's ``InteractionProjectionArch`` (torchrec/models/dlrm.py), a variant of the DLRM interaction
(Naumov et al. 2019, https://arxiv.org/abs/1906.00091) whose pairwise products are taken between F1 and F2 learned
combinations of the fields instead of the fields themselves, so the width no longer grows as F².

Shapes: ``x = [dense, sparse_1 … sparse_F]`` flattened to ``(B, (F + 1) * D)``; branch 1, an MLP with ReLU after
every layer (``interaction_branch1_layer_sizes``, last width F1 * D) gives ``Y (B, F1, D)``; branch 2 likewise
gives ``Z``, reshaped as TorchRec does to ``(B, D, F2)``; ``Y @ Z (B, F1, F2)`` is flattened after the dense
vector: output ``(B, D + F1 * F2)``. Both branches default to ``[4 * D, 4 * D]`` (F1 = F2 = 4).

Example::

    proj = ProjectionInteraction(num_sparse_features=26, embedding_dim=16,
                                 interaction_branch1_layer_sizes=[128, 64], interaction_branch2_layer_sizes=[96])
    proj.output_dim  # 16 + 4 * 6 = 40
"""

from __future__ import annotations

import torch

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_layer_sizes, stack_fields
from dlrm_scale.models.mlp import MLP


@INTERACTIONS.register("projection")
class ProjectionInteraction(Interaction):
    """TorchRec's DLRM_Projection: dot products between two MLP projections of the F + 1 vectors."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int,
                 interaction_branch1_layer_sizes: list[int] | None = None,
                 interaction_branch2_layer_sizes: list[int] | None = None) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        width = (num_sparse_features + 1) * embedding_dim
        projected = []
        branches = []
        for key, sizes in (("interaction_branch1_layer_sizes", interaction_branch1_layer_sizes),
                           ("interaction_branch2_layer_sizes", interaction_branch2_layer_sizes)):
            default = [4 * embedding_dim] * 2
            sizes = check_layer_sizes("projection", key, default if sizes is None else sizes, allow_empty=False)
            if sizes[-1] % embedding_dim:
                raise ValueError(f"interaction 'projection': {key} must end in a multiple of embedding_dim "
                                 f"({embedding_dim}); got {sizes}")
            projected.append(sizes[-1] // embedding_dim)
            branches.append(MLP(width, sizes))
        self.interaction_branch1, self.interaction_branch2 = branches
        self.output_dim = embedding_dim + projected[0] * projected[1]

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        batch, dim = dense.shape
        flat = stack_fields(dense, sparse).reshape(batch, -1)  # (B, (F + 1) * D)
        left = self.interaction_branch1(flat).reshape(batch, -1, dim)  # (B, F1, D)
        right = self.interaction_branch2(flat).reshape(batch, dim, -1)  # (B, D, F2), TorchRec's reshape
        return torch.cat((dense, torch.bmm(left, right).reshape(batch, -1)), dim=1)
