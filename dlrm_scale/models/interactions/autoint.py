"""Multi-head self-attention over the F + 1 vectors (AutoInt).

Paper: Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks",
CIKM 2019 (https://arxiv.org/abs/1810.11921), eq. (5)-(8). The fields ``[dense, sparse_1 … sparse_F]`` attend
to each other, so each layer models interactions of one order higher.

Shapes: ``fields (B, F', D)`` with F' = F + 1. Each of ``num_layers`` interacting layers maps ``(B, F', d_in)``
to ``(B, F', H * d')`` (H = ``num_heads``, d' = ``attention_dim``): per head, ``softmax(Q K^T) V`` with
``Q, K, V = e W_Q, e W_K, e W_V`` (no 1/sqrt(d') scaling, as in eq. 5), heads concatenated, then
``ReLU(heads + e W_res)`` (eq. 8; ``use_residual=false`` drops ``e W_res``). Output: the last layer flattened,
``(B, F' * H * d')``. Defaults are the paper's: 3 layers, 2 heads, d' = 32.

Example::

    autoint = AutoIntInteraction(num_sparse_features=26, embedding_dim=16, num_layers=2)
    autoint(torch.rand(4, 16), torch.rand(4, 26, 16)).shape  # (4, 27 * 2 * 32) = (4, 1728)
"""

from __future__ import annotations

import torch
from torch import nn

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_positive, stack_fields


class InteractingLayer(nn.Module):
    """One AutoInt layer: ``(B, F', d_in) -> (B, F', num_heads * attention_dim)``."""

    def __init__(self, in_dim: int, *, num_heads: int, attention_dim: int, use_residual: bool) -> None:
        super().__init__()
        out_dim = num_heads * attention_dim
        self.num_heads = num_heads
        self.query = nn.Linear(in_dim, out_dim, bias=False)
        self.key = nn.Linear(in_dim, out_dim, bias=False)
        self.value = nn.Linear(in_dim, out_dim, bias=False)
        self.residual = nn.Linear(in_dim, out_dim, bias=False) if use_residual else None

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        batch, num_fields, _ = fields.shape

        def heads(projected: torch.Tensor) -> torch.Tensor:  # (B, F', H * d') -> (B, H, F', d')
            return projected.reshape(batch, num_fields, self.num_heads, -1).transpose(1, 2)

        query, key, value = heads(self.query(fields)), heads(self.key(fields)), heads(self.value(fields))
        attention = torch.softmax(query @ key.transpose(2, 3), dim=-1)  # (B, H, F', F')
        attended = (attention @ value).transpose(1, 2).reshape(batch, num_fields, -1)  # (B, F', H * d')
        if self.residual is not None:
            attended = attended + self.residual(fields)
        return torch.relu(attended)


@INTERACTIONS.register("autoint")
class AutoIntInteraction(Interaction):
    """AutoInt: multi-head self-attention over the F + 1 vectors, layers stacked with residual connections."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int, num_layers: int = 3, num_heads: int = 2,
                 attention_dim: int = 32, use_residual: bool = True) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        check_positive("autoint", num_layers=num_layers, num_heads=num_heads, attention_dim=attention_dim)
        if not isinstance(use_residual, bool):
            raise ValueError(f"interaction 'autoint': use_residual must be true/false, got {use_residual!r}")
        width = num_heads * attention_dim
        self.layers = nn.Sequential(*(
            InteractingLayer(embedding_dim if index == 0 else width, num_heads=num_heads,
                             attention_dim=attention_dim, use_residual=use_residual)
            for index in range(num_layers)))
        self.output_dim = (num_sparse_features + 1) * width

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.layers(stack_fields(dense, sparse)).flatten(1)
