"""The interaction contract every feature-interaction module follows.

``forward(dense: (B, D), sparse: (B, F, D)) -> (B, output_dim)`` where ``dense`` is the bottom MLP's output and
``sparse`` the F pooled embeddings, all of width D. ``output_dim`` is known at construction, so the top MLP is
sized the same way for every module (never recomputed by hand, unlike torchrec's DLRM subclasses).

Constructors take ``num_sparse_features`` (F) and ``embedding_dim`` (D) as keyword arguments, plus the module's
own options from ``model.interaction.params`` in the config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Interaction(nn.Module):
    """Base class: subclasses set ``self.output_dim`` in ``__init__`` and implement ``forward``."""

    output_dim: int

    def __init__(self, *, num_sparse_features: int, embedding_dim: int) -> None:
        super().__init__()
        if num_sparse_features < 1 or embedding_dim < 1:
            raise ValueError(f"{type(self).__name__} needs num_sparse_features >= 1 and embedding_dim >= 1; "
                             f"got {num_sparse_features} and {embedding_dim}")
        self.num_sparse_features = num_sparse_features
        self.embedding_dim = embedding_dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def stack_fields(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """``dense (B, D)`` and ``sparse (B, F, D)`` -> ``(B, F + 1, D)``, the dense vector first (TorchRec's order),
    for modules that treat the bottom MLP's output as one more field."""
    return torch.cat((dense.unsqueeze(1), sparse), dim=1)


def check_positive(owner: str, **values: int) -> None:
    """Raises ``ValueError`` naming ``owner`` and the param when an int option is not a positive integer."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"interaction {owner!r}: {key} must be a positive integer, got {value!r}")


def check_layer_sizes(owner: str, key: str, sizes: Sequence[int], *, allow_empty: bool) -> list[int]:
    """Validates a list-of-widths option; returns it as a list."""
    valid = isinstance(sizes, (list, tuple)) and (bool(sizes) or allow_empty) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)
    if not valid:
        need = "a list of positive integers" + ("" if allow_empty else " (at least one)")
        raise ValueError(f"interaction {owner!r}: {key} must be {need}, got {sizes!r}")
    return list(sizes)
