"""Factorization machine plus a deep tower over the concatenated vectors (DeepFM).

Paper: Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017
(https://arxiv.org/abs/1703.04247), eq. (1)-(4). The F + 1 vectors ``[dense, sparse_1 … sparse_F]`` are the
fields, shared by both parts as in the paper.

Shapes: ``fields (B, F', D)`` with F' = F + 1.
- FM term ``(B, 1)``: first order, a linear map of the flattened fields (each id's weight is a linear read-out of
  its learned embedding, as per-id scalars cannot reach this module), plus the second order
  ``sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)² - sum_i v_id²)``, computed in O(F' D).
- Deep tower ``(B, H)``: an MLP with ReLU after every layer over the flattened fields ``(B, F' * D)``
  (``deep_layer_sizes``, the paper's 400-400-400 by default; empty drops it).
Output ``(B, 1 + H)`` = ``[y_FM, deep]``. With ``model.top_mlp = [1]`` the logit is ``a * y_FM + w · deep + b``,
DeepFM's ``y_FM + y_DNN`` (the scale ``a`` is free); a deeper top MLP lets the two parts mix.

Example::

    fm = FMInteraction(num_sparse_features=26, embedding_dim=16, deep_layer_sizes=[400, 400])
    fm(torch.rand(4, 16), torch.rand(4, 26, 16)).shape  # (4, 401)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_layer_sizes, stack_fields
from dlrm_scale.models.mlp import MLP


def fm_second_order(fields: torch.Tensor) -> torch.Tensor:
    """``(B, F', D) -> (B, 1)``: the sum of dot products over all pairs i < j (Rendle 2010, lemma 3.1)."""
    square_of_sum = fields.sum(dim=1).pow(2)
    sum_of_squares = fields.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)


@INTERACTIONS.register("fm")
class FMInteraction(Interaction):
    """DeepFM: factorization-machine term (first + second order) plus a deep tower over the F + 1 vectors."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int,
                 deep_layer_sizes: Sequence[int] = (400, 400, 400)) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        sizes = check_layer_sizes("fm", "deep_layer_sizes", deep_layer_sizes, allow_empty=True)
        width = (num_sparse_features + 1) * embedding_dim
        self.first_order = nn.Linear(width, 1)
        self.deep = MLP(width, sizes) if sizes else None
        self.output_dim = 1 + (sizes[-1] if sizes else 0)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        fields = stack_fields(dense, sparse)  # (B, F', D)
        flat = fields.flatten(1)
        fm_term = self.first_order(flat) + fm_second_order(fields)  # (B, 1)
        if self.deep is None:
            return fm_term
        return torch.cat((fm_term, self.deep(flat)), dim=1)
