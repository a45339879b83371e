"""Every registered interaction: output shapes, gradients (float64 gradcheck), torch.compile, and the registry's
errors for unknown names, bad params and dotted paths to a researcher's own module."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from dlrm_scale.cli import _run_list as run_list
from dlrm_scale.models.interactions import INTERACTIONS, build_interaction
from dlrm_scale.registry import RegistryError
from tests.models.helpers import ALL_INTERACTIONS, SMALL_PARAMS

EXPECTED = {"dot", "cat", "dcnv2", "projection", "fm", "cin", "autoint", "gmf", "wide_deep", "pnn"}


def make(name: str, features: int, dim: int) -> torch.nn.Module:
    return build_interaction(name, SMALL_PARAMS.get(name, {}), num_sparse_features=features, embedding_dim=dim)


def inputs(batch: int, features: int, dim: int, *, seed: int, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, dim, generator=generator, dtype=dtype),
            torch.randn(batch, features, dim, generator=generator, dtype=dtype))


def test_all_expected_modules_are_registered_with_a_description() -> None:
    assert EXPECTED <= set(ALL_INTERACTIONS)
    assert all(entry.description for entry in INTERACTIONS.entries())


@pytest.mark.parametrize("name", ALL_INTERACTIONS)
@pytest.mark.parametrize(("batch", "features", "dim"), [(1, 2, 1), (4, 3, 4), (7, 26, 8)])
def test_shape_and_rows_are_independent(name: str, batch: int, features: int, dim: int) -> None:
    torch.manual_seed(0)
    module = make(name, features, dim)
    dense, sparse = inputs(batch, features, dim, seed=batch + features + dim)
    out = module(dense, sparse)
    assert out.shape == (batch, module.output_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # Row 0 alone gives row 0 of the batch: nothing mixes examples (the batch size is free at serving time).
    torch.testing.assert_close(module(dense[:1], sparse[:1]), out[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_INTERACTIONS)
def test_gradcheck_float64(name: str) -> None:
    """Analytic vs numerical gradients of the inputs and of every parameter, in float64."""
    torch.manual_seed(0)
    module = make(name, 3, 3).double()
    dense, sparse = inputs(2, 3, 3, seed=1, dtype=torch.float64)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def run(dense: torch.Tensor, sparse: torch.Tensor, *flat_params: torch.Tensor) -> torch.Tensor:
        return functional_call(module, dict(zip(names, flat_params)), (dense, sparse))

    assert torch.autograd.gradcheck(run, (dense.requires_grad_(), sparse.requires_grad_(), *params),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ALL_INTERACTIONS)
def test_torch_compile_matches_eager(name: str) -> None:
    """Dynamo captures the whole forward and backward (``fullgraph``, no graph breaks). The ``aot_eager`` backend
    keeps this fast on CPU; the slow test below runs inductor itself."""
    check_compiled(name, backend="aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_INTERACTIONS)
def test_torch_compile_inductor_matches_eager(name: str) -> None:
    check_compiled(name, backend="inductor")


def check_compiled(name: str, *, backend: str) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    module = make(name, 4, 5)
    compiled = torch.compile(module, backend=backend, fullgraph=True)
    dense, sparse = inputs(6, 4, 5, seed=3)
    eager_in = (dense.clone().requires_grad_(), sparse.clone().requires_grad_())
    compiled_in = (dense.clone().requires_grad_(), sparse.clone().requires_grad_())
    eager_out, compiled_out = module(*eager_in), compiled(*compiled_in)
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(eager_out)
    eager_grads = torch.autograd.grad((eager_out * upstream).sum(), eager_in)
    compiled_grads = torch.autograd.grad((compiled_out * upstream).sum(), compiled_in)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(RegistryError) as info:
        build_interaction("dott", {}, num_sparse_features=3, embedding_dim=4)
    message = str(info.value)
    assert "unknown interaction 'dott'" in message
    assert all(name in message for name in EXPECTED)


def test_unknown_param_names_the_interaction_and_its_params() -> None:
    with pytest.raises(TypeError) as info:
        build_interaction("dcnv2", {"num_layer": 2}, num_sparse_features=3, embedding_dim=4)
    message = str(info.value)
    assert "interaction 'dcnv2'" in message and "num_layer" in message
    assert "num_layers=3" in message and "low_rank=512" in message


@pytest.mark.parametrize(("name", "params", "match"), [
    ("dcnv2", {"low_rank": 0}, "low_rank must be a positive integer"),
    ("projection", {"interaction_branch1_layer_sizes": [10]}, "multiple of embedding_dim"),
    ("cin", {"cin_layer_sizes": [3, 4]}, "must be even"),
    ("gmf", {"user_features": 3}, "at least one item feature"),
    ("autoint", {"num_heads": -1}, "num_heads must be a positive integer"),
    ("fm", {"deep_layer_sizes": [0]}, "deep_layer_sizes must be a list of positive integers"),
    ("wide_deep", {"deep_layer_sizes": 64}, "deep_layer_sizes must be a list of positive integers"),
    ("projection", {"interaction_branch2_layer_sizes": []}, r"must be a list of positive integers \(at least one\)"),
])
def test_bad_param_values(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_interaction(name, params, num_sparse_features=3, embedding_dim=4)


def test_dotted_path_loads_a_module_outside_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_research_mod.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        from dlrm_scale.models.interactions import Interaction

        class SumInteraction(Interaction):
            def __init__(self, *, num_sparse_features, embedding_dim, scale=1.0):
                super().__init__(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim)
                self.scale = scale
                self.output_dim = embedding_dim

            def forward(self, dense, sparse):
                return self.scale * (dense + sparse.sum(dim=1))

        class NoWidth(Interaction):
            pass

        class NotAnInteraction(nn.Module):
            """Right shape, wrong kind: a dotted path may only name an Interaction subclass."""

            def __init__(self, *, num_sparse_features, embedding_dim):
                super().__init__()
                self.output_dim = embedding_dim
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    for path in ("my_research_mod:SumInteraction", "my_research_mod.SumInteraction"):
        module = build_interaction(path, {"scale": 2.0}, num_sparse_features=3, embedding_dim=4)
        dense, sparse = inputs(2, 3, 4, seed=0)
        torch.testing.assert_close(module(dense, sparse), 2.0 * (dense + sparse.sum(dim=1)))
    with pytest.raises(TypeError, match="output_dim"):
        build_interaction("my_research_mod:NoWidth", {}, num_sparse_features=3, embedding_dim=4)
    with pytest.raises(RegistryError, match="NotAnInteraction, not a subclass of .*Interaction"):
        build_interaction("my_research_mod:NotAnInteraction", {}, num_sparse_features=3, embedding_dim=4)
    with pytest.raises(RegistryError, match="has no attribute 'Missing'"):
        build_interaction("my_research_mod:Missing", {}, num_sparse_features=3, embedding_dim=4)


def test_list_interactions_prints_each_name_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    # The handler of `dlrm-scale list interactions`, called directly: building the whole parser imports every
    # subcommand's module, which tests/test_cli.py covers.
    assert run_list(argparse.Namespace(what="interactions")) == 0
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in capsys.readouterr().out.splitlines()}
    for entry in INTERACTIONS.entries():
        assert lines[entry.name] == entry.description
