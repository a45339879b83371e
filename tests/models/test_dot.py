"""`dot` against a naive per-sample Python reference of DLRM's interaction, on fresh random inputs; bit-identical to
TorchRec's `InteractionArch` on CPU (its selection of the fused kernels is tested in tests/kernels)."""

from __future__ import annotations

import pytest
import torch
from torchrec.models.dlrm import InteractionArch

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


@pytest.mark.parametrize("params", [{"pad_to_multiple": 0}, {"self_interaction": "yes"}, {"kernel": "cuda"}])
def test_bad_options(params: dict) -> None:
    with pytest.raises(ValueError, match="interaction 'dot'"):
        build_interaction("dot", params, num_sparse_features=3, embedding_dim=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cpu_is_bit_identical_to_torchrec_interaction_arch(dtype: torch.dtype) -> None:
    """With the default ``kernel="auto"`` a CPU run takes the plain ops, exactly TorchRec's: same bits forward and
    backward, so nothing changes for CPU users when the kernels are selected on CUDA."""
    dot = build_interaction("dot", {}, num_sparse_features=26, embedding_dim=16)
    theirs = InteractionArch(num_sparse_features=26)
    generator = torch.Generator().manual_seed(7)
    dense = torch.randn(9, 16, generator=generator).to(dtype)
    sparse = torch.randn(9, 26, 16, generator=generator).to(dtype)
    ours_in = (dense.clone().requires_grad_(), sparse.clone().requires_grad_())
    theirs_in = (dense.clone().requires_grad_(), sparse.clone().requires_grad_())
    ours_out, theirs_out = dot(*ours_in), theirs(*theirs_in)
    assert torch.equal(ours_out, theirs_out)
    upstream = torch.randn(ours_out.shape, generator=generator).to(dtype)
    for got, want in zip(torch.autograd.grad(ours_out, ours_in, upstream),
                         torch.autograd.grad(theirs_out, theirs_in, upstream)):
        assert torch.equal(got, want)
