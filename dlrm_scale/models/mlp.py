"""The multi-layer perceptron used for DLRM's bottom and top MLPs and for the deep towers of some interactions.

Layout matches TorchRec's ``DenseArch`` (ReLU after every layer) and ``OverArch`` (ReLU after every layer but the
last, which emits the logit), so weights copy across layer by layer.

Example::

    bottom = MLP(13, [512, 256, 128])  # (B, 13) -> (B, 128), ReLU after each layer
    top = MLP(479, [1024, 1], activate_last=False)  # (B, 479) -> (B, 1), the last layer is linear
"""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """``Linear -> ReLU`` per entry of ``layer_sizes``: ``(B, in_features) -> (B, layer_sizes[-1])``.

    ``activate_last=False`` leaves the final layer linear (a logit or a value added to a logit). Linear layers
    keep PyTorch's default initialisation, as TorchRec's MLPs do.
    """

    def __init__(self, in_features: int, layer_sizes: list[int], *, activate_last: bool = True) -> None:
        if in_features <= 0 or not layer_sizes or any(size <= 0 for size in layer_sizes):
            raise ValueError(
                f"MLP needs a positive input width and at least one positive layer size; "
                f"got in_features={in_features}, layer_sizes={layer_sizes}"
            )
        layers: list[nn.Module] = []
        widths = [in_features, *layer_sizes]
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(width_in, width_out))
            if activate_last or index < len(layer_sizes) - 1:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = layer_sizes[-1]
