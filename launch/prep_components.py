"""torchx component for ``dlrm-scale prep criteo`` fanned out over machines: one replica per machine, each a rank.

Examples::

    torchx run -s local_cwd launch/prep_components.py:prep --replicas 2 --workers 1 -- \\
        --input raw/day_0 raw/day_1 raw/day_2 --out data/ --dataset terabyte --max-ind-range 20000
    torchx run -s slurm launch/prep_components.py:prep --replicas 8 --workers 32 --cpu 32 -- \\
        --input /shared/criteo/day_{0..23}.gz --out /shared/criteo_tb --dataset terabyte --encoding vocab

Replica ``i`` runs ``dlrm-scale prep criteo ARGS --rank i --world-size REPLICAS --workers WORKERS``: every
phase's tasks (chunks of the inputs, vocabulary columns) are dealt round-robin over the ranks, which meet at the
phase boundaries through result files in ``--out``. So ``--out`` and the inputs must be on a filesystem every
replica sees. Rank 0 writes the manifest last. A replica that fails can simply be rerun (``max_retries``): ranks
skip the tasks whose results exist.
"""

from typing import Dict, List, Optional  # noqa: UP035 - torchx's linter only accepts typing generics

import torchx.specs as specs


def prep(
    *script_args: str,
    image: str = "dlrm-scale:latest",
    replicas: int = 1,
    workers: int = 16,
    cpu: int = 16,
    memMB: int = 65536,
    h: Optional[str] = None,  # noqa: UP045
    max_retries: int = 0,
    env: Optional[Dict[str, str]] = None,  # noqa: UP006, UP045
    mounts: Optional[List[str]] = None,  # noqa: UP006, UP045
    name: str = "dlrm-scale-prep",
) -> specs.AppDef:
    """``dlrm-scale prep criteo`` on ``replicas`` machines sharing ``--out``.

    Args:
        script_args: arguments of ``dlrm-scale prep criteo`` (``--input ... --out ...`` and the rest), without
            ``--rank``, ``--world-size`` and ``--workers``, which the component sets
        image: container image with dlrm_scale installed (docker, kubernetes); local_cwd and slurm use the
            current directory instead
        replicas: number of machines (ranks)
        workers: worker processes per machine (one core each)
        cpu: CPUs per machine
        memMB: memory per machine in MB
        h: a registered named resource (instead of cpu/memMB)
        max_retries: scheduler retries of the job (a retry resumes: finished tasks are skipped)
        env: extra environment variables
        mounts: mounts, e.g. ``--mounts type=bind,src=/data,dst=/data`` on the command line
        name: job name
    """
    if replicas < 1 or workers < 1:
        raise ValueError(f"replicas and workers must be >= 1, got {replicas} and {workers}")
    reserved = sorted({"--rank", "--world-size", "--workers"} & {arg.split("=")[0] for arg in script_args})
    if reserved:
        raise ValueError(f"{', '.join(reserved)} are set by the component; remove them from the arguments")
    role = specs.Role(
        name="prep",
        image=image,
        entrypoint="python",
        args=["-m", "dlrm_scale.cli", "prep", "criteo", *script_args, "--rank", specs.macros.replica_id,
              "--world-size", str(replicas), "--workers", str(workers)],
        num_replicas=replicas,
        max_retries=max_retries,
        resource=specs.resource(cpu=cpu, memMB=memMB, h=h),
        env=dict(env or {}),
        mounts=specs.parse_mounts(mounts) if mounts else [],
    )
    return specs.AppDef(name=name, roles=[role])
