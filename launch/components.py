"""torchx component for ``dlrm-scale train``: the same job spec on a laptop, Slurm or Kubernetes.

Examples::

    torchx run -s local_cwd launch/components.py:train -j 1x2 -- --config tiny_cpu --set=train.epochs=1
    torchx run -s slurm launch/components.py:train -j 8x8 --gpu 8 --max_restarts 3 -- --config mlperf_dcnv2
    torchx run -s kubernetes -cfg queue=default launch/components.py:train --image REGISTRY/dlrm-scale:TAG \\
        -j 4x8 --gpu 8 -- --config criteo_terabyte --set=train.out_dir=/mnt/shared/run1 --set=train.bf16=true

Repeat ``--set`` as with ``dlrm-scale``: the ``torchx run`` installed with this package (``launch/torchx_cmds.py``,
a ``torchx.cli.cmds`` entry point) joins each ``--set VALUE`` into ``--set=VALUE``, which torchx's own check of
repeated options accepts; with another torchx install write ``--set=key=value`` yourself.

Everything scheduler-specific (image, resources, mounts) is an argument; the command itself is torchx's own
``dist.ddp`` (torchrun with c10d rendezvous on the first replica, which each scheduler resolves) running
``python -m dlrm_scale.cli train``, plus ``--max_restarts`` so that torchrun restarts the workers after a rank
fails and the run resumes from its newest checkpoint (``train.resume``, on by default). ``max_retries`` is the
scheduler's own retry of the whole job, which resumes the same way. Either needs ``train.checkpoint_every_steps``
and an explicit ``train.out_dir`` that every node sees (an automatic run folder would be new at each attempt).
"""

from typing import Dict, List, Optional  # noqa: UP035 - torchx's linter only accepts typing generics

import torchx.specs as specs
from torchx.components import dist


def train(
    *script_args: str,
    image: str = "dlrm-scale:latest",
    j: str = "1x2",
    h: Optional[str] = None,  # noqa: UP045
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    max_restarts: int = 0,
    max_retries: int = 0,
    rdzv_port: int = 29500,
    env: Optional[Dict[str, str]] = None,  # noqa: UP006, UP045
    mounts: Optional[List[str]] = None,  # noqa: UP006, UP045
    name: str = "dlrm-scale/train",
) -> specs.AppDef:
    """Distributed ``dlrm-scale train`` under torchrun.

    Args:
        script_args: arguments of ``dlrm-scale train``, e.g. ``--config tiny_cpu --set train.max_steps=100``
        image: container image with dlrm_scale installed (docker, kubernetes); local_cwd and slurm use the
            current directory instead
        j: ``[{min_nnodes}:]{nnodes}x{nproc_per_node}``; one process per GPU on GPU nodes
        h: a registered named resource (instead of cpu/gpu/memMB)
        cpu: CPUs per node
        gpu: GPUs per node
        memMB: memory per node in MB
        max_restarts: torchrun restarts of all workers after a worker fails (resumes from the newest checkpoint)
        max_retries: scheduler retries of the whole job
        rdzv_port: rendezvous port on the first node (multi-node jobs)
        env: extra environment variables
        mounts: mounts, e.g. ``type=bind,src=/data,dst=/data`` (see the scheduler's documentation)
        name: job name, ``{experiment}/{run}``
    """
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
    if (max_restarts or max_retries) and not any("train.out_dir=" in arg or arg.startswith("--run-dir")
                                                  for arg in script_args):
        raise ValueError("max_restarts/max_retries need a run folder every attempt finds: "
                         "--set train.out_dir=/shared/runs/NAME")
    app = dist.ddp("train", *script_args, m="dlrm_scale.cli", image=image, name=name, h=h, cpu=cpu, gpu=gpu,
                   memMB=memMB, j=j, env=env, max_retries=max_retries, rdzv_port=rdzv_port, mounts=mounts)
    (role,) = app.roles
    command = role.args[-1]
    if not command.startswith("torchrun "):
        raise RuntimeError(f"unexpected torchx ddp command {command!r}; cannot add --max_restarts")
    role.args[-1] = command.replace("torchrun ", f"torchrun --max_restarts {max_restarts} ", 1)
    return app
