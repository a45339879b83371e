"""A linear ("wide") part plus an MLP ("deep") tower over the concatenated vectors (Wide & Deep).

Paper: Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016 (https://arxiv.org/abs/1606.07792),
eq. (3). The paper's wide part is a linear model over sparse ids and hand-made cross-product features; here it is
a linear map of the flattened fields ``[dense, sparse_1 … sparse_F]`` (each id's weight a linear read-out of its
learned embedding, as raw ids cannot reach this module), and crosses are left to the deep tower.

Shapes: ``fields (B, F', D)`` with F' = F + 1, flattened ``(B, F' * D)``; wide ``(B, 1)``; deep ``(B, H)``, an MLP
with ReLU after every layer (``deep_layer_sizes``, the paper's 1024-512-256 by default; empty drops it).
Output ``(B, 1 + H)`` = ``[wide, deep]``; with ``model.top_mlp = [1]`` the logit is the paper's
``w_wide · x + w_deep · a + b`` (jointly trained).

Example::

    wd = WideDeepInteraction(num_sparse_features=26, embedding_dim=16, deep_layer_sizes=[256, 128])
    wd(torch.rand(4, 16), torch.rand(4, 26, 16)).shape  # (4, 129)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_layer_sizes, stack_fields
from dlrm_scale.models.mlp import MLP


@INTERACTIONS.register("wide_deep")
class WideDeepInteraction(Interaction):
    """Wide & Deep: a linear wide part plus an MLP deep tower over the F + 1 vectors."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int,
                 deep_layer_sizes: Sequence[int] = (1024, 512, 256)) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        sizes = check_layer_sizes("wide_deep", "deep_layer_sizes", deep_layer_sizes, allow_empty=True)
        width = (num_sparse_features + 1) * embedding_dim
        self.wide = nn.Linear(width, 1)
        self.deep = MLP(width, sizes) if sizes else None
        self.output_dim = 1 + (sizes[-1] if sizes else 0)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        flat = stack_fields(dense, sparse).flatten(1)  # (B, F' * D)
        wide = self.wide(flat)  # (B, 1)
        if self.deep is None:
            return wide
        return torch.cat((wide, self.deep(flat)), dim=1)
