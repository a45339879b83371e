"""`dot` against a naive per-sample Python reference of DLRM's interaction, on fresh random inputs."""

from __future__ import annotations

import pytest
import torch

from dlrm_scale.models.interactions import build_interaction


def naive_dot(dense: torch.Tensor, sparse: torch.Tensor, *, self_interaction: bool, width: int) -> torch.Tensor:
    """Row by row: the dense vector, then <v_i, v_j> for i < j (i <= j with self-interaction) over
    [dense, sparse_1 … sparse_F] in row-major order, then zeros up to ``width``."""
    rows = []
    for b in range(dense.shape[0]):
        vectors = [dense[b]] + [sparse[b, f] for f in range(sparse.shape[1])]
        values = [float(x) for x in dense[b]]
        for i in range(len(vectors)):
            for j in range(i if self_interaction else i + 1, len(vectors)):
                values.append(sum(float(a) * float(c) for a, c in zip(vectors[i], vectors[j])))
        values += [0.0] * (width - len(values))
        rows.append(values)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("self_interaction", [False, True])
@pytest.mark.parametrize("pad_to_multiple", [1, 8])
@pytest.mark.parametrize(("batch", "features", "dim"), [(1, 1, 1), (3, 4, 5), (6, 7, 3)])
def test_matches_naive_reference(self_interaction: bool, pad_to_multiple: int, batch: int, features: int,
                                 dim: int) -> None:
    dot = build_interaction("dot", {"self_interaction": self_interaction, "pad_to_multiple": pad_to_multiple},
                            num_sparse_features=features, embedding_dim=dim).double()
    fields = features + 1
    pairs = fields * (fields + 1) // 2 if self_interaction else fields * (fields - 1) // 2
    unpadded = dim + pairs
    assert dot.output_dim % pad_to_multiple == 0
    assert unpadded <= dot.output_dim < unpadded + pad_to_multiple
    generator = torch.Generator().manual_seed(batch * 100 + features * 10 + dim)
    dense = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    sparse = torch.randn(batch, features, dim, generator=generator, dtype=torch.float64)
    expected = naive_dot(dense, sparse, self_interaction=self_interaction, width=dot.output_dim)
    torch.testing.assert_close(dot(dense, sparse), expected, rtol=1e-12, atol=1e-12)


def test_criteo_width() -> None:
    """26 features of width 128: 128 + 27 * 26 / 2 = 479 (the DLRM paper's top-MLP input), 480 padded to 8."""
    assert build_interaction("dot", {}, num_sparse_features=26, embedding_dim=128).output_dim == 479
    padded = build_interaction("dot", {"pad_to_multiple": 8}, num_sparse_features=26, embedding_dim=128)
    assert padded.output_dim == 480


@pytest.mark.parametrize("params", [{"pad_to_multiple": 0}, {"self_interaction": "yes"}])
def test_bad_options(params: dict) -> None:
    with pytest.raises(ValueError, match="interaction 'dot'"):
        build_interaction("dot", params, num_sparse_features=3, embedding_dim=4)
