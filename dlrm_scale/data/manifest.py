"""``manifest.json``: the contract between ``dlrm-scale prep`` (writer) and training (reader).

Preprocessing writes it last, atomically, after every shard is complete; training reads it to find the shards,
the table sizes and the conventions the data was prepared with, and refuses data whose conventions differ from
its config (:func:`check_compatible`), because a model trained on log(x+1) features and served log(x+3) ones, or
on hashed ids and served vocabulary ids, fails silently.

Layout of a prepared directory::

    DIR/manifest.json
    DIR/<split>/part-00000.parquet ...   columns: label (int8), I1..I13 (float32), C1..C26 (int64 or list<int64>)
    DIR/quarantine/...                   bad lines when --on-bad-line=skip

Shard paths in the manifest are relative to ``DIR``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
UNLABELED_SPLIT = "unlabeled"  # rows of an input file without labels (label -1): scored, never trained on
_HASH_BLOCK = 8 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256 as prep records it for every shard."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class ManifestError(ValueError):
    """The manifest is missing, malformed, or does not match the training config."""


@dataclass(kw_only=True)
class SourceFile:
    path: str
    bytes: int
    sha256: str


@dataclass(kw_only=True)
class Shard:
    path: str
    rows: int
    row_groups: int
    sha256: str


@dataclass(kw_only=True)
class Split:
    rows: int
    shards: list[Shard] = field(default_factory=list)


@dataclass(kw_only=True)
class Manifest:
    """Everything training must know about a prepared dataset.

    ``cardinalities[i]`` is the exclusive upper bound of the ids in column ``sparse_columns[i]``: the smallest
    embedding table that can hold them. ``multi_hot`` says the sparse columns are ``list<int64>``.
    """

    schema_version: int = SCHEMA_VERSION
    dataset: str
    encoding: str
    max_ind_range: int
    min_frequency: int
    dense_transform: str
    label_column: str = "label"
    dense_columns: list[str]
    sparse_columns: list[str]
    cardinalities: list[int]
    multi_hot: bool = False
    splits: dict[str, Split] = field(default_factory=dict)
    sources: list[SourceFile] = field(default_factory=list)
    bad_lines_skipped: int = 0
    quarantine: list[str] = field(default_factory=list)
    created_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{where}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ManifestError(f"{where}: unknown keys {unknown}")
        try:
            values = dict(data)
            values["splits"] = {
                name: Split(rows=s["rows"], shards=[Shard(**sh) for sh in s["shards"]])
                for name, s in data.get("splits", {}).items()
            }
            values["sources"] = [SourceFile(**s) for s in data.get("sources", [])]
            manifest = cls(**values)
        except (TypeError, KeyError) as exc:
            raise ManifestError(f"{where}: malformed ({exc})") from exc
        if len(manifest.cardinalities) != len(manifest.sparse_columns):
            raise ManifestError(
                f"{where}: {len(manifest.cardinalities)} cardinalities for {len(manifest.sparse_columns)} sparse columns"
            )
        for name, split in manifest.splits.items():
            total = sum(s.rows for s in split.shards)
            if total != split.rows:
                raise ManifestError(f"{where}: split {name!r} says {split.rows} rows but its shards hold {total}")
        return manifest

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Writes ``DIR/manifest.json`` atomically (temp file + rename), so a crash never leaves half a manifest."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / MANIFEST_NAME
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".manifest.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{path}: no manifest; run `dlrm-scale prep` first (or check data.path)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, where=str(path))

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise ManifestError(f"split {name!r} not in manifest; available: {', '.join(sorted(self.splits))}")
        return self.splits[name]


# data config key -> the `dlrm-scale prep criteo` flag that sets the same convention
PREP_FLAGS = {"encoding": "--encoding", "dense_transform": "--dense-transform", "max_ind_range": "--max-ind-range",
              "min_frequency": "--min-frequency"}


def _convention(key: str, data_value: Any, config_value: Any) -> str:
    """One difference, both values and both fixes: train with the data's value, or prepare with the config's."""
    return (f"{key}: data has {data_value!r}, config has {config_value!r} (train with --set data.{key}={data_value}, "
            f"or prepare again with {PREP_FLAGS[key]} {config_value} or --preset)")


def check_compatible(manifest: Manifest, data_cfg: Any) -> list[int]:
    """Raises :class:`ManifestError` listing, on one line, every difference between the manifest and
    ``data_cfg`` (a :class:`dlrm_scale.config.DataConfig`), each with both values and the ``--set`` or prep flag
    that fixes it; returns the embedding table sizes to use.

    Table sizes are ``data_cfg.cardinalities`` when given (each must hold the manifest's ids), else the manifest's.
    """
    diffs = []
    for key in ("encoding", "dense_transform"):
        if getattr(manifest, key) != getattr(data_cfg, key):
            diffs.append(_convention(key, getattr(manifest, key), getattr(data_cfg, key)))
    if manifest.encoding == "hash" or data_cfg.max_ind_range:
        if manifest.max_ind_range != data_cfg.max_ind_range:
            diffs.append(_convention("max_ind_range", manifest.max_ind_range, data_cfg.max_ind_range))
    if manifest.encoding == "vocab" and manifest.min_frequency != data_cfg.min_frequency:
        diffs.append(_convention("min_frequency", manifest.min_frequency, data_cfg.min_frequency))
    if len(manifest.dense_columns) != data_cfg.num_dense:
        diffs.append(f"num_dense: data has {len(manifest.dense_columns)}, config has {data_cfg.num_dense} "
                     f"(--set data.num_dense={len(manifest.dense_columns)})")
    if bool(data_cfg.multi_hot_sizes) and not manifest.multi_hot:
        diffs.append("multi_hot: config sets data.multi_hot_sizes but the data is one-hot "
                     "(--set data.multi_hot_sizes=[])")
    for key in ("train_split", "eval_split"):
        split_name = getattr(data_cfg, key)
        if split_name and split_name not in manifest.splits:
            diffs.append(f"split {split_name!r}: not in data (has {', '.join(sorted(manifest.splits))}; "
                         f"--set data.{key}=NAME)")
    tables = list(manifest.cardinalities)
    if data_cfg.cardinalities:
        if len(data_cfg.cardinalities) != len(manifest.cardinalities):
            diffs.append(
                f"cardinalities: data has {len(manifest.cardinalities)} sparse features, config has "
                f"{len(data_cfg.cardinalities)} (--set data.cardinalities=[] takes the manifest's)"
            )
        else:
            small = [
                f"{col} ({cfg} < {have})"
                for col, cfg, have in zip(manifest.sparse_columns, data_cfg.cardinalities, manifest.cardinalities)
                if cfg < have
            ]
            if small:
                diffs.append("cardinalities: config tables too small for the data's ids: " + ", ".join(small)
                             + " (--set data.cardinalities=[] takes the manifest's)")
            tables = list(data_cfg.cardinalities)
    if diffs:
        where = f"data at {data_cfg.path}" if getattr(data_cfg, "path", "") else "the data"
        raise ManifestError(f"{where} does not match the config: " + "; ".join(diffs))
    return tables
