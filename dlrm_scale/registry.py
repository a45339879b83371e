"""Name -> builder registries, so components are chosen by a config string rather than ``if/elif`` chains.

A name that is not registered may be a dotted path ``package.module:Attr`` (or ``package.module.Attr``) to a
user's own class: it is imported on demand, so researchers plug in modules without editing this package.
Importing runs that module's code, as any ``import`` does: name only modules you trust. What the path names is
then checked before anything is called: a registry with a ``base`` only returns subclasses of it, so a config
value can name a plug-in of the declared kind and nothing else (not ``logging:basicConfig``, not
``torch.hub:load``).

Example::

    INTERACTIONS = Registry("interaction", base=Interaction)

    @INTERACTIONS.register("dot", "DLRM pairwise dot products")
    class DotInteraction(Interaction): ...

    INTERACTIONS.get("dot")                    # -> DotInteraction
    INTERACTIONS.get("my_pkg.mod:MyInteraction")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    target: T
    description: str


class Registry(Generic[T]):
    """Entries of one kind; with ``base``, a dotted path must name a subclass of ``base``."""

    def __init__(self, kind: str, *, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        def decorator(target: T) -> T:
            if name in self._entries and self._entries[name].target is not target:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name].target!r}")
            first_doc_line = next(iter((getattr(target, "__doc__", None) or "").strip().splitlines()), "")
            self._entries[name] = Entry(name, target, description or first_doc_line)
            return target

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name].target
        if ":" in name or "." in name:
            target = import_dotted(name, self.kind)
            if self.base is not None and not (isinstance(target, type) and issubclass(target, self.base)):
                what = f"the class {target.__module__}.{target.__qualname__}" if isinstance(target, type) else (
                    f"a {type(target).__name__}")
                raise RegistryError(f"{self.kind} {name!r} is {what}, not a subclass of "
                                    f"{self.base.__module__}.{self.base.__qualname__}; refusing to use it")
            return target
        raise RegistryError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())} "
                            f"(or give a dotted path such as my_pkg.module:MyClass)")


def import_dotted(path: str, kind: str = "object") -> Any:
    """Imports ``pkg.mod:Attr`` or ``pkg.mod.Attr``; errors say which part was not found."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise RegistryError(f"{kind} {path!r} is not a dotted path like my_pkg.module:MyClass")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"{kind} {path!r}: cannot import module {module_name!r} ({exc})") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise RegistryError(f"{kind} {path!r}: module {module_name!r} has no attribute {attr!r}") from exc
