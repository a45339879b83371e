"""Product layer of the product-based neural network (PNN): inner (IPNN) or outer (OPNN) products.

Paper: Qu et al., "Product-based Neural Networks for User Response Prediction", ICDM 2016
(https://arxiv.org/abs/1611.00144), section III. The F + 1 vectors ``[dense, sparse_1 … sparse_F]`` are the
paper's fields ``f_i``; the product layer maps them to ``D1 = product_units`` signals

    l1 = relu(l_z + l_p + b1),   l_z^n = <W_z^n, z>  (z = the fields themselves: the linear signals)

and the top MLP takes the place of the paper's hidden layers above ``l1``. The quadratic signals ``l_p`` use the
paper's compressions, so neither variant materialises a weight per pair of fields:

- ``product = "inner"`` (IPNN, eq. 8-10): ``W_p^n = θ^n θ^nᵀ`` (first-order decomposition), so
  ``l_p^n = Σ_ij θ_i^n θ_j^n <f_i, f_j> = ||Σ_i θ_i^n f_i||²`` with ``θ (D1, F + 1)``; O(D1 F D) per row.
- ``product = "outer"`` (OPNN, eq. 13-14): the outer products ``f_i f_jᵀ`` summed over all pairs
  (superposition), ``p = f_Σ f_Σᵀ`` with ``f_Σ = Σ_i f_i``, so ``l_p^n = <W_p^n, p> = f_Σᵀ W_p^n f_Σ``
  with ``W_p (D1, D, D)``; O(D1 D²) per row.

Output ``(B, D1)``. The tests compare both with the paper's undecomposed double sums over field pairs.

Example::

    pnn = PNNInteraction(num_sparse_features=26, embedding_dim=16, product="outer", product_units=64)
    pnn(torch.rand(4, 16), torch.rand(4, 26, 16)).shape  # (4, 64)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlrm_scale.models.interactions import INTERACTIONS
from dlrm_scale.models.interactions.base import Interaction, check_positive, stack_fields

PRODUCTS = ("inner", "outer")


@INTERACTIONS.register("pnn")
class PNNInteraction(Interaction):
    """PNN product layer (Qu et al. 2016): linear plus inner (IPNN) or outer (OPNN) product signals, ReLU."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int, product: str = "inner",
                 product_units: int = 256) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        if product not in PRODUCTS:
            raise ValueError(f"interaction 'pnn': product must be one of {', '.join(map(repr, PRODUCTS))}, "
                             f"got {product!r}")
        check_positive("pnn", product_units=product_units)
        self.product = product
        num_fields = num_sparse_features + 1
        self.linear = nn.Linear(num_fields * embedding_dim, product_units)  # W_z and b1
        if product == "inner":
            # θ ~ N(0, 1/F'): each Σ_i θ_i f_i then has the scale of one field, as Xavier keeps a layer's scale.
            self.theta = nn.Parameter(torch.randn(product_units, num_fields) / math.sqrt(num_fields))
        else:
            bound = 1.0 / embedding_dim
            self.kernel = nn.Parameter(torch.empty(product_units, embedding_dim, embedding_dim).uniform_(-bound, bound))
        self.output_dim = product_units

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        fields = stack_fields(dense, sparse)  # (B, F', D)
        linear = self.linear(fields.flatten(1))  # (B, D1)
        if self.product == "inner":
            weighted = torch.einsum("ni,bid->bnd", self.theta, fields)  # Σ_i θ_i^n f_i: (B, D1, D)
            quadratic = weighted.pow(2).sum(dim=2)
        else:
            field_sum = fields.sum(dim=1)  # f_Σ: (B, D)
            quadratic = torch.einsum("bd,nde,be->bn", field_sum, self.kernel, field_sum)
        return torch.relu(linear + quadratic)
