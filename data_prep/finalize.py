"""The last step (rank 0): check the books, assemble the quarantine, write ``manifest.json``.

Shards are listed per split in input order: file, chunk, then shard. Before the manifest is written every chunk
must account for each of its lines exactly once (``rows + bad lines == lines``) and, where the count phase
counted the chunk, agree with that count (otherwise an input changed during the run).

Quarantine: with ``--on-bad-line skip`` the bad lines of input ``<k>-<name>`` go, byte for byte, to
``OUT/quarantine/<k>-<name>.lines``, and ``OUT/quarantine/<k>-<name>.why`` says for each its 1-based line number
in the input and what was wrong.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa

from data_prep.chunks import Chunk
from data_prep.config import PrepConfig
from data_prep.errors import PrepError
from data_prep.layout import InputFile
from data_prep.schema import DENSE, HASH_SPACE, LABEL, SPARSE, UNLABELED
from data_prep.shards import Journal
from data_prep.splits import UNLABELED as UNLABELED_SPLIT
from data_prep.splits import split_names
from data_prep.state import State, read_json
from data_prep.tasks import CONTIGUOUS_DIR, VOCAB_DIR
from dlrm_scale import __version__
from dlrm_scale.data.manifest import Manifest, Shard, SourceFile, Split


def _quarantine(out: Path, state: State, source: InputFile, chunks: list[Chunk], first: dict[str, int]) -> str | None:
    """Writes the quarantine files of ``source``; returns the ``.lines`` path relative to ``out`` (None: clean)."""
    pieces = [c for c in chunks if state.bad_raw(c.id).exists()]
    if not pieces:
        return None
    directory = out / "quarantine"
    directory.mkdir(exist_ok=True)
    stem = f"{source.index:03d}-{Path(source.path).name}"
    lines_path, why_path = directory / f"{stem}.lines", directory / f"{stem}.why"
    lines_tmp, why_tmp = lines_path.with_name(f".{lines_path.name}.tmp"), why_path.with_name(f".{why_path.name}.tmp")
    with open(lines_tmp, "wb") as lines_out, open(why_tmp, "w") as why_out:
        for chunk in pieces:
            with open(state.bad_raw(chunk.id), "rb") as raw:
                shutil.copyfileobj(raw, lines_out)
            offset = source.first_data_line + first[chunk.id]
            for entry in state.bad_why(chunk.id).read_text().splitlines():
                line, reason = entry.split("\t", 1)
                why_out.write(f"{source.path}:{offset + int(line)}: {reason}\n")
    os.replace(lines_tmp, lines_path)
    os.replace(why_tmp, why_path)
    return str(lines_path.relative_to(out))


def finalize(cfg: PrepConfig, sources: list[InputFile], chunks: dict[int, list[Chunk]], holdout: str, state: State,
             *, counted_lines: dict[str, int]) -> Manifest:
    out = Path(cfg.out)
    names = split_names(holdout, cfg.first_half)
    if any(not s.labeled for s in sources):
        names.append(UNLABELED_SPLIT)
    splits = {name: Split(rows=0, shards=[]) for name in names}
    quarantine, bad_total, file_lines = [], 0, {}
    for source in sources:
        first, position = {}, 0
        for chunk in chunks[source.index]:
            done = read_json(state.converted(chunk.id))
            rows = sum(done["rows"].values())
            if rows + done["bad"] != done["lines"]:
                raise RuntimeError(f"chunk {chunk.id} of {source.path}: {rows} rows + {done['bad']} bad lines != "
                                   f"{done['lines']} lines")
            if chunk.id in counted_lines and counted_lines[chunk.id] != done["lines"]:
                raise PrepError(f"{source.path}: {counted_lines[chunk.id]} lines when counted, {done['lines']} when "
                                "converted; the file changed during the run. Start over with a new --out")
            first[chunk.id] = position
            position += done["lines"]
            bad_total += done["bad"]
            journal = sorted(Journal(state.journal(chunk.id)).shards, key=lambda r: (names.index(r["split"]), r["seq"]))
            if sum(r["rows"] for r in journal) != rows:
                raise RuntimeError(f"chunk {chunk.id}: journal holds {sum(r['rows'] for r in journal)} rows, "
                                   f"the chunk wrote {rows}")
            for record in journal:
                split = splits[record["split"]]
                split.shards.append(Shard(path=record["path"], rows=record["rows"], row_groups=record["row_groups"],
                                          sha256=record["sha256"]))
                split.rows += record["rows"]
        file_lines[source.path] = position
        path = _quarantine(out, state, source, chunks[source.index], first)
        if path:
            quarantine.append(path)

    if cfg.encoding == "vocab":
        cardinalities = [int(read_json(state.vocab_done(name))["size"]) for name in SPARSE]
    elif cfg.encoding == "contiguous":
        cardinalities = [int(read_json(state.contiguous_done(name))["size"]) for name in SPARSE]
    else:
        cardinalities = [cfg.max_ind_range or HASH_SPACE] * len(SPARSE)
    hashed = [read_json(state.source(s.index)) for s in sources]
    extra = {
        "holdout": holdout, "first_half": cfg.first_half, "rows_per_shard": cfg.rows_per_shard,
        "row_group_rows": cfg.row_group_rows, "chunk_bytes": cfg.chunk_bytes, "compression": cfg.compression,
        "input_formats": {s.path: s.format for s in sources}, "input_lines": file_lines,
    }
    if cfg.encoding == "vocab":
        extra["vocab_dir"] = VOCAB_DIR
    if cfg.encoding == "contiguous":
        extra["contiguous_dir"] = CONTIGUOUS_DIR
    if UNLABELED_SPLIT in splits:
        extra["unlabeled_label"] = UNLABELED
    manifest = Manifest(
        dataset=cfg.dataset, encoding=cfg.encoding, max_ind_range=cfg.max_ind_range,
        min_frequency=cfg.min_frequency, dense_transform=cfg.dense_transform, label_column=LABEL,
        dense_columns=list(DENSE), sparse_columns=list(SPARSE), cardinalities=cardinalities, splits=splits,
        sources=[SourceFile(path=h["path"], bytes=h["bytes"], sha256=h["sha256"]) for h in hashed],
        bad_lines_skipped=bad_total, quarantine=quarantine,
        created_by=f"dlrm-scale {__version__} prep (pyarrow {pa.__version__})", extra=extra,
    )
    manifest.save(out)
    return manifest
