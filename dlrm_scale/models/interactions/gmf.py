"""Element-wise product of a user and an item vector plus an MLP path (NeuMF's GMF and MLP, fused).

Paper: He et al., "Neural Collaborative Filtering", WWW 2017 (https://arxiv.org/abs/1708.05031), eq. (9)-(12).

Two towers: the first ``user_features`` sparse features (C1 … C_U, in the config's feature order) are the user
side, the remaining F - U the item side (default U = F // 2). Each side's vector is the mean of its pooled
embeddings, ``user (B, D)`` and ``item (B, D)`` (a single feature per side is the paper's one-id case).
- GMF ``(B, D)``: ``user * item``, element-wise.
- MLP path ``(B, H)``: an MLP with ReLU after every layer over ``[dense, user, item] (B, 3D)``
  (``deep_layer_sizes``, a halving tower as in the paper; it also carries the dense features, which NeuMF lacks).
Output ``(B, D + H)`` = ``[GMF, MLP]``, NeuMF's concatenation; with ``model.top_mlp = [1]`` the logit is
eq. (12)'s ``h^T [GMF, MLP]`` (plus a bias).

Example::

    gmf = GMFInteraction(num_sparse_features=26, embedding_dim=16, user_features=13, deep_layer_sizes=[32, 16])
    gmf(torch.rand(4, 16), torch.rand(4, 26, 16)).shape  # (4, 32)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_layer_sizes, check_positive
from dlrm_scale.models.mlp import MLP


@INTERACTIONS.register("gmf")
class GMFInteraction(Interaction):
    """NeuMF: element-wise product of user-side and item-side vectors plus an MLP path (two-tower inputs)."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int, user_features: int | None = None,
                 deep_layer_sizes: Sequence[int] = (64, 32, 16)) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        user_features = num_sparse_features // 2 if user_features is None else user_features
        check_positive("gmf", user_features=user_features)
        if user_features >= num_sparse_features:
            raise ValueError(f"interaction 'gmf': user_features must leave at least one item feature; got "
                             f"{user_features} of {num_sparse_features} sparse features")
        sizes = check_layer_sizes("gmf", "deep_layer_sizes", deep_layer_sizes, allow_empty=False)
        self.user_features = user_features
        self.deep = MLP(3 * embedding_dim, sizes)
        self.output_dim = embedding_dim + sizes[-1]

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        user = sparse[:, : self.user_features].mean(dim=1)  # (B, D)
        item = sparse[:, self.user_features :].mean(dim=1)  # (B, D)
        return torch.cat((user * item, self.deep(torch.cat((dense, user, item), dim=1))), dim=1)
