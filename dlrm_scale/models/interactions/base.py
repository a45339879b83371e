"""The interaction contract every feature-interaction module follows.

``forward(dense: (B, D), sparse: (B, F, D)) -> (B, output_dim)`` where ``dense`` is the bottom MLP's output and
``sparse`` the F pooled embeddings, all of width D. ``output_dim`` is known at construction, so the top MLP is
sized the same way for every module (never recomputed by hand, unlike torchrec's DLRM subclasses).

Constructors take ``num_sparse_features`` (F) and ``embedding_dim`` (D) as keyword arguments, plus the module's
own options from ``model.interaction.params`` in the config.
"""

from __future__ import annotations

import torch
from torch import nn


class Interaction(nn.Module):
    """Base class: subclasses set ``self.output_dim`` in ``__init__`` and implement ``forward``."""

    output_dim: int

    def __init__(self, *, num_sparse_features: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_sparse_features = num_sparse_features
        self.embedding_dim = embedding_dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
