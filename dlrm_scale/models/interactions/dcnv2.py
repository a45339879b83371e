"""Low-rank cross network over the concatenated F + 1 vectors (DCN-V2, as in TorchRec's ``DLRM_DCN``).

Paper: Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank
Systems", WWW 2021 (https://arxiv.org/abs/2008.13535), eq. (1) with the low-rank ("mixture of one expert")
cross matrix W = U V of section 5; code: TorchRec's ``LowRankCrossNet`` and ``InteractionDCNArch``, which MLPerf
DLRMv2 uses with 3 layers of rank 512.

Shapes: ``x0 = [dense, sparse_1 … sparse_F]`` flattened to ``(B, N)`` with N = (F + 1) * D; each of the
``num_layers`` layers maps ``x_l (B, N)`` to ``x_{l+1} = x0 * (W_l (V_l x_l) + b_l) + x_l`` with
``V_l (r, N)``, ``W_l (N, r)``, ``b_l (N,)``, r = ``low_rank``. Output ``(B, N)``: the cross net keeps the width.
Parameters are named and initialised as TorchRec's (``W_kernels``, ``V_kernels`` Xavier-normal, ``bias`` zero).

Example::

    dcn = DCNv2Interaction(num_sparse_features=26, embedding_dim=128, num_layers=3, low_rank=512)
    dcn(torch.rand(4, 128), torch.rand(4, 26, 128)).shape  # (4, 3456)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_positive, stack_fields


@INTERACTIONS.register("dcnv2")
class DCNv2Interaction(Interaction):
    """DCN-V2 low-rank cross network over the concatenated dense and sparse vectors (MLPerf DLRMv2)."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int, num_layers: int = 3,
                 low_rank: int = 512) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        check_positive("dcnv2", num_layers=num_layers, low_rank=low_rank)
        width = (num_sparse_features + 1) * embedding_dim
        self.W_kernels = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(width, low_rank))) for _ in range(num_layers))
        self.V_kernels = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(low_rank, width))) for _ in range(num_layers))
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(num_layers))
        self.output_dim = width

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x0 = stack_fields(dense, sparse).flatten(1)  # (B, N)
        x = x0
        for w_kernel, v_kernel, bias in zip(self.W_kernels, self.V_kernels, self.bias):
            x = x0 * (F.linear(F.linear(x, v_kernel), w_kernel) + bias) + x
        return x
