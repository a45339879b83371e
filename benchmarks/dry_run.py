"""Checks the stage commands of ``gpu_check.sh`` without running them: each script's imports and its exact
argument list (its own ``argparse`` parser, stopped right after a successful parse), pytest's selection
(``--collect-only``, which must find tests), torchrun's options, other programs' presence. So a typo in a stage
cannot first show up on the GPU machine. All commands are checked in this one process, so the imports they share
(torch, torchrec) are paid once.

Usage: ``python benchmarks/dry_run.py COMMANDS_FILE``, one ``NAME<TAB>COMMAND`` line per stage (COMMAND
shell-quoted, its first word the Python interpreter or a program), as ``gpu_check.sh --dry-run`` writes it. A
command is ``SCRIPT.py ARGS…``, ``-m pytest ARGS…``, ``-m torch.distributed.run OPTIONS SCRIPT.py ARGS…`` or
``-c CODE`` (run as is: the version report). Exit status 0 when every command would start.
"""

from __future__ import annotations

import argparse
import runpy
import shlex
import shutil
import subprocess
import sys
import traceback
from pathlib import Path


class _Parsed(Exception):
    """Raised by the patched ``parse_args`` once the script's arguments parsed."""


def check_script(script: str, args: list[str]) -> None:
    """Imports ``script`` as ``__main__`` and lets it parse ``args``; stops it there (SystemExit on bad ones)."""
    path = Path(script)
    if not path.is_file():
        raise SystemExit(f"dry run: {script} does not exist")
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.resolve().parent.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    except _Parsed:
        return
    finally:
        argparse.ArgumentParser.parse_args = original
    raise SystemExit(f"dry run: {script} finished without parsing its arguments with argparse")


def check(argv: list[str]) -> None:
    """Raises (or exits non-zero) when the Python command ``argv`` (without the interpreter) would not start."""
    if argv[:1] == ["-c"]:
        if subprocess.run([sys.executable, *argv]).returncode != 0:
            raise SystemExit(1)
    elif argv[:2] == ["-m", "pytest"]:
        import pytest

        status = pytest.main([*argv[2:], "--collect-only", "-q"])
        if status != 0:  # 5: no test selected, a typo in the selection
            raise SystemExit(f"pytest collection ended with status {int(status)}")
    elif argv[:2] == ["-m", "torch.distributed.run"]:
        from torch.distributed.run import get_args_parser

        options = get_args_parser().parse_args(argv[2:])
        check_script(options.training_script, options.training_script_args)
    else:
        check_script(argv[0], argv[1:])


def main(argv: list[str]) -> int:
    failed = []
    for line in Path(argv[0]).read_text().splitlines():
        name, command = line.split("\t", 1)
        words = shlex.split(command)
        print(f"== {name}: {command}", flush=True)
        try:
            if Path(words[0]).name.startswith("python") or words[0] == sys.executable:
                check(words[1:])
            elif shutil.which(words[0]) is None:
                raise SystemExit(f"{words[0]}: not found")
        except SystemExit as stop:
            if stop.code not in (None, 0):
                failed.append(name)
                print(f"FAILED {name}: {stop.code}", flush=True)
        except Exception:  # any import or setup error is the stage's failure, reported
            failed.append(name)
            print(f"FAILED {name}:\n{traceback.format_exc()}", flush=True)
        else:
            print(f"ok {name}", flush=True)
    print(f"dry run: {'every stage would start' if not failed else 'would fail: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
