"""Launch real multi-process jobs from tests: ``torchrun --nproc_per_node=N`` on CPU with gloo, or ``torchx run``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(extra or {})}


def _run(cmd: list[str], *, env: dict[str, str], timeout: float, merge_output: bool) -> subprocess.CompletedProcess[str]:
    """Runs ``cmd`` in a session of its own, so a timeout kills the launcher's workers too, not only the launcher."""
    stderr = subprocess.STDOUT if merge_output else subprocess.PIPE
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
                          start_new_session=True) as popen:
        try:
            stdout, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, err = popen.communicate()
            raise AssertionError(f"timed out after {timeout} s: {' '.join(cmd)}\n--- stdout ---\n"
                                 f"{stdout[-4000:]}\n--- stderr ---\n{(err or '')[-6000:]}") from None
    return subprocess.CompletedProcess(cmd, popen.returncode, stdout, err or "")


def run_torchrun(args: list[str], *, nproc: int = 2, timeout: float = 300, extra_torchrun: list[str] | None = None,
                 env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs ``torchrun --nproc_per_node=nproc [extra] ARGS`` (ARGS: a script path or ``-m module`` + args).

    Output is captured; on failure (``check``) the assertion shows the tail of stdout/stderr.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *(extra_torchrun or []), *args]
    proc = _run(cmd, env=_env(env), timeout=timeout, merge_output=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout ---\n"
                             f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def torchx_command() -> list[str]:
    """``torchx`` with this package's ``run`` (repeated ``--set``): the installed binary once the package's
    ``torchx.cli.cmds`` entry point is installed, else the same command as a module."""
    from importlib.metadata import entry_points

    if any(ep.value == "launch.torchx_cmds:CmdRun" for ep in entry_points(group="torchx.cli.cmds")):
        return [str(BIN / "torchx")]
    return [sys.executable, "-m", "launch.torchx_cmds"]


def run_torchx(args: list[str], *, timeout: float = 240) -> str:
    """Runs ``torchx run ARGS`` (e.g. ``-s local_cwd launch/components.py:train -j 1x2 -- ...``) from the repo root;
    asserts it exits 0 and returns its combined output."""
    cmd = [*torchx_command(), "run", *args]
    proc = _run(cmd, env=_env(None), timeout=timeout, merge_output=True)
    assert proc.returncode == 0, f"torchx failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-5000:]}"
    return proc.stdout
