"""The embedding optimizer, fused into the backward pass of the sharded tables.

TorchRec reads the optimizer attached to each embedding weight by ``_apply_optimizer_in_backward`` (the
``_optimizer_classes`` / ``_optimizer_kwargs`` attributes) and hands it to fbgemm, whose table-batched kernel
applies the update while it computes the gradient: no dense ``(rows, D)`` gradient is ever materialised, and the
planner counts the optimizer state in its memory estimate. This is how TorchRec's DLRM example and the MLPerf
DLRMv2 reference configure it, and it works the same on torchrec 1.6 and 1.8.

Tables the planner makes ``data_parallel`` are the exception: their replicated weights are ordinary parameters
synchronised by DDP and stepped by the dense optimizer (see ``dlrm_scale.train.optim``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

from dlrm_scale.config import EmbeddingOptimizerConfig

# config name -> optimizer class TorchRec maps to an fbgemm EmbOptimType (torchrec.distributed.utils).
EMBEDDING_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


def embedding_optimizer(emb_cfg: EmbeddingOptimizerConfig) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The optimizer class and constructor kwargs for ``optimizer.embedding`` (``lr``, ``weight_decay`` and,
    except for SGD, ``eps``). TorchRec turns ``lr`` into fbgemm's ``learning_rate``."""
    kwargs: dict[str, Any] = {"lr": emb_cfg.lr, "weight_decay": emb_cfg.weight_decay}
    if emb_cfg.name != "sgd":
        kwargs["eps"] = emb_cfg.eps
    return EMBEDDING_OPTIMIZERS[emb_cfg.name], kwargs


def embedding_bag_collections(model: nn.Module) -> dict[str, EmbeddingBagCollection]:
    """Every (unsharded) ``EmbeddingBagCollection`` in ``model`` by its module path."""
    return {path: module for path, module in model.named_modules() if isinstance(module, EmbeddingBagCollection)}


def apply_embedding_optimizer(model: nn.Module, emb_cfg: EmbeddingOptimizerConfig) -> None:
    """Attaches the ``optimizer.embedding`` optimizer to every embedding weight of ``model`` (meta or real), to
    run inside the backward pass once ``DistributedModelParallel`` has sharded the tables.

    Each weight gets its own kwargs dict: TorchRec writes the fbgemm optimizer type into the dict it finds on a
    weight, and a dict shared between weights would leak that edit across them.
    """
    optimizer_class, kwargs = embedding_optimizer(emb_cfg)
    for path, ebc in embedding_bag_collections(model).items():
        for name, param in ebc.named_parameters():
            if hasattr(param, "_optimizer_classes"):
                raise ValueError(f"{path}.{name} already has an in-backward optimizer "
                                 f"({param._optimizer_classes[0].__name__}); apply the embedding optimizer once")
            _apply_optimizer_in_backward(optimizer_class, [param], dict(kwargs))
