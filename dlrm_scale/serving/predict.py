"""Score raw Criteo logs or prepared Parquet shards with an exported model: ``dlrm-scale predict``.

Inputs: raw logs in any layout ``prep`` reads (TSV/CSV, header or not, labeled or not, plain or gzip), parsed by
prep's own parser, so a line ``prep`` rejects is rejected here with the same reason; or ``.parquet`` shards that
``prep`` wrote (their parent's ``manifest.json``, when present, must match the model's encoding). Raw rows go
through the model's ``forward`` (the encoding inside the model), shards through ``logits_prepared``.

Output: one Parquet file, rows in input order: ``input`` (int32, index into ``--input``; the paths are in the
file's metadata), ``row`` (int64, the 0-based data row of that input: header excluded, bad lines counted),
``logit`` and ``score`` (float32; score = sigmoid(logit), the click probability). With ``--on-bad-line skip``
a bad line leaves a gap in ``row`` and is listed with its reason in ``<out>.bad_lines.tsv``; ``error`` stops
at the first one, naming file, line and field.

Work is cut as ``prep`` cuts it (plain files in line-aligned chunks of ``--chunk-bytes``, a gzip file or a shard's
row group one task each) and fanned out over ``--workers`` processes; memory per worker is one block of
``--block-bytes`` (or one row group) plus its scores, whatever the size of a file: each task streams its scores,
a row group per block, to ``<out>.parts/<task>.parquet`` and renames it into place when done, so rerunning the
same command after a crash redoes only unfinished tasks; the parts are then concatenated in input order, a row
group at a time, and removed.

Example::

    dlrm-scale predict --model model/ --input raw/day_23.gz --out scores.parquet --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MODEL: Any = None  # the worker process's model, loaded once per process
_COUNTER: Any = None  # shared bytes-done counter for the progress bar


class PredictError(ValueError):
    """Bad input or arguments for ``predict`` (named with the fix)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="directory `dlrm-scale export` wrote")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="raw Criteo logs (TSV/CSV, plain or gzip) or Parquet shards written by prep")
    parser.add_argument("--out", required=True, metavar="FILE", help="output Parquet file of scores")
    parser.add_argument("--on-bad-line", choices=("error", "skip"), default="error",
                        help="error: stop at the first bad line (file, line, field); skip: score the others and "
                             "list bad lines in <out>.bad_lines.tsv")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes")
    parser.add_argument("--batch-rows", type=int, default=8192, metavar="N", help="rows scored per model call")
    parser.add_argument("--chunk-bytes", type=int, default=1 << 28, metavar="N",
                        help="plain raw files are cut into tasks of about N bytes (a gzip file is one task)")
    parser.add_argument("--block-bytes", type=int, default=1 << 22, metavar="N",
                        help="raw bytes parsed at once per worker (bounds memory)")
    parser.add_argument("--format", choices=("auto", "tsv", "csv"), default="auto",
                        help="raw field delimiter (auto: detected from the first line, as prep does)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass(kw_only=True, frozen=True)
class Task:
    """One unit of work: bytes ``start``..``end`` of a raw file (a gzip file: 0..-1, the whole stream), or row group
    ``index`` of a shard (``start``..``end``: its rows)."""

    input: int
    path: str
    kind: str  # "raw" or "parquet"
    index: int
    start: int
    end: int
    nbytes: int

    @property
    def name(self) -> str:
        return f"{self.input:05d}-{self.index:06d}"


def _plan(paths: list[str], fmt: str, chunk_bytes: int) -> list[Task]:
    import pyarrow.parquet as pq

    from data_prep.chunks import plan_chunks
    from data_prep.errors import PrepError
    from data_prep.layout import inspect_input

    tasks = []
    for number, path in enumerate(paths):
        if path.endswith(".parquet"):
            try:
                metadata = pq.ParquetFile(path).metadata
            except (OSError, ValueError) as exc:
                raise PredictError(f"{path}: not a readable Parquet file ({exc})") from exc
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                tasks.append(Task(input=number, path=path, kind="parquet", index=group, start=0, end=rows,
                                  nbytes=metadata.row_group(group).total_byte_size))
            continue
        try:
            source = inspect_input(number, path, fmt)
            chunks = plan_chunks(source, chunk_bytes)
        except PrepError as exc:
            raise PredictError(str(exc)) from exc
        for chunk in chunks:
            tasks.append(Task(input=number, path=path, kind="raw", index=chunk.index, start=chunk.start,
                              end=chunk.end, nbytes=source.size if chunk.end < 0 else chunk.nbytes))
    return tasks


def _check_shard_contract(path: str, model_dir: str, manifest: dict[str, Any]) -> None:
    """Refuses shards prepared differently from the model's data, by their directory's ``manifest.json``: another
    encoding or transform, or (vocab) other vocabularies, under which the same id means another value."""
    import numpy as np

    from dlrm_scale.data.manifest import MANIFEST_NAME, Manifest

    for directory in (Path(path).parent, Path(path).parent.parent):
        if not (directory / MANIFEST_NAME).is_file():
            continue
        data = Manifest.load(directory)
        keys = ["encoding", "dense_transform"] + (["max_ind_range"] if data.encoding == "hash" else [])
        differ = [f"{key}: data {getattr(data, key)!r}, model {manifest[key]!r}" for key in keys
                  if getattr(data, key) != manifest[key]]
        if not differ and data.encoding == "vocab":
            for name, file in manifest["vocabularies"].items():
                values = directory / "vocab" / name / "values.npy"
                if not values.is_file() or not np.array_equal(np.load(values, allow_pickle=False),
                                                              np.load(Path(model_dir) / file, allow_pickle=False)):
                    differ.append(f"vocabulary of {name} differs from the model's")
                    break
        if differ:
            raise PredictError(f"{path}: prepared differently from the model's training data ({'; '.join(differ)});"
                               " score the raw logs instead")
        return


def _init_worker(model_dir: str, counter: Any, threads: int) -> None:
    """Loads the model into this process; ``threads`` > 0 sets torch's intra-op threads (1 per pool worker)."""
    global _MODEL, _COUNTER
    import torch

    from dlrm_scale.serving.artifact import load_model

    if threads > 0:
        torch.set_num_threads(threads)
    _MODEL, _ = load_model(model_dir)
    _COUNTER = counter


def _progress(nbytes: int) -> None:
    if _COUNTER is not None:
        with _COUNTER.get_lock():
            _COUNTER.value += nbytes


def _score(dense, ids, *, prepared: bool, batch_rows: int):
    """Logits ``(N,) float32`` of ``dense (N, ND)``, ``ids (N, NS)`` numpy arrays, ``batch_rows`` at a time."""
    import numpy as np
    import torch

    out = np.empty(len(dense), np.float32)
    method = _MODEL.logits_prepared if prepared else _MODEL.forward
    with torch.inference_mode():
        for start in range(0, len(dense), batch_rows):
            dense_part = torch.from_numpy(np.ascontiguousarray(dense[start:start + batch_rows]))
            ids_part = torch.from_numpy(np.ascontiguousarray(ids[start:start + batch_rows]))
            try:
                out[start:start + batch_rows] = method(dense_part, ids_part).float().numpy()
            except torch.jit.Error as exc:  # the model's own input checks, raised through TorchScript
                lines = [line for line in str(exc).splitlines() if line.strip()]
                raise PredictError(f"rows {start}..{start + len(ids_part) - 1}: "
                                   f"{lines[-1].split(': ', 1)[-1] if lines else exc}") from exc
    return out


def _raw_batches(task: Task, fmt: str, block_bytes: int, policy: str):
    """``(rows (N,) int64 line in the chunk, dense_raw (N, 13), sparse_raw (N, 26), bad [(line in the block,
    reason)], lines in the block)`` per block of the chunk."""
    import numpy as np

    from data_prep.chunks import Chunk, iter_blocks
    from data_prep.layout import inspect_input
    from data_prep.parse import BlockParser, preview
    from data_prep.tasks import lines_before

    source = inspect_input(task.input, task.path, fmt)
    chunk = Chunk(file=task.input, index=task.index, start=task.start, end=task.end)
    parser = BlockParser(source)
    line0 = 0
    for block in iter_blocks(source, chunk, block_bytes, _progress):
        parsed = parser.parse(block)
        if parsed.bad and policy == "error":
            first = parsed.bad[0]
            line = source.first_data_line + lines_before(source, chunk) + line0 + first.line
            raise PredictError(f"{source.path}:{line}: {first.reason} (line: {preview(first.raw)!r}); "
                               "--on-bad-line skip scores the other lines")
        sparse = np.where(parsed.sparse_missing, -1, parsed.sparse.astype(np.int64))
        yield (line0 + parsed.row_lines, parsed.dense.T, sparse.T, [(bad.line, bad.reason) for bad in parsed.bad],
               parsed.lines)
        line0 += parsed.lines


def _task_blocks(task: Task, *, fmt: str, block_bytes: int, batch_rows: int, policy: str):
    """``(rows (N,) int64 relative to the task, logits (N,) float32, bad [(row, reason)], lines)`` per block of a raw
    chunk, or per row group of a shard."""
    import numpy as np
    import pyarrow.parquet as pq

    from data_prep.errors import PrepError
    from dlrm_scale.config import dense_feature_names, sparse_feature_names

    if task.kind == "raw":
        try:
            for rows, dense_raw, sparse_raw, bad, lines in _raw_batches(task, fmt, block_bytes, policy):
                yield rows, _score(dense_raw, sparse_raw, prepared=False, batch_rows=batch_rows), bad, lines
        except PrepError as exc:
            raise PredictError(str(exc)) from exc
        return
    table = pq.ParquetFile(task.path).read_row_group(task.index)
    try:
        dense = np.stack([table.column(n).to_numpy() for n in dense_feature_names(int(_MODEL.num_dense))], 1)
        ids = np.stack([table.column(n).to_numpy() for n in sparse_feature_names(int(_MODEL.num_sparse))], 1)
    except KeyError as exc:
        raise PredictError(f"{task.path}: not a prepared shard (no column {exc}); pass raw logs or prep's "
                           "Parquet shards") from exc
    try:
        logits = _score(dense.astype(np.float32), ids.astype(np.int64), prepared=True, batch_rows=batch_rows)
    except PredictError as exc:
        raise PredictError(f"{task.path} (row group {task.index}), {exc}") from exc
    _progress(task.nbytes)
    yield np.arange(table.num_rows, dtype=np.int64), logits, [], table.num_rows


def run_task(task: Task, *, fmt: str, block_bytes: int, batch_rows: int, policy: str, parts: Path) -> str:
    """Scores one task into ``parts/<task>.parquet``, a row group per block (rows relative to the task, its line
    count in the file's metadata), and its bad lines into ``parts/<task>.bad.tsv``; the Parquet file, renamed into
    place last, marks the task done."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = parts / f"{task.name}.parquet"
    if target.exists():
        return str(target)
    tmp = target.with_suffix(".tmp")
    bad_target = parts / f"{task.name}.bad.tsv"
    lines = 0
    schema = pa.schema([("row", pa.int64()), ("logit", pa.float32())])
    with pq.ParquetWriter(tmp, schema) as writer, open(bad_target.with_suffix(".tmp"), "w") as bad_file:
        for rows, logits, bad, block_lines in _task_blocks(task, fmt=fmt, block_bytes=block_bytes,
                                                           batch_rows=batch_rows, policy=policy):
            writer.write_table(pa.table({"row": rows, "logit": logits}, schema=schema))
            bad_file.writelines(f"{lines + line}\t{reason.replace(chr(10), ' ')}\n" for line, reason in bad)
            lines += block_lines
        writer.add_key_value_metadata({"lines": str(lines)})
    os.replace(bad_target.with_suffix(".tmp"), bad_target)
    os.replace(tmp, target)
    return str(target)


def _merge(tasks: list[Task], parts: Path, out: Path, paths: list[str]) -> tuple[int, int]:
    """Concatenates the parts in input order, a row group at a time, with rows made relative to each input;
    returns (rows, bad lines)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("input", pa.int32()), ("row", pa.int64()), ("logit", pa.float32()),
                        ("score", pa.float32())], metadata={"inputs": json.dumps(paths)})
    tmp = out.with_name(out.name + ".tmp")
    bad_path = out.with_name(out.name + ".bad_lines.tsv")
    total = bad_total = 0
    offsets: dict[int, int] = {}
    with pq.ParquetWriter(tmp, schema) as writer, open(bad_path.with_suffix(".tmp"), "w") as bad_file:
        bad_file.write("input\trow\treason\n")
        for task in tasks:
            part = pq.ParquetFile(parts / f"{task.name}.parquet")
            first = offsets.get(task.input, 0)
            offsets[task.input] = first + int(part.metadata.metadata[b"lines"])
            for batch in part.iter_batches():
                logit = batch.column("logit").to_numpy()
                score = (1.0 / (1.0 + np.exp(-logit.astype(np.float64)))).astype(np.float32)
                writer.write_table(pa.table({
                    "input": np.full(len(logit), task.input, np.int32), "row": batch.column("row").to_numpy() + first,
                    "logit": logit, "score": score}, schema=schema))
                total += len(logit)
            with open(parts / f"{task.name}.bad.tsv") as bad_lines:
                for entry in bad_lines:
                    line, reason = entry.rstrip("\n").split("\t", 1)
                    bad_file.write(f"{task.input}\t{first + int(line)}\t{reason}\n")
                    bad_total += 1
    os.replace(tmp, out)
    if bad_total:
        os.replace(bad_path.with_suffix(".tmp"), bad_path)
    else:
        bad_path.with_suffix(".tmp").unlink()
        bad_path.unlink(missing_ok=True)
    return total, bad_total


def predict(model_dir: str, paths: list[str], out: str | Path, *, on_bad_line: str = "error", workers: int = 1,
            batch_rows: int = 8192, chunk_bytes: int = 1 << 28, block_bytes: int = 1 << 22, fmt: str = "auto",
            force: bool = False, progress: bool = False) -> tuple[int, int]:
    """Scores ``paths`` into ``out``; returns (rows scored, bad lines skipped). See the module docstring."""
    import multiprocessing

    from dlrm_scale.serving.artifact import read_manifest

    out = Path(out)
    manifest = read_manifest(model_dir)
    if workers < 1 or batch_rows < 1:
        raise PredictError("--workers and --batch-rows must be positive")
    if out.exists():
        if not force:
            raise PredictError(f"{out}: exists; choose another --out or pass --force")
        out.unlink()
    paths = [str(Path(p).resolve()) for p in paths]
    for path in paths:
        if path.endswith(".parquet"):
            _check_shard_contract(path, model_dir, manifest)
    tasks = _plan(paths, fmt, chunk_bytes)
    parts = out.with_name(out.name + ".parts")
    settings = {"model": manifest["files"], "inputs": [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths],
                "on_bad_line": on_bad_line, "format": fmt, "chunk_bytes": chunk_bytes}
    plan_file = parts / "plan.json"
    if parts.is_dir() and (not plan_file.is_file() or json.loads(plan_file.read_text()) != settings):
        shutil.rmtree(parts)  # left by a run with other inputs or settings: its parts do not apply
    parts.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(settings))
    kwargs = dict(fmt=fmt, block_bytes=block_bytes, batch_rows=batch_rows, policy=on_bad_line, parts=parts)
    todo = [task for task in tasks if not (parts / f"{task.name}.parquet").exists()]
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", sum(t.nbytes for t in tasks) - sum(t.nbytes for t in todo))
    bar = _bar(sum(t.nbytes for t in tasks), counter.value, enabled=progress)
    # Loaded here in every case: a model that fails to load must fail once, in this process, not in a pool
    # initializer that the pool would restart forever.
    _init_worker(model_dir, counter, 0)
    try:
        if workers == 1 or len(todo) <= 1:
            for task in todo:
                run_task(task, **kwargs)
                bar(counter.value)
        else:
            with context.Pool(workers, initializer=_init_worker, initargs=(model_dir, counter, 1)) as pool:
                pending = [pool.apply_async(run_task, (task,), kwargs) for task in todo]
                for result in pending:
                    while not result.ready():
                        result.wait(0.2)
                        bar(counter.value)
                    result.get()
            bar(counter.value)
    finally:
        bar(None)
    rows, bad = _merge(tasks, parts, out, paths)
    shutil.rmtree(parts)
    return rows, bad


def _bar(total: int, initial: int, *, enabled: bool):
    """``update(done_bytes)``, ``update(None)`` closes: a tqdm bar over input bytes (a no-op when disabled)."""
    if not enabled:
        return lambda done: None
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
               desc="predict")

    def update(done: int | None) -> None:
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return update


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    rows, bad = predict(args.model, args.input, args.out, on_bad_line=args.on_bad_line, workers=args.workers,
                        batch_rows=args.batch_rows, chunk_bytes=args.chunk_bytes, block_bytes=args.block_bytes,
                        fmt=args.format, force=args.force, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    skipped = f", {bad:,} bad lines skipped (see {args.out}.bad_lines.tsv)" if bad else ""
    print(f"predict: {rows:,} rows scored in {seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} rows/s) -> "
          f"{args.out}{skipped}")
    return 0

