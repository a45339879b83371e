"""The run folder: where a run's configuration, checkpoints and metrics live, and when a run may continue one.

A run folder holds ``config.toml`` (the resolved configuration, loadable by ``--config``), ``checkpoints/``
(each with its own copy of ``config.toml``), ``metrics.jsonl`` and logs; ``eval --run-dir`` and ``train --run-dir``
need nothing else. ``train.out_dir`` empty gives every run a new folder ``runs/<preset>-<timestamp>`` (and
``runs/latest`` points at the newest), so an example never continues another's checkpoints by accident; an
explicit folder with a checkpoint is resumed (``train.resume``) only when the configuration is the same in every
field that shapes the model, the sharding, the optimizers or the data order (:func:`check_resume`).

Example::

    check_resume(cfg, Path("runs/tiny_cpu-20261201-120000"))  # ResumeError: model.interaction.name 'dot' -> 'cat'
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dlrm_scale.config import Config, ConfigError, load_config

CONFIG_NAME = "config.toml"
RUNS_ROOT = Path("runs")
LATEST = "latest"

# Keys a resumed run may change: how long to train, how often to log/evaluate/checkpoint, how fast to read,
# where the data lives (the loader's fingerprint still checks its rows). Every other key shapes the model, the
# sharding, the optimizers or the data order.
RESUMABLE = frozenset({
    "data.path", "data.eval_split", "data.prefetch_batches", "data.num_workers", "data.pin_memory", "data.verify",
    "data.check_values", "data.synthetic_eval_rows",
    "train.eval_batch_size", "train.epochs", "train.max_steps", "train.eval_every_steps", "train.eval_max_batches",
    "train.pipeline", "train.bf16", "train.compile", "train.compile_backend", "train.out_dir",
    "train.checkpoint_every_steps", "train.keep_checkpoints", "train.resume", "train.log_every_steps",
    "train.tensorboard", "train.progress", "train.on_nonfinite", "train.doctor", "train.tf32",
})
# Keys that decide the model's tensors: a checkpoint only loads into the model these describe.
MODEL_PREFIXES = ("model.", "data.cardinalities", "data.num_dense", "data.multi_hot_sizes")


class ResumeError(ConfigError):
    """A run folder's checkpoint cannot be continued (or evaluated) with the configuration given."""


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"interaction": {"name": "dot"}}}`` -> ``{"model.interaction.name": "dot"}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(old: Config, new: Config, *, ignore=RESUMABLE, only: tuple[str, ...] = ()) -> list[str]:
    """``["model.interaction.name 'dot' -> 'cat'", ...]``: keys whose values differ (``only``: just these
    prefixes; ``ignore``: never these keys)."""
    before, after = flatten(old.to_dict()), flatten(new.to_dict())
    keys = sorted(set(before) | set(after))
    return [f"{key} {before.get(key, '(unset)')!r} -> {after.get(key, '(unset)')!r}" for key in keys
            if key not in ignore and (not only or key.startswith(only)) and before.get(key) != after.get(key)]


def saved_config(run_dir: Path, checkpoint: Path | None = None) -> Config | None:
    """The configuration a checkpoint was written with (its own ``config.toml``; else the folder's), or None for
    a folder without one."""
    for path in ([checkpoint / CONFIG_NAME] if checkpoint is not None else []) + [run_dir / CONFIG_NAME]:
        if path.is_file():
            return load_config(str(path))
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    from dlrm_scale.checkpoint import Checkpointer

    return Checkpointer(run_dir / "checkpoints").latest()


def check_resume(cfg: Config, run_dir: Path, *, world_size: int) -> Path | None:
    """The checkpoint a ``train`` into ``run_dir`` would resume from (None: it starts fresh), after checking that
    it can: same configuration outside :data:`RESUMABLE`, same world size. Reads only small files (config.toml,
    DCP's metadata), so a refused resume has touched nothing."""
    checkpoint = latest_checkpoint(run_dir) if cfg.train.resume else None
    if checkpoint is None:
        return None
    old = saved_config(run_dir, checkpoint)
    if old is not None:
        changed = differences(old, cfg)
        if changed:
            raise ResumeError(f"cannot resume {run_dir} ({checkpoint.name}) with another configuration: "
                              f"{'; '.join(changed)}. Start a new run (leave train.out_dir empty or name a new "
                              f"folder), or drop those --set to continue it")
    from dlrm_scale.checkpoint import Checkpointer

    ranks = {key for key in Checkpointer.stored_keys(checkpoint) if key.startswith("rank") and key[4:].isdigit()}
    if len(ranks) != world_size:
        raise ResumeError(f"{checkpoint} was written by {len(ranks)} ranks but this job has {world_size}: loader "
                          f"positions and RNG states are per rank, so resume on {len(ranks)} ranks (or start a new "
                          f"out_dir)")
    return checkpoint


def preset_name(config_arg: str) -> str:
    """``tiny_cpu`` -> ``tiny_cpu``; ``my/run.toml`` -> ``run``; ``runs/x/config.toml`` -> ``x``."""
    path = Path(config_arg)
    if path.name == CONFIG_NAME:
        return path.parent.name or "run"
    return path.stem or "run"


def create_run_dir(preset: str, *, root: Path = RUNS_ROOT, now: float | None = None) -> Path:
    """Creates ``root/<preset>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken) and points ``root/latest`` at
    it. Call on one rank and share the name (:func:`share_run_dir`)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = root / (f"{preset}-{stamp}" + (f"-{attempt}" if attempt > 1 else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        link = root / f".{LATEST}.{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(path.name)
        os.replace(link, root / LATEST)
        return path
    raise ConfigError(f"could not create a new run folder under {root}; set train.out_dir")


def share_run_dir(rank: int, choose) -> str:
    """``choose()`` on rank 0, its result broadcast to every rank of the default process group."""
    import torch.distributed as dist

    name = [str(choose()) if rank == 0 else None]
    dist.broadcast_object_list(name, src=0)
    return str(name[0])


def check_restarts_have_a_folder(cfg: Config) -> None:
    """A restarted attempt (torchrun ``--max-restarts``) must find the folder the first one wrote: with an
    automatic name it would start a new run instead of resuming."""
    if not cfg.train.out_dir and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0:
        raise ConfigError("torchrun --max-restarts needs an explicit run folder so a restart resumes it: "
                          "--set train.out_dir=runs/NAME")
