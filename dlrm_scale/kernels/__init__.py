"""Fused GPU kernels (Triton) with exact PyTorch fallbacks; see :mod:`dlrm_scale.kernels.dot_interaction`."""

from dlrm_scale.kernels.dot_interaction import (
    DotInteractionFunction,
    dot_interaction,
    fused_supported,
    num_pairs,
    reference_dot_interaction,
)

__all__ = ["DotInteractionFunction", "dot_interaction", "fused_supported", "num_pairs",
           "reference_dot_interaction"]
