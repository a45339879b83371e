"""Feature-interaction modules, one file each, registered by name in :data:`INTERACTIONS`."""

from dlrm_scale.models.interactions.base import Interaction
from dlrm_scale.registry import Registry

INTERACTIONS: Registry[type[Interaction]] = Registry("interaction")

__all__ = ["INTERACTIONS", "Interaction"]


def load_builtin() -> None:
    """Imports every module of this package so its ``@INTERACTIONS.register`` runs: a new file is a new entry."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
