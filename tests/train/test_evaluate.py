"""Exactness of the evaluation metrics against references written from their definitions, and against
torchmetrics; padding rows must not count."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from dlrm_scale.train.evaluate import binary_metrics, evaluate, roc_auc
from dlrm_scale.train.model_with_loss import StepOutput


def pairwise_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(equal), over all P*N pairs."""
    pos, neg = scores[labels == 1].double(), scores[labels == 0].double()
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()


@pytest.mark.parametrize("seed", range(4))
def test_auc_equals_pairwise_definition_with_many_ties(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 15, (700,), generator=gen).float() / 7  # ~47 rows per distinct score
    labels = (torch.rand(700, generator=gen) < 0.3).float()
    assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)


def test_auc_matches_torchmetrics_and_limits() -> None:
    gen = torch.Generator().manual_seed(7)
    probs = torch.round(torch.rand(5000, generator=gen) * 200) / 200  # ties
    labels = (torch.rand(5000, generator=gen) < probs).float()
    expected = BinaryAUROC(thresholds=None)(probs, labels.long()).item()
    assert roc_auc(probs, labels) == pytest.approx(expected, abs=1e-6)
    assert roc_auc(labels, labels) == 1.0
    assert roc_auc(-labels, labels) == 0.0
    assert roc_auc(torch.ones(4), torch.tensor([0.0, 1.0, 0.0, 1.0])) == 0.5
    assert math.isnan(roc_auc(probs[:5], torch.ones(5)))


def test_logloss_ne_accuracy_match_their_definitions() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4000, generator=gen, dtype=torch.float64) * 3
    labels = (torch.rand(4000, generator=gen, dtype=torch.float64) < torch.sigmoid(logits)).double()
    metrics = binary_metrics(logits.float(), labels.float())
    p = torch.sigmoid(logits.float().double())
    logloss = -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean().item()
    ctr = labels.mean().item()
    entropy = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))
    assert metrics.logloss == pytest.approx(logloss, rel=1e-9)
    assert metrics.ctr == pytest.approx(ctr, rel=1e-12)
    assert metrics.ne == pytest.approx(logloss / entropy, rel=1e-9)
    assert metrics.accuracy == pytest.approx(BinaryAccuracy()(p.float(), labels.long()).item(), abs=1e-7)
    assert metrics.rows == 4000
    # a model that always predicts the click rate has NE exactly 1
    constant = torch.full((4000,), math.log(ctr / (1 - ctr)))
    assert binary_metrics(constant, labels.float()).ne == pytest.approx(1.0, rel=1e-9)


class _PaddedLoader:
    """Three batches of B=8; the last has 3 padding rows whose logits/labels would change every metric."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(11)
        self.outputs = []
        for index in range(3):
            logits = torch.randn(8, generator=gen)
            labels = (torch.rand(8, generator=gen) < 0.5).float()
            mask = torch.ones(8)
            if index == 2:
                mask[5:] = 0
                logits[5:] = 50.0  # confidently wrong padding
                labels[5:] = 0.0
            self.outputs.append(StepOutput(torch.tensor(0.0), logits, labels, mask))
        self.epochs = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(range(3))


def test_evaluate_excludes_padding_and_respects_max_batches() -> None:
    loader = _PaddedLoader()

    def run_batches(batches):
        return (loader.outputs[index] for index in batches)

    result = evaluate(run_batches, loader)
    real = [(o.logits[o.mask > 0], o.labels[o.mask > 0]) for o in loader.outputs]
    expected = binary_metrics(torch.cat([r[0] for r in real]), torch.cat([r[1] for r in real]))
    assert result == expected
    assert result.rows == 21
    first_two = evaluate(run_batches, loader, max_batches=2)
    assert first_two.rows == 16
    assert loader.epochs == [0, 0]


def test_metrics_stay_on_the_device_until_one_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``.item()`` / ``.cpu()`` inside the computation (each would be a GPU sync); one ``tolist`` at the end."""
    generator = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(500, generator=generator), (torch.rand(500, generator=generator) < 0.3).float()
    expected = binary_metrics(logits, labels)
    transfers = []
    original_tolist = torch.Tensor.tolist

    def forbidden(self, *args, **kwargs):
        raise AssertionError("a host transfer inside the metric computation")

    def counted_tolist(self):
        transfers.append(self.shape)
        return original_tolist(self)

    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    monkeypatch.setattr(torch.Tensor, "cpu", forbidden)
    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    assert binary_metrics(logits, labels) == expected
    assert transfers == [torch.Size([5])]
