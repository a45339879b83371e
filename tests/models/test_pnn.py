"""PNN's product layer against the paper's undecomposed sums over field pairs (Qu et al. 2016, section III),
and the outer-product variant through the checks the generic interaction tests run on the default (inner)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torchmetrics.functional import auroc

from dlrm_scale.config import InteractionConfig, ModelConfig
from dlrm_scale.models.dlrm import build_dlrm
from dlrm_scale.models.interactions import build_interaction
from tests.models.test_training import (
    CARDINALITIES,
    MARGIN,
    NUM_DENSE,
    LogisticBaseline,
    fit_and_score,
    planted_data,
)


def make(product: str, features: int = 3, dim: int = 4, units: int = 5) -> torch.nn.Module:
    return build_interaction("pnn", {"product": product, "product_units": units}, num_sparse_features=features,
                             embedding_dim=dim)


def fields_of(batch: int, features: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, dim, generator=generator, dtype=torch.float64),
            torch.randn(batch, features, dim, generator=generator, dtype=torch.float64))


def test_inner_product_matches_the_pairwise_sum_with_rank_one_weights() -> None:
    """l_p^n = Σ_ij W_p^n[i, j] <f_i, f_j> with W_p^n = θ^n θ^nᵀ (eq. 9-10), summed pair by pair."""
    torch.manual_seed(0)
    module = make("inner").double()
    dense, sparse = fields_of(3, 3, 4, seed=1)
    fields = torch.cat((dense.unsqueeze(1), sparse), dim=1)
    inner = torch.einsum("bid,bjd->bij", fields, fields)  # <f_i, f_j>
    weights = module.theta.unsqueeze(2) * module.theta.unsqueeze(1)  # (D1, F', F')
    quadratic = torch.stack([(weights[n] * inner).sum(dim=(1, 2)) for n in range(weights.shape[0])], dim=1)
    expected = torch.relu(module.linear(fields.flatten(1)) + quadratic)
    torch.testing.assert_close(module(dense, sparse), expected, rtol=1e-10, atol=1e-10)


def test_outer_product_matches_the_sum_of_pairwise_outer_products() -> None:
    """l_p^n = <W_p^n, Σ_ij f_i f_jᵀ> (eq. 13-14 with superposition), the outer products summed pair by pair."""
    torch.manual_seed(0)
    module = make("outer").double()
    dense, sparse = fields_of(3, 3, 4, seed=2)
    fields = torch.cat((dense.unsqueeze(1), sparse), dim=1)
    num_fields = fields.shape[1]
    p = sum(torch.einsum("bd,be->bde", fields[:, i], fields[:, j])
            for i in range(num_fields) for j in range(num_fields))  # (B, D, D)
    quadratic = torch.einsum("nde,bde->bn", module.kernel, p)
    expected = torch.relu(module.linear(fields.flatten(1)) + quadratic)
    torch.testing.assert_close(module(dense, sparse), expected, rtol=1e-10, atol=1e-10)


def test_outer_gradcheck_float64() -> None:
    torch.manual_seed(0)
    module = make("outer").double()
    dense, sparse = fields_of(2, 3, 4, seed=3)
    # keep the ReLU away from its kink, where numerical and analytic gradients legitimately differ
    with torch.no_grad():
        module.linear.bias.fill_(5.0)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def run(dense: torch.Tensor, sparse: torch.Tensor, *flat: torch.Tensor) -> torch.Tensor:
        return functional_call(module, dict(zip(names, flat)), (dense, sparse))

    assert torch.autograd.gradcheck(run, (dense.requires_grad_(), sparse.requires_grad_(), *params),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_outer_compiles_without_graph_breaks() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    module = make("outer")
    dense, sparse = torch.randn(4, 4), torch.randn(4, 3, 4)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(dense, sparse), module(dense, sparse))


def test_outer_learns_planted_pairwise_interactions() -> None:
    """OPNN inside the DLRM beats the logistic baseline on labels that only pairs of ids explain (the inner
    variant runs the same check in tests/models/test_training.py)."""
    train, test = planted_data(seed=0)
    torch.manual_seed(0)
    baseline = LogisticBaseline()
    baseline_auc = fit_and_score(baseline, lambda dense, kjt, ids: baseline(dense, ids), train, test, lr=0.05)
    torch.manual_seed(0)
    cfg = ModelConfig(embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[32, 1],
                      interaction=InteractionConfig(name="pnn", params={"product": "outer", "product_units": 32}))
    model = build_dlrm(cfg, CARDINALITIES, num_dense=NUM_DENSE, device="cpu")
    auc = fit_and_score(model, lambda dense, kjt, ids: model(dense, kjt), train, test, lr=0.01)
    assert auc > baseline_auc + MARGIN, (auc, baseline_auc)
    assert auc <= float(auroc(test.hidden_logit, test.labels.long(), task="binary")) + 0.02


@pytest.mark.parametrize(("params", "needle"), [({"product": "kernel"}, "product must be one of"),
                                                ({"product_units": 0}, "product_units must be a positive")])
def test_bad_params_name_the_option(params: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build_interaction("pnn", params, num_sparse_features=3, embedding_dim=4)
