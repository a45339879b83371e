"""What a checkpoint holds on disk, read as data and never as code.

Three pieces, each closing one way a crafted or damaged checkpoint could run code or load garbage:

- :func:`pack` / :func:`unpack`: the trainer's small non-tensor values (counters, LR schedule, loader position,
  RNG states) as JSON in a ``uint8`` tensor. DCP would otherwise store them with ``torch.save`` and read them back
  with ``torch.load(weights_only=False)``, i.e. pickle.
- :class:`SafeReader`: DCP's ``.metadata`` is a pickle. The reader unpickles it with an allow-list of exactly the
  classes DCP writes there (``torch.distributed.checkpoint.metadata``'s dataclasses, ``_StorageInfo``, ``torch.Size``,
  dtypes, layouts, paths), found by listing the globals referenced by checkpoints of a row-wise sharded model with
  its fused optimizer; anything else (``os.system``, ``builtins.eval``...) is refused before it is looked up.
  :class:`SafeLoadPlanner` reads any remaining non-tensor entry with ``torch.load(weights_only=True)``.
- a per-checkpoint ``manifest.json`` of every file's size and sha256, written last (after every rank's files and
  the attachments) and atomically; :func:`verify_files` checks it before anything else is read. The manifest
  catches corruption and partial overwrites (a tensor edited in place, a truncated copy); it does not stop someone
  who rewrites the manifest too -- what stops code execution is that nothing here unpickles arbitrary classes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from dlrm_scale.data.manifest import sha256_file  # hashlib releases the GIL: files hash in parallel threads

MANIFEST = "manifest.json"
METADATA = ".metadata"
MANIFEST_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read: the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------- pack / unpack
def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        return {"$tensor": {"dtype": str(data.dtype).removeprefix("torch."), "shape": list(data.shape),
                            "data": base64.b64encode(raw).decode("ascii")}}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"pack: numpy arrays of dtype {value.dtype} are not stored")
        return {"$ndarray": {"dtype": value.dtype.str, "shape": list(value.shape),
                             "data": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")}}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v) for k, v in value.items()}
        return {"$dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"pack: cannot store a {type(value).__name__} (only JSON values, tuples, tensors, arrays)")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, body), = value.items()
        if tag == "$tuple":
            return tuple(_decode(v) for v in body)
        if tag == "$dict":
            return {_decode(k): _decode(v) for k, v in body}
        if tag == "$tensor":
            dtype = getattr(torch, body["dtype"], None)
            if not isinstance(dtype, torch.dtype):
                raise CheckpointError(f"packed value: unknown tensor dtype {body['dtype']!r}")
            raw = bytearray(base64.b64decode(body["data"]))
            flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            return flat.view(dtype).reshape(body["shape"]).clone()
        if tag == "$ndarray":
            dtype = np.dtype(body["dtype"])
            if dtype.kind not in "biuf":
                raise CheckpointError(f"packed value: numpy dtype {dtype} is not allowed")
            return np.frombuffer(base64.b64decode(body["data"]), dtype=dtype).reshape(body["shape"]).copy()
    return {k: _decode(v) for k, v in value.items()}


def pack(value: Any) -> torch.Tensor:
    """``(n,) uint8`` tensor holding ``value`` (dicts, lists, tuples, numbers, strings, tensors, numeric numpy
    arrays: enough for LR-schedule state, counters and torch/numpy/python/CUDA RNG states) as JSON.

    Store packed values at the top level of the state dict: DCP flattens nested dicts into one key per leaf, and
    :meth:`~dlrm_scale.checkpoint.Checkpointer.load` resizes a top-level placeholder to the stored length (the
    JSON of step 10 and of step 10000 differ in length). Numpy scalars come back as Python numbers."""
    text = json.dumps(_encode(value), separators=(",", ":"))
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def unpack(value: torch.Tensor) -> Any:
    """The value :func:`pack` stored; raises :class:`CheckpointError` when the bytes are not a packed value."""
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
        raise CheckpointError(f"not a packed checkpoint value: {type(value).__name__}")
    try:
        return _decode(json.loads(value.numpy().tobytes().decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"a packed checkpoint value is damaged ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------------------------- DCP metadata
def _allowed_global(module: str, name: str) -> Any | None:
    """The object ``module.name`` if DCP's metadata pickle may reference it, else None."""
    if module == "torch.distributed.checkpoint.metadata":
        import torch.distributed.checkpoint.metadata as dcp_metadata

        found = getattr(dcp_metadata, name, None)
        return found if isinstance(found, type) and found.__module__ == module else None
    if (module, name) == ("torch.distributed.checkpoint.filesystem", "_StorageInfo"):
        from torch.distributed.checkpoint.filesystem import _StorageInfo

        return _StorageInfo
    if (module, name) == ("torch", "Size"):
        return torch.Size
    if module == "torch":
        found = getattr(torch, name, None)
        return found if isinstance(found, (torch.dtype, torch.layout, torch.memory_format)) else None
    if (module, name) == ("torch.serialization", "_get_layout"):  # maps a layout's name to torch.<layout>
        return torch.serialization._get_layout
    if module == "pathlib" and name in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"):
        import pathlib

        return getattr(pathlib, name)
    return None


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, where: str) -> None:
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_global(module, name)
        if found is None:
            raise CheckpointError(f"{self.where}: refers to {module}.{name}, which is not part of DCP's metadata; "
                                  f"refusing to load it (a checkpoint is data, never code)")
        return found


def read_dcp_metadata(path: str | os.PathLike[str]) -> Any:
    """DCP's ``Metadata`` from the file ``path``, unpickled with the allow-list above."""
    from torch.distributed.checkpoint.metadata import Metadata

    with open(path, "rb") as stream:
        try:
            metadata = _MetadataUnpickler(stream, str(path)).load()
        except CheckpointError:
            raise
        except Exception as exc:  # a damaged pickle raises any of a dozen types
            raise CheckpointError(f"{path}: not readable DCP metadata ({type(exc).__name__}: {exc})") from exc
    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"{path}: holds a {type(metadata).__name__}, not DCP metadata")
    return metadata


class SafeReader(FileSystemReader):
    """``FileSystemReader`` whose ``read_metadata`` goes through :func:`read_dcp_metadata`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        from torch.distributed.checkpoint.metadata import StorageMeta

        rank = kwargs.get("rank")
        name = METADATA if rank is None else f"__{rank}{METADATA}"
        metadata = read_dcp_metadata(Path(self.path) / name)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        if hasattr(self, "load_id"):
            metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """Non-tensor entries (an optimizer's ``lr`` floats) are read with ``torch.load(weights_only=True)``; the
    rest is ``DefaultLoadPlanner``, which reads them with ``weights_only=False``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        from torch.distributed.checkpoint._traverse import set_element

        fqn = read_item.dest_index.fqn
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL (\S+)", str(exc))
            what = f"refers to {found.group(1)}" if found else "is not plain data"
            raise CheckpointError(f"checkpoint entry {fqn!r} {what}; refusing to load it (a checkpoint is data, "
                                  f"never code)") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], loaded)
        else:
            self.state_dict[fqn] = loaded


# ---------------------------------------------------------------------------------------------- manifest
def _parallel(function: Callable[[Path], Any], paths: list[Path]) -> list[Any]:
    if len(paths) <= 1:
        return [function(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(function, paths))


def write_manifest(directory: Path, *, step: int, finite: bool) -> Path:
    """Hashes every file in ``directory`` and writes ``manifest.json`` atomically (temp file + rename)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    digests = _parallel(sha256_file, files)
    record = {"format": MANIFEST_FORMAT, "step": step, "finite": finite,
              "files": {p.name: {"bytes": p.stat().st_size, "sha256": d} for p, d in zip(files, digests)}}
    staging = directory / (MANIFEST + ".tmp")
    with open(staging, "w") as stream:
        json.dump(record, stream, indent=1)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(staging, directory / MANIFEST)
    return directory / MANIFEST


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}, so it is not a complete checkpoint of this version "
                              "(an interrupted save, or written before checksums); use another checkpoint")
    try:
        record = json.loads(path.read_text())
        files = record["files"]
        ok = record.get("format") == MANIFEST_FORMAT and isinstance(files, dict) and all(
            isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")
            and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)
            for name, entry in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: damaged ({type(exc).__name__}: {exc})") from exc
    if not ok:
        raise CheckpointError(f"{path}: not a checkpoint manifest of format {MANIFEST_FORMAT}")
    return record


def check_file(directory: Path, name: str, entry: dict[str, Any]) -> str | None:
    """Why ``directory/name`` does not match its manifest entry (None when it does)."""
    path = directory / name
    if path.is_symlink():
        return "is a symbolic link; a checkpoint holds its own files"
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"has {size} bytes, the manifest says {entry['bytes']}"
    if sha256_file(path) != entry["sha256"]:
        return "does not match its sha256 in the manifest"
    return None


def verify_files(directory: Path, names: list[str], record: dict[str, Any]) -> tuple[str, str] | None:
    """The first of ``names`` (in order) that fails :func:`check_file`, with the reason; files hash in parallel."""
    unknown = [name for name in names if name not in record["files"]]
    if unknown:
        return unknown[0], f"is not listed in {MANIFEST}"
    reasons = _parallel(lambda p: check_file(directory, p.name, record["files"][p.name]),
                        [directory / name for name in names])
    return next(((name, why) for name, why in zip(names, reasons) if why is not None), None)


def mismatch_error(directory: Path, name: str, reason: str) -> CheckpointError:
    return CheckpointError(f"{directory / name} {reason}: the checkpoint was damaged or changed after it was "
                           f"written; refusing to load it (resume from an older checkpoint, or delete this one)")
