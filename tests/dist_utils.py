"""Launch real multi-process jobs from tests: ``torchrun --nproc_per_node=N`` on CPU with gloo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_torchrun(args: list[str], *, nproc: int = 2, timeout: float = 300, extra_torchrun: list[str] | None = None,
                 env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs ``torchrun --nproc_per_node=nproc [extra] ARGS`` (ARGS: a script path or ``-m module`` + args).

    Output is captured; on failure (``check``) the assertion shows the tail of stdout/stderr.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *(extra_torchrun or []), *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                **(env or {})}
    # A session of its own, so a timeout kills torchrun's workers too, not only torchrun.
    with subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as popen:
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, stderr = popen.communicate()
            raise AssertionError(f"torchrun timed out after {timeout} s: {' '.join(cmd)}\n--- stdout ---\n"
                                 f"{stdout[-4000:]}\n--- stderr ---\n{stderr[-6000:]}") from None
    proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout ---\n"
                             f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc
