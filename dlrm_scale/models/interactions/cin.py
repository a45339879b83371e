"""Compressed interaction network plus linear and deep parts (xDeepFM).

Paper: Lian et al., "xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender Systems",
KDD 2018 (https://arxiv.org/abs/1803.05170), eq. (6)-(9) and (13). The F + 1 vectors ``[dense, sparse_1 …
sparse_F]`` are the m = F + 1 fields ``X^0 (B, m, D)``.

CIN layer k maps ``X^{k-1} (B, H_{k-1}, D)`` to ``X^k_{h,*} = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_{i,*} ∘ X^0_{j,*})``,
``(B, H_k, D)``: an outer product over fields, vector-wise along D, compressed by a ``(H_k, H_{k-1} * m)`` weight
(the paper's 1x1 convolution, no bias or activation, eq. 6). Each layer's maps are sum-pooled over D (eq. 8);
with ``split_half`` (the authors' code, on by default) every layer but the last sends half its maps to the output
and half to the next layer. Cost: a ``(B, D, H_{k-1} * m)`` intermediate per layer.

Output ``(B, 1 + P + H)`` = ``[linear (B, 1), CIN pooled (B, P), deep (B, H)]``: P = sum of the pooled map counts;
the linear part reads the flattened fields (per-id weights as linear read-outs of the embeddings); the deep tower
is an MLP with ReLU after every layer over ``(B, m * D)`` (``deep_layer_sizes``; empty drops it). With
``model.top_mlp = [1]`` the logit is eq. (13)'s ``w_linear · a + w_dnn · x_dnn + w_cin · p + b``.
Defaults are the paper's Criteo setting: CIN 200-200-200, DNN 400-400.

Example::

    cin = CINInteraction(num_sparse_features=26, embedding_dim=16, cin_layer_sizes=[100, 100], deep_layer_sizes=[])
    cin(torch.rand(4, 16), torch.rand(4, 26, 16)).shape  # (4, 151): 1 + (50 + 100) + 0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_layer_sizes, stack_fields
from dlrm_scale.models.mlp import MLP


@INTERACTIONS.register("cin")
class CINInteraction(Interaction):
    """xDeepFM: compressed interaction network (vector-wise explicit crosses) plus linear and deep parts."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int,
                 cin_layer_sizes: Sequence[int] = (200, 200, 200), split_half: bool = True,
                 deep_layer_sizes: Sequence[int] = (400, 400)) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        cin_sizes = check_layer_sizes("cin", "cin_layer_sizes", cin_layer_sizes, allow_empty=False)
        deep_sizes = check_layer_sizes("cin", "deep_layer_sizes", deep_layer_sizes, allow_empty=True)
        if not isinstance(split_half, bool):
            raise ValueError(f"interaction 'cin': split_half must be true/false, got {split_half!r}")
        if split_half and any(size % 2 for size in cin_sizes[:-1]):
            raise ValueError(f"interaction 'cin': with split_half every cin_layer_sizes entry but the last must be "
                             f"even; got {cin_sizes}")
        num_fields = num_sparse_features + 1
        self.split_half = split_half
        self.cin_layers = nn.ModuleList()
        self.next_sizes: list[int] = []
        pooled = 0
        previous = num_fields
        for index, size in enumerate(cin_sizes):
            self.cin_layers.append(nn.Linear(previous * num_fields, size, bias=False))
            last = index == len(cin_sizes) - 1
            previous = size if last or not split_half else size // 2
            self.next_sizes.append(previous)
            pooled += size if last or not split_half else size - previous
        width = num_fields * embedding_dim
        self.linear = nn.Linear(width, 1)
        self.deep = MLP(width, deep_sizes) if deep_sizes else None
        self.output_dim = 1 + pooled + (deep_sizes[-1] if deep_sizes else 0)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        fields = stack_fields(dense, sparse)  # (B, m, D)
        batch, _, dim = fields.shape
        x0 = fields.transpose(1, 2)  # (B, D, m): fields last, so each layer is a Linear over them
        hidden = x0
        pooled = []
        for layer, next_size in zip(self.cin_layers, self.next_sizes):
            outer = (hidden.unsqueeze(3) * x0.unsqueeze(2)).reshape(batch, dim, -1)  # (B, D, H_{k-1} * m)
            maps = layer(outer)  # (B, D, H_k)
            if next_size == layer.out_features:
                hidden, kept = maps, maps
            else:
                hidden, kept = maps[..., :next_size], maps[..., next_size:]
            pooled.append(kept.sum(dim=1))  # (B, kept maps)
        flat = fields.flatten(1)
        parts = [self.linear(flat), *pooled]
        if self.deep is not None:
            parts.append(self.deep(flat))
        return torch.cat(parts, dim=1)
