"""The phases of a run, each a list of independent tasks, and who runs which.

1. **plan** (every rank, cheap): inspect the inputs, cut plain files into chunks (:mod:`data_prep.chunks`).
2. **count**: line counts of the files whose held-out part is cut by line (``hash``), or, for ``vocab``, every
   chunk's value counts, for ``contiguous`` every chunk's first-seen values (both also count its lines).
3. **merge** (``vocab``, ``contiguous``): one task per column folds the chunks' results into the column's ids.
4. **convert**: one task per chunk writes its shards; one task per input file hashes it for the manifest.
5. **finalize** (rank 0): the manifest and the quarantine files (:mod:`data_prep.finalize`).

Ranks (``--rank``/``--world-size``, e.g. torchx replicas on several machines sharing ``OUT``) take every
``world_size``-th task of each phase, and wait for the others' results on the shared directory before a phase
that needs them. Tasks whose result already exists (an earlier, interrupted run) are skipped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from data_prep.chunks import Chunk, plan_chunks
from data_prep.config import PrepConfig
from data_prep.execute import run_tasks
from data_prep.finalize import finalize
from data_prep.layout import InputFile, inspect_input
from data_prep.schema import SPARSE
from data_prep.splits import files_to_count, resolve_holdout, route
from data_prep.state import State, read_json, wait_for
from data_prep.tasks import (
    ContiguousMergeTask,
    ConvertTask,
    CountTask,
    FirstSeenTask,
    HashTask,
    LineCountTask,
    MergeTask,
)
from dlrm_scale.data.manifest import Manifest


@dataclass(kw_only=True)
class Plan:
    sources: list[InputFile]
    chunks: dict[int, list[Chunk]]
    holdout: str

    @property
    def all_chunks(self) -> list[Chunk]:
        return [c for s in self.sources for c in self.chunks[s.index]]


def make_plan(cfg: PrepConfig) -> Plan:
    sources = [inspect_input(i, path, cfg.format, cfg.dataset) for i, path in enumerate(cfg.ordered_inputs())]
    return Plan(sources=sources, chunks={s.index: plan_chunks(s, cfg.chunk_bytes) for s in sources},
                holdout=resolve_holdout(cfg.holdout, cfg.dataset))


def _run_phase(tasks: list, cfg: PrepConfig, state: State, *, desc: str, wait_all: bool) -> None:
    """Runs this rank's share of ``tasks`` not yet done, then (``wait_all``) waits for every task's result."""
    mine = [t for i, t in enumerate(tasks) if i % cfg.world_size == cfg.rank and not t.result(state).exists()]
    run_tasks(mine, cfg, desc=desc)
    if wait_all:
        wait_for([t.result(state) for t in tasks], what=f"the {desc} tasks of other ranks",
                 timeout=cfg.barrier_timeout)


def _first_lines(plan: Plan, lines: dict[str, int]) -> dict[str, int]:
    """Each chunk's first data line within its file, for the files whose chunks were all counted."""
    first = {}
    for source in plan.sources:
        chunks = plan.chunks[source.index]
        if all(c.id in lines for c in chunks):
            starts = itertools.accumulate((lines[c.id] for c in chunks), initial=0)
            first.update(zip((c.id for c in chunks), starts))
    return first


def prepare(cfg: PrepConfig) -> Manifest | None:
    """Runs this rank's part of the preprocessing; rank 0 returns the manifest (other ranks None)."""
    cfg.validate()
    plan = make_plan(cfg)
    state = State(Path(cfg.out))
    with state.lock(cfg.rank):
        state.claim(cfg.settings(plan.sources, plan.holdout), cfg.rank, cfg.barrier_timeout)
        return _run(cfg, plan, state)


def _run(cfg: PrepConfig, plan: Plan, state: State) -> Manifest | None:
    """Phases 2-5 (see the module docstring), each over this rank's share of the tasks."""
    counted = set(files_to_count(plan.sources, plan.holdout))
    if cfg.encoding in ("vocab", "contiguous"):
        task = CountTask if cfg.encoding == "vocab" else FirstSeenTask
        count_tasks = [task(source=s, chunk=c) for s in plan.sources for c in plan.chunks[s.index]]
    else:
        count_tasks = [LineCountTask(source=s, chunk=c) for s in plan.sources if s.index in counted
                       for c in plan.chunks[s.index]]
    _run_phase(count_tasks, cfg, state, desc="count", wait_all=True)
    lines = {t.chunk.id: int(read_json(t.result(state))["lines"]) for t in count_tasks}
    file_lines = {s.index: sum(lines[c.id] for c in plan.chunks[s.index]) for s in plan.sources
                  if all(c.id in lines for c in plan.chunks[s.index])}
    routing = route(plan.sources, file_lines, holdout=plan.holdout, first_half=cfg.first_half)

    if cfg.encoding in ("vocab", "contiguous"):
        chunk_ids = tuple(c.id for c in plan.all_chunks)  # input order: contiguous numbers by it
        merge = MergeTask if cfg.encoding == "vocab" else ContiguousMergeTask
        _run_phase([merge(column=name, chunk_ids=chunk_ids) for name in SPARSE], cfg, state, desc="merge",
                   wait_all=True)

    first = _first_lines(plan, lines)
    convert = [ConvertTask(source=s, chunk=c, first_line=first.get(c.id, 0 if c.index == 0 else None),
                           routing=routing[s.index]) for s in plan.sources for c in plan.chunks[s.index]]
    hashes = [HashTask(source=s) for s in plan.sources]
    _run_phase(convert + hashes, cfg, state, desc="convert", wait_all=cfg.rank == 0)
    if cfg.rank != 0:
        return None
    return finalize(cfg, plan.sources, plan.chunks, plan.holdout, state, counted_lines=lines)
