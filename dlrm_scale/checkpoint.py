"""Atomic, verified distributed checkpoints of the whole training state with ``torch.distributed.checkpoint`` (DCP).

Layout under ``<out_dir>/checkpoints``::

    ckpt-00000200/        complete checkpoint of step 200: DCP files, .metadata, attachments, manifest.json
    ckpt-00000400/
    ckpt-00000600.tmp/    a save in progress, or one interrupted by a crash: never read
    latest                "ckpt-00000400": the newest complete checkpoint, replaced atomically

A save writes into ``ckpt-<step>.tmp/`` (every rank writes its own shards), waits for all ranks, then rank 0
writes the attachments, hashes every file into ``manifest.json`` (last, atomically), renames the directory to
``ckpt-<step>/`` and points ``latest`` at it. ``rename`` is atomic, so a crash at any moment leaves either the new
checkpoint complete or the previous one as the newest; the ``.tmp`` leftover is removed by the next save. With
several nodes ``out_dir`` must be a filesystem every node sees.

Reading trusts nothing (see :mod:`dlrm_scale.checkpoint_io`): ``latest`` may only name a ``ckpt-<step>`` of its own
directory; a load first checks every file against the manifest (the ranks share the hashing) and then reads
DCP's metadata through an allow-list unpickler; the trainer's own values are JSON (:func:`pack`).

The state is one nested dict (see ``dlrm_scale.train.trainer``): the model's sharded state dict (each rank saves
only its shards; ShardedTensors), the optimizers' state (the fused embedding optimizer's state is sharded like
the tables), and small non-tensor entries -- LR schedule, trainer counters, and under ``rank<r>`` the loader
position and RNG state that only that rank writes and reads -- each stored as one packed value (:func:`pack`).
Loading fills a state dict of the same structure in place: tensors are copied into, packed values replaced.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from dlrm_scale.checkpoint_io import (
    MANIFEST,
    METADATA,
    CheckpointError,
    SafeLoadPlanner,
    SafeReader,
    mismatch_error,
    pack,
    read_dcp_metadata,
    read_manifest,
    unpack,
    verify_files,
    write_manifest,
)

__all__ = ["Checkpointer", "CheckpointError", "checkpoint_name", "pack", "unpack"]

CHECKPOINT_RE = re.compile(r"^ckpt-(\d+)$")
LATEST = "latest"
_MAX_PACKED_BYTES = 1 << 26  # counters, schedule, loader position, RNG states: a few tens of kB


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}"


def _is_complete(path: Path) -> bool:
    return (CHECKPOINT_RE.match(path.name) is not None and path.is_dir() and not path.is_symlink()
            and (path / METADATA).is_file() and (path / MANIFEST).is_file())


def all_finite(state: Any) -> bool:
    """Whether every floating-point value this rank holds in ``state`` is finite (ShardedTensors/DTensors:
    the local shards). One read of the tensors, far cheaper than writing them."""
    if isinstance(state, dict):
        return all(all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(all_finite(v) for v in state)
    if hasattr(state, "local_shards"):  # ShardedTensor
        return all(all_finite(shard.tensor) for shard in state.local_shards())
    if hasattr(state, "to_local"):  # DTensor
        return all_finite(state.to_local())
    if isinstance(state, torch.Tensor):
        if not state.is_floating_point() or state.numel() == 0:
            return True
        # a NaN or inf makes the sum non-finite (about 10 GB/s on one core, 40x faster than isfinite().all());
        # only a sum that overflowed on finite values needs the element-wise test
        total = state.sum(dtype=torch.float32) if state.element_size() < 4 else state.sum()
        return bool(torch.isfinite(total)) or bool(torch.isfinite(state).all())
    if isinstance(state, float):
        return state == state and abs(state) != float("inf")
    return True


class Checkpointer:
    """Saves and finds checkpoints under ``directory``; keeps the newest ``keep`` (0 keeps all) and, whatever
    ``keep`` says, the newest checkpoint whose values were all finite when saved.

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
        files (e.g. the run's ``config.toml``) that rank 0 writes into the checkpoint beside the DCP files; the
        manifest covers them too."""
        final = self.directory / checkpoint_name(step)
        staging = final.with_name(final.name + ".tmp")
        if self._rank() == 0:
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
        finite = _min_over_ranks(int(all_finite(state)), self.group)
        dist.barrier(group=self.group)
        dcp.save(state, checkpoint_id=str(staging), process_group=self.group)
        dist.barrier(group=self.group)
        if self._rank() == 0:
            for name, data in (attachments or {}).items():
                if name != Path(name).name or name in (MANIFEST, METADATA, "", ".", ".."):
                    raise ValueError(f"attachment name {name!r} must be a plain file name")
                (staging / name).write_bytes(data)
            write_manifest(staging, step=step, finite=bool(finite))
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
        if self.keep <= 0:
            return
        complete = self.complete()
        finite = [p for p in complete if _saved_finite(p)]
        for path in complete[: -self.keep]:
            if not finite or path != finite[-1]:
                shutil.rmtree(path)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _is_complete(p)]
        return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names; the newest complete one if the pointer is missing or stale. A pointer
        that names anything but a ``ckpt-<step>`` of this directory is refused."""
        pointer = self.directory / LATEST
        if pointer.is_file():
            name = pointer.read_text().strip()
            if not CHECKPOINT_RE.match(name):
                raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint of {self.directory} "
                                      f"(ckpt-<step>); delete the pointer to use the newest complete checkpoint")
            named = self.directory / name
            if _is_complete(named):
                return named
        found = self.complete()
        return found[-1] if found else None

    @staticmethod
    def stored_keys(path: str | Path) -> set[str]:
        """The flattened keys the checkpoint holds (``model.<fqn>``, ``trainer``, ``rank1``, ...). Checks the
        metadata file against the manifest first; reading it runs no code."""
        path = Path(path)
        record = _require_complete(path)
        failure = verify_files(path, [METADATA], record)
        if failure is not None:
            raise mismatch_error(path, *failure)
        return set(read_dcp_metadata(path / METADATA).state_dict_metadata)

    def verify(self, path: str | Path) -> None:
        """Checks every file of the checkpoint at ``path`` against its manifest (size and sha256), each rank of
        the group hashing its share of the files; every rank raises the same :class:`CheckpointError` naming the
        first bad file. Collective."""
        path = Path(path)
        record = _require_complete(path)
        names = sorted(record["files"])
        rank, world = (dist.get_rank(self.group), dist.get_world_size(self.group)) if dist.is_initialized() else (0, 1)
        failure = verify_files(path, names[rank::world], record)
        first = len(names) if failure is None else names.index(failure[0])
        if world > 1:
            first = _min_over_ranks(first, self.group)
        if first < len(names):
            name = names[first]
            reason = failure[1] if failure is not None and failure[0] == name else "does not match the manifest"
            raise mismatch_error(path, name, reason)

    def load(self, path: str | Path, state: dict[str, Any]) -> None:
        """Fills ``state`` in place from the checkpoint at ``path`` (only the keys ``state`` has are read), after
        :meth:`verify`. Top-level packed values (``pack(...)`` placeholders) are replaced by the stored ones."""
        path = Path(path)
        self.verify(path)
        stored = read_dcp_metadata(path / METADATA).state_dict_metadata
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1 and key in stored:
                size = getattr(stored[key], "size", None)
                if size is None or len(size) != 1:
                    raise CheckpointError(f"{path}: entry {key!r} is not a packed value (written by an older "
                                          f"version that pickled it); this version cannot load it safely")
                if size[0] > _MAX_PACKED_BYTES:
                    raise CheckpointError(f"{path}: packed entry {key!r} claims {size[0]} bytes; packed values "
                                          f"are small (at most {_MAX_PACKED_BYTES})")
                state[key] = torch.empty(size, dtype=torch.uint8)
        try:
            dcp.load(state, storage_reader=SafeReader(str(path)), planner=SafeLoadPlanner(),
                     process_group=self.group)
        except CheckpointException as exc:  # DCP gathers every rank's failure into one multi-line exception
            raise _one_line(path, exc) from None


def _one_line(path: Path, exc: CheckpointException) -> CheckpointError:
    failures = [pair[0] if isinstance(pair, tuple) else pair for _, pair in sorted(exc.failures.items())]
    ours = [f for f in failures if isinstance(f, CheckpointError)]
    if ours:
        return ours[0]
    first = failures[0] if failures else exc
    text = str(first).strip().splitlines()[0] if str(first).strip() else ""
    return CheckpointError(f"{path}: cannot be loaded into this model ({type(first).__name__}: {text})")


def _min_over_ranks(value: int, group: dist.ProcessGroup | None) -> int:
    """The smallest ``value`` of all ranks (on the GPU when the group is NCCL, which reduces only CUDA tensors)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=group)
    return int(tensor.item())


def _saved_finite(path: Path) -> bool:
    try:
        return read_manifest(path).get("finite") is True
    except CheckpointError:
        return False


def _require_complete(path: Path) -> dict[str, Any]:
    if not (path / METADATA).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {METADATA}); pass a ckpt-<step> directory")
    return read_manifest(path)
