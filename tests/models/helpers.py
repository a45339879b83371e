"""Shared pieces of the model tests: small options per interaction, random KJTs, weight copying."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.config import sparse_feature_names
from dlrm_scale.models.interactions import INTERACTIONS, load_builtin

load_builtin()
ALL_INTERACTIONS = INTERACTIONS.names()

# Options that keep each module tiny for shape, gradient, compile and training tests; a module not listed here
# is tested with its defaults.
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "dcnv2": {"num_layers": 2, "low_rank": 3},
    "fm": {"deep_layer_sizes": [6]},
    "cin": {"cin_layer_sizes": [4, 3], "deep_layer_sizes": [5]},
    "autoint": {"num_layers": 2, "num_heads": 2, "attention_dim": 2},
    "gmf": {"deep_layer_sizes": [6, 4]},
    "wide_deep": {"deep_layer_sizes": [6]},
    "pnn": {"product_units": 6},
}


def random_kjt(cardinalities: list[int], batch_size: int, *, max_length: int = 4,
               generator: torch.Generator | None = None) -> KeyedJaggedTensor:
    """Keys C1 … CF, stride B; each bag holds 0 … ``max_length`` ids (empty bags included)."""
    lengths = torch.randint(0, max_length + 1, (len(cardinalities), batch_size), generator=generator)
    values = torch.cat([torch.randint(0, rows, (int(lengths[f].sum()),), generator=generator)
                        for f, rows in enumerate(cardinalities)])
    return KeyedJaggedTensor.from_lengths_sync(keys=sparse_feature_names(len(cardinalities)), values=values,
                                               lengths=lengths.flatten())


def copy_params(source: nn.Module, target: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """Copies ``source``'s parameters into ``target``'s, pairing them in registration order (shapes must agree);
    returns the (source, target) pairs so gradients can be compared the same way."""
    pairs = list(zip(source.parameters(), target.parameters(), strict=True))
    with torch.no_grad():
        for src, dst in pairs:
            assert src.shape == dst.shape, f"{tuple(src.shape)} vs {tuple(dst.shape)}"
            dst.copy_(src)
    return pairs
