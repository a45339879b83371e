"""Registry lookups: registered names, dotted paths to user code, and errors that list the valid names."""

from __future__ import annotations

import pytest

from dlrm_scale.registry import Registry, RegistryError


def test_register_get_and_list() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("b", "the b widget")
    class B:
        pass

    @reg.register("a")
    class A:
        """First line of A's docstring.

        More text."""

    assert reg.get("a") is A and reg.get("b") is B
    assert reg.names() == ["a", "b"]
    assert [(e.name, e.description) for e in reg.entries()] == [("a", "First line of A's docstring."),
                                                               ("b", "the b widget")]
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(B)


def test_unknown_name_lists_valid_ones() -> None:
    reg: Registry[type] = Registry("widget")
    reg.register("only")(int)
    with pytest.raises(RegistryError, match="unknown widget 'nope'; registered: only"):
        reg.get("nope")


def test_dotted_paths() -> None:
    reg: Registry[type] = Registry("widget")
    assert reg.get("collections:OrderedDict").__name__ == "OrderedDict"
    assert reg.get("collections.OrderedDict").__name__ == "OrderedDict"
    with pytest.raises(RegistryError, match="cannot import module 'no_such_pkg.mod'"):
        reg.get("no_such_pkg.mod:X")
    with pytest.raises(RegistryError, match="has no attribute 'Nope'"):
        reg.get("collections:Nope")
