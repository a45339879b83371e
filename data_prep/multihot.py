"""MLPerf DLRMv2's synthetic multi-hot ids, exactly: lookup tables generated once, then one-hot shards expanded.

The reference (facebookresearch/dlrm ``torchrec_dlrm/multi_hot.py`` + ``scripts/
materialize_synthetic_multihot_dataset.py``) seeds NumPy's legacy global generator once, then builds, table by
table, a ``(rows, size)`` lookup table whose first column is the row's own id and whose other ``size - 1`` columns
are ``randint(0, rows, (rows, size - 1))`` (``uniform``) or ``pareto(a=0.25, ...).astype(int32) % rows``
(``pareto``); a row's multi-hot ids in feature f are row ``id % rows_f`` of table f, as int32.

:func:`generate_tables` draws the same numbers from one ``RandomState(seed)`` in blocks of rows (the legacy
generator fills arrays element by element in C order, so blocks give the values one call gives), writing each
table to ``OUT/multihot_tables/C<f>.npy`` as it goes: memory is one block, not the ~23 GB of int32 the full
MLPerf tables take. Workers then memory-map the tables (one copy in the page cache for all of them) and expand
each one-hot shard into a shard whose ``C<f>`` holds ``size_f`` int32 ids per row (the layout is described in
:mod:`dlrm_scale.data.multihot`), one task per shard, so the work splits over processes (``--workers``) and
machines (``--rank``/``--world-size``) as prep's does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.errors import PrepError
from data_prep.execute import run_tasks
from data_prep.shards import sha256_file
from data_prep.state import State, read_json, wait_for, write_json
from dlrm_scale.data.manifest import MANIFEST_NAME, Manifest, Split
from dlrm_scale.data.multihot import hugepage_empty, load_tables

MLPERF_SIZES = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]
MLPERF_NUM_EMBEDDINGS = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209,
                         11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36]
DISTRIBUTIONS = ("uniform", "pareto")
TABLES_DIR = "multihot_tables"
_PARETO_A = 0.25
_BLOCK_IDS = 1 << 22  # drawn at once: 32 MB of int64 draws


def table_path(directory: Path, column: str) -> Path:
    return directory / f"{column}.npy"


def _draw(rng: np.random.RandomState, distribution: str, rows: int, shape: tuple[int, int]) -> np.ndarray:
    """The reference's draw for a table of ``rows`` rows, ``shape`` at a time (int64 or int32, all < rows)."""
    if distribution == "uniform":
        return rng.randint(0, rows, size=shape)
    with np.errstate(invalid="ignore"):  # draws beyond int32 cast as the reference's do (INT_MIN on x86)
        return rng.pareto(a=_PARETO_A, size=shape).astype(np.int32) % rows


def generate_tables(directory: Path, columns: list[str], rows: list[int], sizes: list[int], distribution: str,
                    seed: int, block_ids: int = _BLOCK_IDS) -> None:
    """Writes ``directory/<column>.npy``, ``(rows[f], sizes[f]) int32`` each, in the reference's draw order."""
    if distribution not in DISTRIBUTIONS:
        raise PrepError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for column, count, size in zip(columns, rows, sizes):
        final = table_path(directory, column)
        tmp = final.with_name(f".{final.name}.tmp")
        with open(tmp, "wb") as handle:  # streamed, not memory-mapped: written pages do not stay resident
            np.lib.format.write_array_header_1_0(handle, {"descr": "<i4", "fortran_order": False,
                                                          "shape": (count, size)})
            block_rows = max(1, block_ids // size)
            for start in range(0, count, block_rows):
                stop = min(start + block_rows, count)
                block = np.empty((stop - start, size), dtype="<i4")
                block[:, 0] = np.arange(start, stop)
                if size > 1:
                    block[:, 1:] = _draw(rng, distribution, count, (stop - start, size - 1))
                handle.write(block.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)


@dataclass(kw_only=True)
class MultihotConfig:
    """One ``dlrm-scale prep multihot`` run (``data_prep/multihot_cli.py`` explains each flag)."""

    input: str
    out: str
    sizes: list[int]
    distribution: str = "uniform"
    seed: int = 0
    num_embeddings: list[int] | None = None
    materialize: bool = True
    compression: str = "snappy"
    workers: int = 1
    rank: int = 0
    world_size: int = 1
    barrier_timeout: float = 6 * 3600.0
    progress: bool = True

    def settings(self, manifest_sha: str, rows: list[int]) -> dict:
        """What decides the output bytes (not workers, ranks or progress)."""
        return {"input_manifest_sha256": manifest_sha, "sizes": self.sizes, "distribution": self.distribution,
                "seed": self.seed, "table_rows": rows, "materialize": self.materialize,
                "compression": self.compression}


def _output_schema(schema: pa.Schema, sparse: list[str], sizes: list[int]) -> pa.Schema:
    """The input's columns, with sparse column f as ``fixed_size_binary[4 * size_f]`` (little-endian int32 ids)."""
    width = dict(zip(sparse, sizes))
    return pa.schema([pa.field(name, pa.binary(4 * width[name]), nullable=False) if name in width
                      else schema.field(name) for name in schema.names])


@dataclass(kw_only=True, frozen=True)
class MaterializeTask:
    """Expands one one-hot shard into its multi-hot twin, row group by row group."""

    source: str  # the input shard, absolute
    target: str  # the output shard, relative to OUT
    sparse: tuple[str, ...]
    cardinalities: tuple[int, ...]  # of the input ids (the input manifest's)
    rows: tuple[int, ...]  # of the lookup tables
    sizes: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return os.path.getsize(self.source)

    def result(self, state: State) -> Path:
        return state.root / "multihot" / (self.target.replace("/", "__") + ".json")

    def run(self, cfg: MultihotConfig, progress) -> None:
        out = Path(cfg.out)
        tables = load_tables(out / TABLES_DIR, list(self.sparse), list(self.rows), list(self.sizes))
        final = out / self.target
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        reader = pq.ParquetFile(self.source)
        schema = _output_schema(reader.schema_arrow, list(self.sparse), list(self.sizes))
        compression = None if cfg.compression == "none" else cfg.compression
        writer = pq.ParquetWriter(tmp, schema, compression=compression,
                                  use_dictionary=[n for n in schema.names if n not in self.sparse])
        groups = reader.metadata.num_row_groups
        for group in range(groups):
            table = reader.read_row_group(group)
            arrays = []
            for name in schema.names:
                column = table.column(name)
                if name not in self.sparse:
                    arrays.append(column.combine_chunks())
                    continue
                f = self.sparse.index(name)
                ids = column.to_numpy()
                bad = (ids < 0) | (ids >= self.cardinalities[f])
                if bad.any():
                    raise PrepError(f"{self.source} row group {group}: column {name} holds id "
                                    f"{int(ids[bad][0])}, outside [0, {self.cardinalities[f]}) of the manifest")
                values = np.take(tables[f], ids % self.rows[f], axis=0,
                                 out=hugepage_empty((len(ids), self.sizes[f]), "<i4"))
                arrays.append(pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * self.sizes[f]), len(values),
                                                                   [None, pa.py_buffer(values)]))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=table.num_rows)
            progress.add_rows(table.num_rows)
        writer.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, final)
        progress.add_bytes(self.nbytes)
        write_json(self.result(State(out)), {"path": self.target, "sha256": digest, "row_groups": groups})


def _validate(cfg: MultihotConfig, manifest: Manifest) -> list[int]:
    """Checks the settings against the input; returns the lookup tables' row counts."""
    columns = len(manifest.sparse_columns)
    if manifest.multi_hot:
        raise PrepError(f"{cfg.input}: already multi-hot; give the one-hot output of `dlrm-scale prep criteo`")
    if len(cfg.sizes) != columns or min(cfg.sizes) < 1:
        raise PrepError(f"--sizes needs {columns} values >= 1 (one per sparse column); got {len(cfg.sizes)}: "
                        f"{cfg.sizes}")
    rows = list(cfg.num_embeddings or manifest.cardinalities)
    if len(rows) != columns or min(rows) < 1 or max(rows) > 2**31:
        raise PrepError(f"--num-embeddings needs {columns} values in [1, 2**31]; got {len(rows)}")
    if cfg.distribution not in DISTRIBUTIONS:
        raise PrepError(f"--distribution must be one of {', '.join(DISTRIBUTIONS)}; got {cfg.distribution!r}")
    if cfg.workers < 1 or cfg.world_size < 1 or not 0 <= cfg.rank < cfg.world_size:
        raise PrepError(f"need --workers >= 1 and 0 <= --rank < --world-size; got {cfg.workers}, {cfg.rank}, "
                        f"{cfg.world_size}")
    return rows


def prepare(cfg: MultihotConfig) -> Manifest | None:
    """This rank's part: rank 0 generates the tables, every rank expands its share of the shards, rank 0
    writes and returns the manifest (other ranks return None)."""
    input_dir, out = Path(cfg.input).resolve(), Path(cfg.out)
    manifest = Manifest.load(input_dir)
    rows = _validate(cfg, manifest)
    state = State(out)
    settings = cfg.settings(hashlib.sha256((input_dir / MANIFEST_NAME).read_bytes()).hexdigest(), rows)
    sparse = list(manifest.sparse_columns)
    with state.lock(cfg.rank):
        state.claim(settings, cfg.rank, cfg.barrier_timeout)
        tables_done = state.root / "multihot" / "tables.json"
        if cfg.rank == 0 and not tables_done.exists():
            generate_tables(out / TABLES_DIR, sparse, rows, cfg.sizes, cfg.distribution, cfg.seed)
            write_json(tables_done, {"rows": rows, "sizes": cfg.sizes})
        wait_for([tables_done], what="rank 0's lookup tables", timeout=cfg.barrier_timeout)
        tasks = [MaterializeTask(source=str(input_dir / shard.path), target=shard.path, sparse=tuple(sparse),
                                 cardinalities=tuple(manifest.cardinalities), rows=tuple(rows), sizes=tuple(cfg.sizes))
                 for split in manifest.splits.values() for shard in split.shards] if cfg.materialize else []
        mine = [t for i, t in enumerate(tasks) if i % cfg.world_size == cfg.rank and not t.result(state).exists()]
        run_tasks(mine, cfg, desc="multihot")
        if cfg.rank != 0:
            return None
        wait_for([t.result(state) for t in tasks], what="the other ranks' shards", timeout=cfg.barrier_timeout)
        done = {t.target: read_json(t.result(state)) for t in tasks}
        splits = {}
        for name, split in manifest.splits.items():
            shards = []
            for shard in split.shards:
                if cfg.materialize:
                    shards.append(dataclasses.replace(shard, sha256=done[shard.path]["sha256"]))
                else:  # expanded by the loader: point at the one-hot shards
                    shards.append(dataclasses.replace(shard, path=os.path.relpath(input_dir / shard.path, out)))
            splits[name] = Split(rows=split.rows, shards=shards)
        result = dataclasses.replace(
            manifest, multi_hot=True, cardinalities=rows, splits=splits,
            extra={**manifest.extra, "multihot": {
                "layout": "materialized" if cfg.materialize else "expand", "sizes": list(cfg.sizes),
                "distribution": cfg.distribution, "seed": cfg.seed, "tables": TABLES_DIR,
                "input": str(input_dir), "input_cardinalities": list(manifest.cardinalities)}})
        result.save(out)
        return result
