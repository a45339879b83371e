"""The model directory ``dlrm-scale export`` writes and ``dlrm-scale predict`` reads.

Layout::

    MODEL_DIR/model.pt        TorchScript archive (code + weights): load with torch.jit.load after `import torchrec`
    MODEL_DIR/manifest.json   what the model expects and was made from (JSON; sha256 of every file)
    MODEL_DIR/vocab/C1.npy …  vocab encoding only: each column's values in id order (id = index + 1), int64

The manifest is data, never code: ``format_version``, ``quantize``, the run's ``model`` config, ``dense_features``
and ``sparse_features`` in input order, ``cardinalities``, the data contract (``encoding``, ``max_ind_range``,
``min_frequency``, ``dense_transform``), ``inputs`` (the methods and their tensors), the checkpoint it came from,
the versions of the stack that wrote it, and ``files`` (name -> sha256). :func:`load_model` checks all of it, so a
truncated, edited or mismatched directory is one :class:`ModelDirError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dlrm_scale.data.manifest import sha256_file

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
VOCAB_DIR = "vocab"
REQUIRED_KEYS = ("format_version", "quantize", "model", "dense_features", "sparse_features", "cardinalities",
                 "encoding", "max_ind_range", "min_frequency", "dense_transform", "embedding_dim", "files")


class ModelDirError(ValueError):
    """A model directory that is missing, corrupt, or does not match its manifest."""


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Writes ``manifest.json`` last and atomically: a directory without it is an export that did not finish."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".manifest.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    target = directory / MANIFEST_FILE
    os.replace(tmp, target)
    return target


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked manifest of a model directory (files present with their recorded sha256)."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ModelDirError(f"{directory}: no {MANIFEST_FILE}; not a model directory (make one with "
                            "`dlrm-scale export`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: not valid JSON ({exc}); export the model again") from exc
    if not isinstance(manifest, dict):
        raise ModelDirError(f"{path}: expected a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{path}: format_version {manifest.get('format_version')!r} is not supported "
                            f"(expected {FORMAT_VERSION}); export the model again with this version")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ModelDirError(f"{path}: missing keys {missing}; export the model again")
    if len(manifest["cardinalities"]) != len(manifest["sparse_features"]):
        raise ModelDirError(f"{path}: {len(manifest['cardinalities'])} cardinalities for "
                            f"{len(manifest['sparse_features'])} sparse features")
    for name, digest in manifest["files"].items():
        file = directory / name
        if not file.is_file():
            raise ModelDirError(f"{file}: missing (listed in {MANIFEST_FILE}); export the model again")
        if sha256_file(file) != digest:
            raise ModelDirError(f"{file}: sha256 differs from {MANIFEST_FILE} (corrupt or replaced); export the "
                                "model again")
    if MODEL_FILE not in manifest["files"]:
        raise ModelDirError(f"{path}: lists no {MODEL_FILE}")
    return manifest


def load_model(directory: str | os.PathLike[str]):
    """``(scripted model, manifest)`` of a checked model directory, on the CPU, in eval mode.

    Checks that the model's own constants (feature counts, table sizes, encoding) agree with the manifest, so a
    ``model.pt`` copied in from another export is refused rather than fed the wrong inputs."""
    import torch
    import torchrec  # noqa: F401  (registers fbgemm's operators before the archive is read)

    manifest = read_manifest(directory)
    path = Path(directory) / MODEL_FILE
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelDirError(f"{path}: not a loadable TorchScript model ({first})") from exc
    found = {"sparse_features": list(model.sparse_names), "dense_features": int(model.num_dense),
             "cardinalities": [int(c) for c in model.cardinalities.tolist()], "encoding": str(model.encoding),
             "dense_transform": str(model.dense_transform)}
    expected = {"sparse_features": manifest["sparse_features"], "dense_features": len(manifest["dense_features"]),
                "cardinalities": manifest["cardinalities"], "encoding": manifest["encoding"],
                "dense_transform": manifest["dense_transform"]}
    differ = [key for key in found if found[key] != expected[key]]
    if differ:
        raise ModelDirError(f"{path}: does not match {MANIFEST_FILE} ({', '.join(differ)}); export the model again")
    model.eval()
    return model, manifest
