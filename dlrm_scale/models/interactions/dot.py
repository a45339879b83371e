"""Pairwise dot products of the F + 1 vectors, after the dense vector (DLRM).

Paper: Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation Systems", 2019
(https://arxiv.org/abs/1906.00091), section 2.1; code: TorchRec's ``InteractionArch``.

Shapes: ``dense (B, D)``, ``sparse (B, F, D)`` -> ``(B, D + P + pad)`` where the F' = F + 1 vectors
``[dense, sparse_1 … sparse_F]`` give the Gram matrix ``(B, F', F')`` and P of its entries are kept:
P = F'(F'-1)/2 off-diagonal pairs (the paper's strictly lower triangle), or F'(F'+1)/2 with
``self_interaction=True`` (the diagonal too, each vector's squared norm). Pairs are emitted in TorchRec's order,
row-major over the upper triangle ``(0,1), (0,2) … (0,F), (1,2) …`` (the same values as facebookresearch/dlrm's
lower triangle, permuted), so weights of TorchRec's top MLP copy over unchanged. ``pad_to_multiple=8`` appends
zero columns until the width is a multiple of 8, which keeps the top MLP's first GEMM aligned for tensor cores
(NVIDIA's DLRM pads 479 -> 480 for Criteo); the zeros carry no signal and their weights get no gradient.

Example::

    dot = DotInteraction(num_sparse_features=26, embedding_dim=128)
    dot.output_dim  # 128 + 27 * 26 / 2 = 479
    dot(torch.rand(4, 128), torch.rand(4, 26, 128)).shape  # (4, 479)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_positive, stack_fields


@INTERACTIONS.register("dot")
class DotInteraction(Interaction):
    """DLRM: the dense vector plus pairwise dot products of the F + 1 vectors (optionally self, padded)."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int, self_interaction: bool = False,
                 pad_to_multiple: int = 1) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        if not isinstance(self_interaction, bool):
            raise ValueError(f"interaction 'dot': self_interaction must be true/false, got {self_interaction!r}")
        check_positive("dot", pad_to_multiple=pad_to_multiple)
        num_fields = num_sparse_features + 1
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=0 if self_interaction else 1)
        # Not persistent: derived from the sizes, so checkpoints stay free of it and meta-device builds work.
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)
        unpadded = embedding_dim + rows.numel()
        self.output_dim = -(-unpadded // pad_to_multiple) * pad_to_multiple
        self.padding = self.output_dim - unpadded

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        fields = stack_fields(dense, sparse)  # (B, F', D)
        gram = torch.bmm(fields, fields.transpose(1, 2))  # (B, F', F')
        pairs = gram[:, self.pair_rows, self.pair_cols]  # (B, P)
        out = torch.cat((dense, pairs), dim=1)
        return F.pad(out, (0, self.padding)) if self.padding else out
