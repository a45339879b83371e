"""Atomic distributed checkpoints of the whole training state with ``torch.distributed.checkpoint`` (DCP).

Layout under ``<out_dir>/checkpoints``::

    ckpt-00000200/        complete checkpoint of step 200 (DCP files + .metadata)
    ckpt-00000400/
    ckpt-00000600.tmp/    a save in progress, or one interrupted by a crash: never read
    latest                "ckpt-00000400": the newest complete checkpoint, replaced atomically

A save writes into ``ckpt-<step>.tmp/`` (every rank writes its own shards), waits for all ranks, then rank 0
renames the directory to ``ckpt-<step>/`` and points ``latest`` at it. ``rename`` is atomic, so a crash at any
moment leaves either the new checkpoint complete or the previous one as the newest; the ``.tmp`` leftover is
removed by the next save. With several nodes ``out_dir`` must be a filesystem every node sees.

The state is one nested dict (see ``dlrm_scale.train.trainer``): the model's sharded state dict (each rank saves
only its shards; ShardedTensors), the optimizers' state (the fused embedding optimizer's state is sharded like
the tables), and small non-tensor entries -- LR schedule, trainer counters, and under ``rank<r>`` the loader
position and RNG state that only that rank writes and reads -- each stored as one opaque value (:func:`pack`).
Loading fills a state dict of the same structure in place: tensors are copied into, other values replaced.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

CHECKPOINT_RE = re.compile(r"^ckpt-(\d+)$")
LATEST = "latest"


def pack(value: Any) -> bytes:
    """One opaque checkpoint value for a nest of plain Python values (dicts of ints, lists, RNG states).

    Store packed values at the top level of the state dict. DCP flattens nested dicts into one key per leaf, but
    its pre-2.4 format kept a dict of non-tensors as one key;
    when a rank requests fewer keys than the checkpoint holds -- always the case when table-wise sharding leaves a
    rank without a shard of some tables -- DCP tries the old flattening and then looks for keys that were never
    saved. Values that are not dicts flatten the same both ways."""
    return pickle.dumps(value)


def unpack(value: bytes) -> Any:
    return pickle.loads(value)


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}"


def _is_complete(path: Path) -> bool:
    return CHECKPOINT_RE.match(path.name) is not None and (path / ".metadata").is_file()


class Checkpointer:
    """Saves and finds checkpoints under ``directory``; keeps the newest ``keep`` (0 keeps all).

    Every method that touches the files is collective: call it on all ranks of ``group``.
    """

    def __init__(self, directory: str | Path, *, keep: int = 2, group: dist.ProcessGroup | None = None) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.group = group

    def _rank(self) -> int:
        return dist.get_rank(self.group)

    def save(self, step: int, state: dict[str, Any], *, attachments: dict[str, bytes] | None = None) -> Path:
        """Writes ``state`` as the checkpoint of ``step`` and returns its directory. ``attachments`` are small
        files (e.g. the run's ``config.toml``) that rank 0 writes into the checkpoint beside the DCP files."""
        final = self.directory / checkpoint_name(step)
        staging = final.with_name(final.name + ".tmp")
        if self._rank() == 0:
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
        dist.barrier(group=self.group)
        dcp.save(state, checkpoint_id=str(staging), process_group=self.group)
        dist.barrier(group=self.group)
        if self._rank() == 0:
            for name, data in (attachments or {}).items():
                (staging / name).write_bytes(data)
            if final.exists():  # the same step saved again (e.g. the final save right after a periodic one)
                shutil.rmtree(final)
            os.replace(staging, final)
            self._write_latest(final.name)
            self._prune()
        dist.barrier(group=self.group)
        return final

    def _write_latest(self, name: str) -> None:
        pointer = self.directory / LATEST
        staging = pointer.with_name(LATEST + ".tmp")
        staging.write_text(name + "\n")
        os.replace(staging, pointer)

    def _prune(self) -> None:
        leftovers = [p for p in self.directory.glob("ckpt-*.tmp") if p.is_dir()]
        for path in leftovers:
            shutil.rmtree(path)
        if self.keep > 0:
            for path in self.complete()[: -self.keep]:
                shutil.rmtree(path)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if p.is_dir() and _is_complete(p)]
        return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names; the newest complete one if the pointer is missing or stale."""
        pointer = self.directory / LATEST
        if pointer.is_file():
            named = self.directory / pointer.read_text().strip()
            if _is_complete(named):
                return named
        found = self.complete()
        return found[-1] if found else None

    @staticmethod
    def stored_keys(path: str | Path) -> set[str]:
        """The flattened keys the checkpoint holds (``model.<fqn>``, ``trainer``, ``rank1``, ...)."""
        _require_complete(Path(path))
        return set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)

    def load(self, path: str | Path, state: dict[str, Any]) -> None:
        """Fills ``state`` in place from the checkpoint at ``path`` (only the keys ``state`` has are read)."""
        path = Path(path)
        _require_complete(path)
        dcp.load(state, checkpoint_id=str(path), process_group=self.group)


def _require_complete(path: Path) -> None:
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no .metadata)")
