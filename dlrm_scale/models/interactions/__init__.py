"""Feature-interaction modules, one file each, registered by name in :data:`INTERACTIONS`.

``build_interaction("dcnv2", {"num_layers": 3}, num_sparse_features=26, embedding_dim=128)`` builds one from the
config's ``model.interaction`` (a registered name or a dotted path ``my_pkg.mod:MyInteraction``), checking its
params against the constructor so a typo names the module and the params it accepts. A dotted path must name a
subclass of :class:`Interaction`, checked before it is called (importing the module runs its code).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from dlrm_scale.models.interactions.base import Interaction
from dlrm_scale.registry import Registry

INTERACTIONS: Registry[type[Interaction]] = Registry("interaction", base=Interaction)

__all__ = ["INTERACTIONS", "Interaction", "build_interaction", "load_builtin"]

_SIZE_ARGS = ("num_sparse_features", "embedding_dim")


def load_builtin() -> None:
    """Imports every module of this package so its ``@INTERACTIONS.register`` runs: a new file is a new entry."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def accepted_params(cls: Any) -> dict[str, Any]:
    """The constructor's own options (besides F and D) with their defaults (``inspect.Parameter.empty`` if none)."""
    signature = inspect.signature(cls)
    return {name: p.default for name, p in signature.parameters.items()
            if name not in _SIZE_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def build_interaction(name: str, params: Mapping[str, Any], *, num_sparse_features: int,
                      embedding_dim: int) -> nn.Module:
    """``INTERACTIONS.get(name)(num_sparse_features=F, embedding_dim=D, **params)``, validated.

    Raises :class:`~dlrm_scale.registry.RegistryError` for an unknown name (listing the registered ones) or a
    dotted path to anything but an :class:`Interaction` subclass (nothing of it is called),
    ``TypeError`` when ``params`` do not fit the constructor (naming the accepted ones), and ``TypeError`` when
    the result is not an ``nn.Module`` with a positive integer ``output_dim``.
    """
    load_builtin()
    cls = INTERACTIONS.get(name)
    try:
        inspect.signature(cls).bind(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim,
                                    **params)
    except TypeError as exc:
        options = ", ".join(
            f"{key}={default!r}" if default is not inspect.Parameter.empty else f"{key} (required)"
            for key, default in accepted_params(cls).items()
        ) or "none"
        raise TypeError(f"interaction {name!r}: bad model.interaction.params {dict(params)!r} ({exc}); "
                        f"accepted params: {options}") from exc
    module = cls(num_sparse_features=num_sparse_features, embedding_dim=embedding_dim, **params)
    output_dim = getattr(module, "output_dim", None)
    if not isinstance(module, nn.Module) or not isinstance(output_dim, int) or output_dim <= 0:
        raise TypeError(f"interaction {name!r} must build an nn.Module with a positive int `output_dim` "
                        f"(see dlrm_scale.models.interactions.base.Interaction); got {type(module).__name__} "
                        f"with output_dim={output_dim!r}")
    return module
