"""``torchx run`` that takes ``--set KEY=VALUE`` as often as ``dlrm-scale`` does.

torchx's own ``run`` refuses an option repeated among the component's arguments (``Repeated Command Line
Arguments: ['--set']``), so the README's ``-- --config tiny_cpu --set a=1 --set b=2`` would fail. This command
joins each ``--set VALUE`` pair into the single token ``--set=VALUE`` (the same to argparse, and distinct strings to
torchx's check) and then runs torchx's ``run`` unchanged. It replaces ``run`` through torchx's documented
``torchx.cli.cmds`` entry point (``pyproject.toml``), so the installed ``torchx`` binary uses it;
``python -m launch.torchx_cmds run ...`` is the same command without the installed entry point.
"""

from __future__ import annotations

import argparse
import sys

from torchx.cli.cmd_run import CmdRun as TorchxCmdRun

JOINED = ("--set",)


def join_repeated(args: list[str]) -> list[str]:
    """``["--config", "x", "--set", "a=1", "--set", "b=2"]`` -> ``["--config", "x", "--set=a=1", "--set=b=2"]``."""
    joined: list[str] = []
    tokens = iter(args)
    for token in tokens:
        if token in JOINED:
            value = next(tokens, None)
            joined.append(token if value is None else f"{token}={value}")
        else:
            joined.append(token)
    return joined


class CmdRun(TorchxCmdRun):
    """torchx's ``run`` with repeated ``--set`` accepted."""

    def run(self, args: argparse.Namespace) -> None:
        args.component_name_and_args = join_repeated(list(args.component_name_and_args))
        super().run(args)


def main(argv: list[str] | None = None) -> None:
    from torchx.cli.main import get_sub_cmds, run_main

    commands = get_sub_cmds()
    commands["run"] = CmdRun()
    run_main(commands, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
