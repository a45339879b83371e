"""DLRM's dot interaction, named for its fused Triton kernels: ``dot`` with ``kernel = "auto"`` fixed.

Same constructor (less ``kernel``), ``output_dim`` and output as
:class:`~dlrm_scale.models.interactions.dot.DotInteraction`: ``dense (B, D)``, ``sparse (B, F, D)`` ->
``(B, D + P + pad)``, pairs in TorchRec's order. On CUDA (fp32 / bf16 / fp16, Triton installed) the forward writes
only the P kept dot products next to the dense vector, never the ``(B, F + 1, F + 1)`` Gram matrix, and the
backward computes the input gradients straight from the output gradient (:mod:`dlrm_scale.kernels.dot_interaction`);
elsewhere it runs ``dot``'s plain ops, so CPU results are bit-identical. ``dot`` makes the same choice by default;
this name lets a config say so explicitly, whatever ``dot``'s default becomes, and a benchmark label it.

Example::

    fused = DotFusedInteraction(num_sparse_features=26, embedding_dim=128, pad_to_multiple=8)
    fused.output_dim  # 480, as for `dot`
    fused(torch.rand(4, 128, device="cuda"), torch.rand(4, 26, 128, device="cuda")).shape  # (4, 480)
"""

from __future__ import annotations

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.dot import DotInteraction


@INTERACTIONS.register("dot_fused")
class DotFusedInteraction(DotInteraction):
    """DLRM dot interaction with fused Triton forward/backward on CUDA (exact `dot` fallback elsewhere)."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int, self_interaction: bool = False,
                 pad_to_multiple: int = 1) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim,
                         self_interaction=self_interaction, pad_to_multiple=pad_to_multiple, kernel="auto")
