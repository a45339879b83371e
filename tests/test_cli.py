"""`dlrm-scale --help` and every subcommand's `--help` explain every option, and answer without torch loaded."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib

import pytest

from dlrm_scale.cli import COMMANDS, DATASET_LEVEL, build_parser, main


def _leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (top,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    leaves = {}
    for name, sub in top.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            leaves.update({f"{name} {ds}": leaf for ds, leaf in nested[0].choices.items()})
        else:
            leaves[name] = sub
    return leaves


def test_every_command_is_wired() -> None:
    leaves = _leaf_parsers()
    expected = {f"{c} {d}" for c, ds in DATASET_LEVEL.items() for d in ds}
    expected |= {c for c in COMMANDS if c not in DATASET_LEVEL} | {"list"}
    assert set(leaves) == expected


@pytest.mark.parametrize("command", sorted(_leaf_parsers()))
def test_every_option_has_help(command: str) -> None:
    parser = _leaf_parsers()[command]
    assert parser.description, f"`dlrm-scale {command} --help` has no description"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 8, f"{command}: option {action.option_strings or action.dest} lacks help"


@pytest.mark.parametrize("command", sorted(_leaf_parsers()))
def test_help_exits_zero(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    assert "usage: dlrm-scale" in capsys.readouterr().out


def test_help_does_not_import_torch() -> None:
    code = ("import sys\nfrom dlrm_scale.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_list_interactions_and_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "presets"]) == 0
    assert "tiny_cpu" in capsys.readouterr().out
    assert main(["list", "interactions"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"dot", "cat", "dcnv2", "projection", "fm", "cin", "autoint", "gmf", "wide_deep"} <= set(names)


def test_config_prints_the_resolved_config(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["config", "--config", "tiny_cpu", "--set", "train.compile=true"]) == 0
    document = tomllib.loads(capsys.readouterr().out)
    assert document["train"]["compile"] is True and document["model"]["embedding_dim"] == 16
    out = tmp_path / "run.toml"
    assert main(["config", "--config", "tiny_cpu", "--set", "train.epochs=3", "--out", str(out)]) == 0
    assert tomllib.loads(out.read_text())["train"]["epochs"] == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["config", "--set", "train.batch_size=abc"], "train.batch_size: expected an integer"),
    (["config", "--config", "no_such_preset"], "no_such_preset"),
    (["config", "--set", "model.top_mlp=[8, 2]"], "model.top_mlp must end in 1"),
])
def test_bad_config_is_one_line_and_status_2(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlrm-scale config: error: ") and message in err and "Traceback" not in err
