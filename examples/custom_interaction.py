"""A custom interaction, named in the config by dotted path; ``python -m examples.custom_interaction`` trains it.

Any run picks it with ``--set model.interaction.name=examples.custom_interaction:BiInteraction`` (the module must
be importable: run from the repository root or put it on PYTHONPATH). No edit to the package is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.config import InteractionConfig, ModelConfig, sparse_feature_names
from dlrm_scale.models.dlrm import build_dlrm
from dlrm_scale.models.interactions import Interaction


class BiInteraction(Interaction):
    """NFM's bi-interaction pooling (He & Chua 2017): ``(B, D), (B, F, D) -> (B, 2D)``, the dense vector beside
    ``sum_{i<j} v_i * v_j`` over the F + 1 vectors, element-wise."""

    def __init__(self, *, num_sparse_features: int, embedding_dim: int, scale: float = 1.0) -> None:
        super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
        self.scale = scale
        self.output_dim = 2 * embedding_dim  # the top MLP is sized from this

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        fields = torch.cat((dense.unsqueeze(1), sparse), dim=1)  # (B, F + 1, D)
        pairs = 0.5 * (fields.sum(dim=1).pow(2) - fields.pow(2).sum(dim=1))  # (B, D)
        return torch.cat((dense, self.scale * pairs), dim=1)


def main(steps: int = 200, batch_size: int = 256, seed: int = 0) -> tuple[float, float]:
    """Trains on labels that only a feature interaction explains (is ``id(C1) < 10`` equal to ``id(C2) < 10``?);
    returns the mean loss of the first and the last 20 steps."""
    torch.manual_seed(seed)
    cfg = ModelConfig(embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16, 1],
                      interaction=InteractionConfig(name="examples.custom_interaction:BiInteraction"))
    model = build_dlrm(cfg, [20, 20], num_dense=4, device="cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(steps):
        ids = torch.randint(0, 20, (2, batch_size))
        labels = ((ids[0] < 10) == (ids[1] < 10)).float()
        sparse = KeyedJaggedTensor.from_lengths_sync(keys=sparse_feature_names(2), values=ids.flatten(),
                                                     lengths=torch.ones(2 * batch_size, dtype=torch.int64))
        loss = F.binary_cross_entropy_with_logits(model(torch.randn(batch_size, 4), sparse), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[:20]) / 20, sum(losses[-20:]) / 20


if __name__ == "__main__":
    first, last = main()
    print(f"BiInteraction: mean loss {first:.3f} over the first 20 steps -> {last:.3f} over the last 20")
