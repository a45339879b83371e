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

``kernel`` picks the implementation (:func:`dlrm_scale.kernels.dot_interaction`): ``"auto"`` (default) runs the
fused Triton kernels on CUDA tensors (fp32 / bf16 / fp16, Triton installed), which write only the kept pairs and
never the Gram matrix, and the plain ops above everywhere else, so CPU results are bit-identical to TorchRec's
``InteractionArch``; ``"torch"`` always runs the plain ops (the eager reference, and the way out should the
kernels misbehave on some GPU: ``--set model.interaction.params.kernel=torch``); ``"triton"`` always runs the
kernels (on CPU tensors only under ``TRITON_INTERPRET=1``).

Example::

    dot = DotInteraction(num_sparse_features=26, embedding_dim=128)
    dot.output_dim  # 128 + 27 * 26 / 2 = 479
    dot(torch.rand(4, 128), torch.rand(4, 26, 128)).shape  # (4, 479)
"""

from __future__ import annotations

import torch

from dlrm_scale.kernels import dot_interaction
from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_positive

KERNELS = ("auto", "torch", "triton")

# A leaf for FX: TorchRec's TrainPipelineSparseDist rewrites the model from a symbolic trace, and the dispatch
# inside (device, dtype and shape checks) is Python control flow a trace cannot follow.
torch.fx.wrap("dot_interaction")


@INTERACTIONS.register("dot")
class DotInteraction(Interaction):
    """DLRM: the dense vector plus pairwise dot products of the F + 1 vectors (optionally self, padded)."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int, self_interaction: bool = False,
                 pad_to_multiple: int = 1, kernel: str = "auto") -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        if not isinstance(self_interaction, bool):
            raise ValueError(f"interaction 'dot': self_interaction must be true/false, got {self_interaction!r}")
        check_positive("dot", pad_to_multiple=pad_to_multiple)
        if kernel not in KERNELS:
            raise ValueError(f"interaction 'dot': kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
        self.self_interaction = self_interaction
        self.kernel = kernel
        num_fields = num_sparse_features + 1
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=0 if self_interaction else 1)
        # Not persistent: derived from the sizes, so checkpoints stay free of it and meta-device builds work.
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)
        self.output_dim = -(-(embedding_dim + rows.numel()) // pad_to_multiple) * pad_to_multiple

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return dot_interaction(dense, sparse, self_interaction=self.self_interaction, output_dim=self.output_dim,
                               pair_rows=self.pair_rows, pair_cols=self.pair_cols, backend=self.kernel)
