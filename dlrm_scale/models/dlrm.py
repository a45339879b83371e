"""The DLRM assembly: embedding tables, bottom MLP, a swappable interaction, top MLP.

Paper: Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation Systems", 2019
(https://arxiv.org/abs/1906.00091). Layout and attribute names follow TorchRec's ``torchrec.models.dlrm.DLRM``
where sharding relies on them (``model.sparse_arch.embedding_bag_collection``), but the interaction is any module
of the registry and the top MLP is sized from its ``output_dim``, so swapping it is a config change
(``model.interaction.name``), never a subclass that recomputes widths.

Data flow, with B rows, F sparse features, embedding width D::

    dense_features (B, num_dense) --bottom_mlp--> (B, D) ---------------.
    sparse_features KJT --sparse_arch (EBC, sum pooling)--> (B, F, D) ---+--interaction--> (B, output_dim)
                                                                           --top_mlp--> (B, 1) -> logits (B,)

Example::

    cfg = ModelConfig(embedding_dim=16, bottom_mlp=[64, 16], top_mlp=[64, 1])
    model = build_dlrm(cfg, [1000] * 26, device="cpu")
    logits = model(torch.rand(8, 13), kjt)  # kjt: KeyedJaggedTensor with keys C1 … C26, stride 8
    logits.shape  # (8,)
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.config import ModelConfig, sparse_feature_names
from dlrm_scale.models.interactions import build_interaction
from dlrm_scale.models.mlp import MLP


def embedding_bag_configs(cardinalities: list[int], embedding_dim: int,
                          feature_names: list[str]) -> list[EmbeddingBagConfig]:
    """One sum-pooled table per feature: table ``t_<feature>`` of ``cardinalities[i]`` rows and width D."""
    if len(cardinalities) != len(feature_names):
        raise ValueError(f"{len(cardinalities)} table sizes for {len(feature_names)} sparse features "
                         f"({', '.join(feature_names)})")
    for feature, rows in zip(feature_names, cardinalities):
        if rows <= 0:
            raise ValueError(f"table t_{feature}: cardinality must be positive, got {rows}")
    return [
        EmbeddingBagConfig(name=f"t_{feature}", embedding_dim=embedding_dim, num_embeddings=rows,
                           feature_names=[feature], pooling=PoolingType.SUM)
        for feature, rows in zip(feature_names, cardinalities)
    ]


class SparseArch(nn.Module):
    """Embedding lookups: ``KeyedJaggedTensor`` (keys = the EBC's features) -> pooled ``(B, F, D)``.

    Gathers the pooled embeddings by feature name, not by position, because a sharded EBC may return its
    features in a different order than the tables were declared (TorchRec's ``SparseArch`` does the same).
    """

    def __init__(self, embedding_bag_collection: EmbeddingBagCollection) -> None:
        super().__init__()
        self.embedding_bag_collection = embedding_bag_collection
        self.feature_names = [name for table in embedding_bag_collection.embedding_bag_configs()
                              for name in table.feature_names]

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.embedding_bag_collection(features).to_dict()
        return torch.stack([pooled[name] for name in self.feature_names], dim=1)


class DLRM(nn.Module):
    """``forward(dense_features (B, num_dense) float32, sparse_features KJT) -> logits (B,)``.

    ``bottom_mlp`` maps the dense features to ``(B, D)``; ``interaction`` follows the
    :class:`~dlrm_scale.models.interactions.base.Interaction` contract; ``top_mlp`` maps its ``output_dim``
    columns to the single logit. Use :func:`build_dlrm` to build one from a :class:`ModelConfig`.
    """

    def __init__(self, *, embedding_bag_collection: EmbeddingBagCollection, bottom_mlp: nn.Module,
                 interaction: nn.Module, top_mlp: nn.Module) -> None:
        super().__init__()
        self.sparse_arch = SparseArch(embedding_bag_collection)
        self.bottom_mlp = bottom_mlp
        self.interaction = interaction
        self.top_mlp = top_mlp

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        embedded_dense = self.bottom_mlp(dense_features)  # (B, D)
        embedded_sparse = self.sparse_arch(sparse_features)  # (B, F, D)
        interacted = self.interaction(embedded_dense, embedded_sparse)  # (B, output_dim)
        return self.top_mlp(interacted).squeeze(-1)  # (B,)


def build_dlrm(model_cfg: ModelConfig, cardinalities: list[int], *, num_dense: int = 13,
               device: str | torch.device = "meta") -> DLRM:
    """The DLRM of ``model_cfg`` with one table per entry of ``cardinalities`` (features C1 … CF).

    The ``EmbeddingBagCollection`` is created on ``device``: ``meta`` (the default) allocates nothing, so
    TorchRec's ``DistributedModelParallel`` materialises only each rank's shards. The dense part (bottom MLP,
    interaction, top MLP) lives on ``device`` when it is a real device and on the CPU when it is ``meta``, so
    it is initialised here (from the caller's RNG state) and DDP can replicate it.
    """
    device = torch.device(device)
    dim = model_cfg.embedding_dim
    if not cardinalities:
        raise ValueError("build_dlrm needs at least one embedding table (cardinalities is empty)")
    if num_dense <= 0:
        raise ValueError(f"num_dense must be positive, got {num_dense}")
    if not model_cfg.bottom_mlp or model_cfg.bottom_mlp[-1] != dim:
        raise ValueError(f"model.bottom_mlp must end in model.embedding_dim ({dim}); got {model_cfg.bottom_mlp}")
    if not model_cfg.top_mlp or model_cfg.top_mlp[-1] != 1:
        raise ValueError(f"model.top_mlp must end in 1 (the logit); got {model_cfg.top_mlp}")
    names = sparse_feature_names(len(cardinalities))
    ebc = EmbeddingBagCollection(tables=embedding_bag_configs(cardinalities, dim, names), device=device)
    interaction = build_interaction(model_cfg.interaction.name, model_cfg.interaction.params,
                                    num_sparse_features=len(names), embedding_dim=dim)
    model = DLRM(
        embedding_bag_collection=ebc,
        bottom_mlp=MLP(num_dense, model_cfg.bottom_mlp),
        interaction=interaction,
        top_mlp=MLP(interaction.output_dim, model_cfg.top_mlp, activate_last=False),
    )
    # Dense parts are built on the CPU; on a real device everything moves there (the EBC is already on it).
    return model if device.type in ("meta", "cpu") else model.to(device)


def compile_dense(model: DLRM, *, backend: str = "inductor") -> None:
    """Compiles the bottom and top MLPs in place (``nn.Module.compile``: the modules, their parameter names and so
    checkpoints stay as they are; compilation happens on the first call, on whatever device the model is then).

    The MLPs are where compilation pays: it fuses each layer's bias and activation into the matmul's neighbours.
    The interaction stays eager: ``dot``'s is already one fused kernel per pass, and its first call checks that
    kernel against a reference, which needs eager execution. The embedding lookups are TorchRec's fused kernels.
    """
    for module in (model.bottom_mlp, model.top_mlp):
        module.compile(backend=backend)
