"""Every registered interaction, inside the full DLRM (unsharded EBC on CPU), learns planted pairwise feature
interactions: its held-out AUC beats a logistic-regression baseline trained on the same rows in the same run.

The labels come from a hidden logit with a weak linear part and two strong pairwise terms of a sign-table form
(``s_a[id_a] * s_b[id_b]``): each id alone says nothing about the label, so a model additive in the ids (the
logistic baseline, one weight per id and per dense column) can only use the linear part.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional import auroc
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.config import InteractionConfig, ModelConfig, sparse_feature_names
from dlrm_scale.models.dlrm import build_dlrm
from tests.models.helpers import ALL_INTERACTIONS, SMALL_PARAMS

CARDINALITIES = [12, 12, 12, 12]
NUM_DENSE = 4
PLANTED_PAIRS = [(0, 2), (1, 3)]  # across gmf's default user/item split (C1, C2 | C3, C4) and within no side
PAIR_WEIGHT = 2.0
TRAIN_ROWS, TEST_ROWS, BATCH, EPOCHS = 8192, 8192, 256, 4
# Wider-than-tiny options for the modules whose defaults are large, so each trains in about a second.
TRAIN_PARAMS = {**SMALL_PARAMS, "dcnv2": {"num_layers": 2, "low_rank": 8}, "fm": {"deep_layer_sizes": [32]},
                "cin": {"cin_layer_sizes": [16, 16], "deep_layer_sizes": [32]},
                "autoint": {"num_layers": 1, "num_heads": 2, "attention_dim": 8},
                "gmf": {"deep_layer_sizes": [32]}, "wide_deep": {"deep_layer_sizes": [32]},
                "pnn": {"product_units": 32}}
MARGIN = 0.1


@dataclass
class Split:
    dense: torch.Tensor  # (N, NUM_DENSE)
    ids: torch.Tensor  # (N, F) int64, one id per feature
    labels: torch.Tensor  # (N,) float32
    hidden_logit: torch.Tensor  # (N,) the logit the labels were drawn from

    def batches(self, generator: torch.Generator | None):
        order = torch.randperm(len(self.labels), generator=generator) if generator else torch.arange(len(self.labels))
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            ids = self.ids[rows]
            kjt = KeyedJaggedTensor.from_lengths_sync(
                keys=sparse_feature_names(ids.shape[1]), values=ids.t().flatten(),
                lengths=torch.ones(ids.numel(), dtype=torch.int64))
            yield self.dense[rows], kjt, ids, self.labels[rows]


def planted_data(seed: int) -> tuple[Split, Split]:
    generator = torch.Generator().manual_seed(seed)
    # Balanced signs (half +1, half -1) over uniform ids: each pair term has mean 0 given either id alone.
    signs = [torch.tensor([1.0, -1.0]).repeat_interleave(rows // 2)[torch.randperm(rows, generator=generator)]
             for rows in CARDINALITIES]
    dense_weight = torch.randn(NUM_DENSE, generator=generator) * 0.5

    def draw(rows: int) -> Split:
        dense = torch.randn(rows, NUM_DENSE, generator=generator)
        ids = torch.stack([torch.randint(0, n, (rows,), generator=generator) for n in CARDINALITIES], dim=1)
        logit = dense @ dense_weight
        for a, b in PLANTED_PAIRS:
            logit = logit + PAIR_WEIGHT * signs[a][ids[:, a]] * signs[b][ids[:, b]]
        labels = torch.bernoulli(torch.sigmoid(logit), generator=generator)
        return Split(dense, ids, labels, logit)

    return draw(TRAIN_ROWS), draw(TEST_ROWS)


def fit_and_score(model: torch.nn.Module, forward, train: Split, test: Split, *, lr: float) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        for dense, kjt, ids, labels in train.batches(generator):
            loss = F.binary_cross_entropy_with_logits(forward(dense, kjt, ids), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        scores = torch.cat([forward(dense, kjt, ids) for dense, kjt, ids, _ in test.batches(None)])
    return float(auroc(scores, test.labels.long(), task="binary"))


class LogisticBaseline(torch.nn.Module):
    """One weight per (feature, id) and per dense column, plus a bias: additive in the features."""

    def __init__(self) -> None:
        super().__init__()
        self.id_weights = torch.nn.Embedding(sum(CARDINALITIES), 1)
        torch.nn.init.zeros_(self.id_weights.weight)
        self.dense = torch.nn.Linear(NUM_DENSE, 1)
        self.register_buffer("offsets", torch.tensor([0, *CARDINALITIES[:-1]]).cumsum(0))

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.dense(dense).squeeze(1) + self.id_weights(ids + self.offsets).sum(dim=(1, 2))


@pytest.fixture(scope="module")
def data_and_baseline() -> tuple[Split, Split, float]:
    train, test = planted_data(seed=0)
    torch.manual_seed(0)
    baseline = LogisticBaseline()
    baseline_auc = fit_and_score(baseline, lambda dense, kjt, ids: baseline(dense, ids), train, test, lr=0.05)
    return train, test, baseline_auc


def test_baseline_sees_only_the_linear_part(data_and_baseline: tuple[Split, Split, float]) -> None:
    """The baseline is a real competitor (it learns the dense signal) yet blind to the planted pairs, far below
    the AUC of the hidden logit itself."""
    _, test, baseline_auc = data_and_baseline
    oracle_auc = float(auroc(test.hidden_logit, test.labels.long(), task="binary"))
    assert 0.55 < baseline_auc < oracle_auc - 0.2, (baseline_auc, oracle_auc)


@pytest.mark.parametrize("name", ALL_INTERACTIONS)
def test_beats_logistic_baseline(name: str, data_and_baseline: tuple[Split, Split, float]) -> None:
    train, test, baseline_auc = data_and_baseline
    torch.manual_seed(0)
    cfg = ModelConfig(embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[32, 1],
                      interaction=InteractionConfig(name=name, params=TRAIN_PARAMS.get(name, {})))
    model = build_dlrm(cfg, CARDINALITIES, num_dense=NUM_DENSE, device="cpu")
    auc = fit_and_score(model, lambda dense, kjt, ids: model(dense, kjt), train, test, lr=0.01)
    print(f"{name}: AUC {auc:.4f} vs logistic baseline {baseline_auc:.4f}")
    assert auc > baseline_auc + MARGIN, f"{name}: AUC {auc:.4f} vs logistic baseline {baseline_auc:.4f}"
