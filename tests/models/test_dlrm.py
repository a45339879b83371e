"""The DLRM assembly: table naming, meta-device tables with CPU dense parts, the top MLP sized from the
interaction, feature gathering by name, config errors, and the custom-interaction example."""

from __future__ import annotations

import pytest
import torch
import torchrec.fx
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedTensor

from dlrm_scale.config import InteractionConfig, ModelConfig
from dlrm_scale.models.dlrm import SparseArch, build_dlrm, compile_dense, embedding_bag_configs
from dlrm_scale.registry import RegistryError
from examples import custom_interaction
from tests.models.helpers import ALL_INTERACTIONS, SMALL_PARAMS, copy_params, random_kjt


def small_cfg(name: str = "dot", params: dict | None = None) -> ModelConfig:
    return ModelConfig(embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[6, 1],
                       interaction=InteractionConfig(name=name, params=params or {}))


def test_embedding_bag_configs() -> None:
    tables = embedding_bag_configs([10, 20], 8, ["C1", "C2"])
    assert [(t.name, t.feature_names, t.num_embeddings, t.embedding_dim, t.pooling) for t in tables] == [
        ("t_C1", ["C1"], 10, 8, PoolingType.SUM), ("t_C2", ["C2"], 20, 8, PoolingType.SUM)]
    with pytest.raises(ValueError, match="2 table sizes for 3 sparse features"):
        embedding_bag_configs([10, 20], 8, ["C1", "C2", "C3"])
    with pytest.raises(ValueError, match="t_C2: cardinality must be positive"):
        embedding_bag_configs([10, 0], 8, ["C1", "C2"])


def test_meta_build_keeps_dense_parts_on_cpu() -> None:
    model = build_dlrm(small_cfg(), [40_000_000, 5, 7], num_dense=13)  # a 40M-row table costs nothing on meta
    ebc = model.sparse_arch.embedding_bag_collection
    assert [t.name for t in ebc.embedding_bag_configs()] == ["t_C1", "t_C2", "t_C3"]
    assert all(p.is_meta for p in ebc.parameters())
    dense_params = [p for n, p in model.named_parameters() if not n.startswith("sparse_arch.")]
    assert dense_params and all(p.device.type == "cpu" for p in dense_params)
    assert model.bottom_mlp[0].in_features == 13


@pytest.mark.parametrize(("name", "params"), [("dot", {"pad_to_multiple": 8}), ("cat", {}),
                                              ("dcnv2", {"num_layers": 1, "low_rank": 2})])
def test_top_mlp_is_sized_from_output_dim(name: str, params: dict) -> None:
    model = build_dlrm(small_cfg(name, params), [5, 6, 7], num_dense=3, device="cpu")
    assert model.top_mlp[0].in_features == model.interaction.output_dim
    logits = model(torch.randn(5, 3), random_kjt([5, 6, 7], 5))
    assert logits.shape == (5,)


@pytest.mark.parametrize("name", ALL_INTERACTIONS)
def test_fx_traceable(name: str) -> None:
    """TorchRec's TrainPipelineSparseDist rewrites the model from an FX trace: the whole DLRM must trace
    symbolically (no data-dependent Python control flow) and the traced graph must compute the same logits."""
    model = build_dlrm(small_cfg(name, SMALL_PARAMS.get(name, {})), [5, 6, 7], num_dense=3, device="cpu")
    traced = torchrec.fx.symbolic_trace(model)
    dense, sparse = torch.randn(4, 3), random_kjt([5, 6, 7], 4)
    torch.testing.assert_close(traced(dense, sparse), model(dense, sparse))


def test_sparse_arch_gathers_features_by_name() -> None:
    """A sharded EBC may return its features in another order; the (B, F, D) tensor must not change."""
    sparse_arch = build_dlrm(small_cfg(), [5, 6, 7], device="cpu").sparse_arch
    kjt = random_kjt([5, 6, 7], 3)
    expected = sparse_arch(kjt)
    pooled = sparse_arch.embedding_bag_collection(kjt).to_dict()
    shuffled = KeyedTensor.from_tensor_list(["C3", "C1", "C2"], [pooled["C3"], pooled["C1"], pooled["C2"]])

    class Shuffling(torch.nn.Module):
        def __init__(self, ebc: torch.nn.Module) -> None:
            super().__init__()
            self.ebc = ebc

        def embedding_bag_configs(self):
            return self.ebc.embedding_bag_configs()

        def forward(self, features):
            return shuffled

    torch.testing.assert_close(SparseArch(Shuffling(sparse_arch.embedding_bag_collection))(kjt), expected)
    assert expected.shape == (3, 3, 4)
    torch.testing.assert_close(expected[:, 1], pooled["C2"])


@pytest.mark.parametrize(("cfg", "error", "match"), [
    (ModelConfig(embedding_dim=4, bottom_mlp=[8, 5], top_mlp=[1]), ValueError, r"bottom_mlp must end in .*\(4\)"),
    (ModelConfig(embedding_dim=4, bottom_mlp=[4], top_mlp=[3]), ValueError, "top_mlp must end in 1"),
    (ModelConfig(embedding_dim=4, bottom_mlp=[4], top_mlp=[1], interaction=InteractionConfig(name="nope")),
     RegistryError, "registered: autoint, cat, cin, dcnv2, dot"),
    (ModelConfig(embedding_dim=4, bottom_mlp=[4], top_mlp=[1],
                 interaction=InteractionConfig(name="dot", params={"self": True})),
     TypeError, "interaction 'dot'.*accepted params: self_interaction=False, pad_to_multiple=1"),
])
def test_config_errors(cfg: ModelConfig, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build_dlrm(cfg, [5, 6], device="cpu")


def test_custom_interaction_by_dotted_path_trains() -> None:
    """The README example: the class lives outside the package, is named by dotted path, and learns a pure
    interaction (an XOR of two ids' halves) that no additive model can."""
    model = build_dlrm(small_cfg("examples.custom_interaction:BiInteraction", {"scale": 0.5}), [5, 6],
                       device="cpu")
    assert isinstance(model.interaction, custom_interaction.BiInteraction) and model.interaction.scale == 0.5
    assert model.top_mlp[0].in_features == 8
    first, last = custom_interaction.main(steps=120)
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_dense_keeps_names_and_values(backend: str) -> None:
    """``train.compile``: the MLPs compiled in place give the eager logits and gradients, under the same parameter
    names (so checkpoints of compiled and eager runs are interchangeable). (A full FX trace refuses compiled
    modules; TorchRec's pipeline traces shallowly, treating modules without sharded children as leaves: the 2-rank
    test in tests/train runs it.)"""
    torch._dynamo.reset()
    eager = build_dlrm(small_cfg("dot", {"pad_to_multiple": 8}), [5, 6, 7], num_dense=3, device="cpu")
    compiled = build_dlrm(small_cfg("dot", {"pad_to_multiple": 8}), [5, 6, 7], num_dense=3, device="cpu")
    pairs = copy_params(eager, compiled)
    compile_dense(compiled, backend=backend)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert compiled.bottom_mlp._compiled_call_impl is not None and compiled.top_mlp._compiled_call_impl is not None
    generator = torch.Generator().manual_seed(5)
    for batch in (4, 9):  # a second shape: recompiled (or dynamic), still the same values
        dense, sparse = torch.randn(batch, 3, generator=generator), random_kjt([5, 6, 7], batch, generator=generator)
        want, got = eager(dense, sparse), compiled(dense, sparse)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        want.sum().backward()
        got.sum().backward()
        for source, target in pairs:
            torch.testing.assert_close(target.grad, source.grad, rtol=1e-5, atol=1e-6)
            source.grad = target.grad = None
