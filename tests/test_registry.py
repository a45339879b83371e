"""Registry lookups: registered names, dotted paths to user code, and errors that list the valid names."""

from __future__ import annotations

from pathlib import Path

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


def test_a_base_admits_only_its_subclasses() -> None:
    class Base:
        pass

    reg: Registry[type] = Registry("widget", base=Base)
    with pytest.raises(RegistryError, match=r"'collections:OrderedDict' is the class collections.OrderedDict, "
                                            r"not a subclass of .*Base"):
        reg.get("collections:OrderedDict")
    with pytest.raises(RegistryError, match="'os.path:sep' is a str, not a subclass"):
        reg.get("os.path:sep")


# Callables a config once reached: each would act when called (truncate a file, fetch and run a hubconf.py).
@pytest.mark.parametrize("target", ["logging:basicConfig", "torch.hub:load", "builtins:open"])
@pytest.mark.parametrize("command", ["config", "plan"])
def test_interaction_path_to_a_callable_is_refused_before_it_is_called(
        target: str, command: str, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import torch.hub

    from dlrm_scale.cli import main

    calls: list[str] = []
    monkeypatch.setattr(logging, "basicConfig", lambda *a, **k: calls.append("basicConfig"))
    monkeypatch.setattr(torch.hub, "load", lambda *a, **k: calls.append("hub.load"))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    params = f'{{filename="{victim}", filemode="w"}}'
    argv = [command, "--set", f"model.interaction.name={target}", "--set", f"model.interaction.params={params}"]
    if command == "plan":
        argv += ["--world-size", "2", "--device", "cpu", "--set", "data.source=synthetic", "--set", "data.cardinalities=[10,20]"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dlrm-scale {command}: error: ") and f"interaction '{target}' is " in err
    assert "not a subclass" in err
    assert err.count("\n") == 1 and calls == [] and victim.read_text() == "precious\n"


def test_a_users_interaction_class_is_accepted(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_interactions.py").write_text(
        "from dlrm_scale.models.interactions.dot import DotInteraction\n"
        "class MyDot(DotInteraction):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from dlrm_scale.models.interactions import build_interaction

    module = build_interaction("my_interactions:MyDot", {}, num_sparse_features=3, embedding_dim=4)
    assert type(module).__name__ == "MyDot" and module.output_dim > 0
