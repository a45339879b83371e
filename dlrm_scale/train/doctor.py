"""The training doctor: one line, with the likely causes and the config key to change, when a run is not learning.

The most reported DLRM failure is a run that trains for hours and ends at AUC 0.5 or NaN. Every sign of it is
visible early in numbers the loop already has, so the doctor (``train.doctor``, on by default) reads them at the
log and evaluation points only, on rank 0, with no collective and no extra pass over the data:

=======================  ==========================================================================================
code                     condition
=======================  ==========================================================================================
``nonfinite_loss``       the logged training loss, or the evaluation's logloss, is NaN or infinite
``diverged``             the training loss is above ``DIVERGED_RATIO`` x H(ctr) (any step: even an untrained
                         model predicts near the click rate)
``loss_at_entropy``      after warm-up, the training loss is not below ``ENTROPY_RATIO`` x H(ctr), the entropy of
                         predicting the window's click rate for every row: the model learned nothing
``collapsed``            after warm-up, all predicted probabilities of the logged step's batch lie within
                         ``COLLAPSE_SPREAD`` of each other
``auc_at_chance``        an evaluation after warm-up gives AUC <= ``CHANCE_AUC``
``ids_out_of_range``     a sampled batch holds an id < 0 or >= its table's rows
``untouched_rows``       hash-encoded or synthetic ids (spread over the table by the hash) seen in many distinct
                         values never touch a whole range of a table's rows: a remapping bug (ids cut to a
                         smaller range, or a row-wise shard that never gets any)
``dense_out_of_range``   a sampled batch's dense features leave ``[0, DENSE_MAX]``, the range the log transforms
                         give (``log(max(x, 0) + 1)`` and ``log(max(x, -2) + 3)`` are >= 0; Criteo's largest
                         counts give < 25), or are not finite: untransformed or wrongly prepared data
``loader_bound``         after the first log window, waiting for the next batch takes >= ``LOADER_SHARE`` of the
                         window's wall time: the input pipeline, not the model, sets the speed
=======================  ==========================================================================================

Warm-up is the first ``WARMUP_FRACTION`` of the run's steps, at least ``WARMUP_MIN_STEPS`` (or the whole run when
it is shorter), ``optimizer.dense.warmup_steps`` and ``WARMUP_SAMPLES`` trained rows: a healthy model may sit at
the entropy at first (the SGD recipes of the presets do for 25,000-77,000 rows on the quickstart's data, measured
by ``tests/train/test_recipes.py``; a Criteo 1TB epoch is 4 billion rows). Each
code is reported once per run: a line on stdout (``doctor: ...``) and a ``{"kind": "doctor", "code", "message"}``
record in ``metrics.jsonl``. The statistics the checks read (``ctr``, ``pred_spread``, ``loader_wait_share``) go
into the ``train`` records, so ``dlrm-scale doctor --run-dir DIR`` repeats the same diagnosis from the run folder.
The doctor reports; stopping a diverged run is ``train.on_nonfinite``'s job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dlrm_scale.config import Config
from dlrm_scale.metrics import MetricsLogger, StdoutSink, write_line

WARMUP_FRACTION = 0.1
WARMUP_MIN_STEPS = 50
WARMUP_SAMPLES = 150_000
ENTROPY_RATIO = 0.99
DIVERGED_RATIO = 3.0
COLLAPSE_SPREAD = 0.01
CHANCE_AUC = 0.55
LOADER_SHARE = 0.5
DENSE_MAX = 50.0
COVERAGE_RANGES = 16  # a table's rows are checked as this many equal ranges
DISTINCT_PER_RANGE = 12  # distinct ids per range before an empty range counts (exp(-12): chance under a hash)
DISTINCT_CAP = 4096  # distinct ids remembered per table
# codes found from sampled batches, which the run folder keeps only as the doctor's records
BATCH_CODES = frozenset({"ids_out_of_range", "untouched_rows", "dense_out_of_range"})


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One diagnosis: ``code`` (see the module table), the step it was made at, and the one-line message."""

    code: str
    step: int
    message: str


def label_entropy(ctr: float) -> float:
    """H(ctr) in nats: the logloss of predicting the click rate ``ctr`` for every row."""
    if not 0.0 < ctr < 1.0:
        return math.nan
    return -(ctr * math.log(ctr) + (1.0 - ctr) * math.log(1.0 - ctr))


def learning_rates(cfg: Config) -> str:
    """Both learning rates with their keys and optimizers, for advice that names what to change."""
    emb, dense = cfg.optimizer.embedding, cfg.optimizer.dense
    return (f"optimizer.embedding.lr={emb.lr:g} ({emb.name}), optimizer.dense.lr={dense.lr:g} ({dense.name})")


class Checks:
    """The checks on logged numbers (``train``/``eval`` record values): the same during training and in
    ``dlrm-scale doctor``. ``total_steps`` sets the warm-up; ``report`` receives each new finding."""

    def __init__(self, cfg: Config, *, total_steps: int, report: Callable[[Finding], None]) -> None:
        self.cfg = cfg
        self.warmup = max(cfg.optimizer.dense.warmup_steps, math.ceil(WARMUP_FRACTION * total_steps),
                          min(WARMUP_MIN_STEPS, total_steps))
        self._report = report
        self.reported: set[str] = set()
        self._train_logs = 0
        self._samples = 0  # rows trained on, from the latest train record

    def warmed_up(self, step: int) -> bool:
        return step >= self.warmup and self._samples >= WARMUP_SAMPLES

    def flag(self, code: str, step: int, message: str) -> None:
        if code not in self.reported:
            self.reported.add(code)
            self._report(Finding(code=code, step=step, message=f"doctor: step {step}: {message}"))

    def train(self, step: int, values: dict[str, Any]) -> None:
        """Checks one ``train`` record: ``loss`` and, when present, ``ctr``, ``pred_spread``,
        ``loader_wait_share``."""
        self._train_logs += 1
        self._samples = values.get("samples", self._samples)
        lrs = learning_rates(self.cfg)
        loss = values.get("loss", math.nan)
        if not math.isfinite(loss):
            self.flag("nonfinite_loss", step, f"the training loss is {loss}: the learning rates are too high for "
                      f"their optimizers ({lrs}), or the input holds non-finite values; lower the learning rates "
                      f"(or warm up: optimizer.dense.warmup_steps), keep data.check_values=true")
            return
        entropy = label_entropy(values.get("ctr", math.nan))
        if math.isfinite(entropy) and loss >= DIVERGED_RATIO * entropy:
            self.flag("diverged", step, f"the training loss {loss:.4g} is {loss / entropy:.3g} times the label "
                      f"entropy {entropy:.4f}: training diverged; the learning rates are too high for their "
                      f"optimizers ({lrs}); lower them (or warm up: optimizer.dense.warmup_steps)")
        elif self.warmed_up(step) and math.isfinite(entropy) and loss >= ENTROPY_RATIO * entropy:
            self.flag("loss_at_entropy", step, f"the training loss {loss:.4f} is not below the label entropy "
                      f"{entropy:.4f} (predicting the click rate {values['ctr']:.4f} for every row): nothing is "
                      f"learned; learning rates too high or too low ({lrs}), or labels that do not belong to their "
                      f"rows (shuffled, misaligned columns: check the prep output)")
        spread = values.get("pred_spread", math.nan)
        if self.warmed_up(step) and spread < COLLAPSE_SPREAD:
            self.flag("collapsed", step, f"the predictions collapsed: every score of the batch lies within "
                      f"{spread:.2g} of the others, the model outputs one value for all rows; usually a learning "
                      f"rate too high ({lrs}) that saturated the top MLP, or features that carry no signal")
        share = values.get("loader_wait_share", math.nan)
        if self._train_logs > 1 and share >= LOADER_SHARE:
            data = self.cfg.data
            self.flag("loader_bound", step, f"loader-bound: {share:.0%} of the last window's wall time was spent "
                      f"waiting for the next batch, so the model idles that long; raise data.num_workers "
                      f"(now {data.num_workers}) and data.prefetch_batches (now {data.prefetch_batches}), or "
                      f"read from faster storage")

    def eval(self, step: int, values: dict[str, Any]) -> None:
        """Checks one ``eval`` record (``auc``, ``logloss``)."""
        lrs = learning_rates(self.cfg)
        logloss, auc = values.get("logloss", math.nan), values.get("auc", math.nan)
        if not math.isfinite(logloss):
            self.flag("nonfinite_loss", step, f"the evaluation logloss is {logloss}: the model diverged; the "
                      f"learning rates are too high for their optimizers ({lrs}); lower them")
        elif self.warmed_up(step) and auc <= CHANCE_AUC:
            self.flag("auc_at_chance", step, f"AUC {auc:.4f} on {values.get('split', 'the evaluation split')} "
                      f"after warm-up: the model ranks rows no better than chance; learning rates too high or "
                      f"too low ({lrs}), or labels that do not belong to their rows")


class BatchStats:
    """What sampled batches say about the input: ids per table (range, coverage) and dense feature range."""

    def __init__(self, table_rows: list[int], *, check_coverage: bool) -> None:
        self.table_rows = table_rows
        self.check_coverage = check_coverage
        self.ranges_hit = [torch.zeros(min(COVERAGE_RANGES, rows), dtype=torch.bool) for rows in table_rows]
        self.distinct: list[set[int]] = [set() for _ in table_rows]

    def observe(self, batch) -> list[tuple[str, str]]:
        """Adds one batch (``Batch``: dense (B, 13), KJT keys C1..CF); returns ``(code, message)`` pairs for the
        problems this batch shows by itself."""
        problems = []
        real = batch.mask > 0
        dense = batch.dense_features[real]
        if dense.numel():
            finite = bool(torch.isfinite(dense).all())
            low, high = float(dense.min()), float(dense.max())
            if not finite or low < 0.0 or high > DENSE_MAX:
                column = int(torch.nan_to_num(dense, nan=1e30).abs().amax(dim=0).argmax())
                problems.append(("dense_out_of_range", f"dense features outside [0, {DENSE_MAX:g}], the range the "
                                 f"log transforms give: min {low:.4g}, max {high:.4g}, worst column "
                                 f"I{column + 1}{'' if finite else ', non-finite values'}; the data was not "
                                 f"transformed as data.dense_transform says (re-run dlrm-scale prep, check "
                                 f"data.dense_transform against the manifest)"))
        out_of_range = []
        for f, key in enumerate(batch.sparse_features.keys()):
            ids = batch.sparse_features[key].values()
            if not ids.numel():
                continue
            rows = self.table_rows[f]
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= rows:
                out_of_range.append(f"{key} ids {low}..{high} for {rows} rows")
                continue
            unique = torch.unique(ids).cpu()
            ranges = len(self.ranges_hit[f])
            self.ranges_hit[f][unique * ranges // rows] = True
            if len(self.distinct[f]) < DISTINCT_CAP:
                self.distinct[f].update(unique[:DISTINCT_CAP].tolist())
        if out_of_range:
            problems.append(("ids_out_of_range", f"ids outside their tables ({'; '.join(out_of_range[:4])}): "
                             f"data.cardinalities (or data.max_ind_range) does not match the data; take the table "
                             f"sizes from the manifest (data.cardinalities=[]) or re-run dlrm-scale prep"))
        return problems

    def untouched(self) -> str | None:
        """A message naming the tables with a range of rows never touched although their ids are many and, being
        hashed, should spread over every range; None when there are none (or coverage is not checked)."""
        if not self.check_coverage:
            return None
        tables = []
        for f, hit in enumerate(self.ranges_hit):
            distinct = len(self.distinct[f])
            if len(hit) == COVERAGE_RANGES and distinct >= DISTINCT_PER_RANGE * COVERAGE_RANGES and not hit.all():
                rows, empty = self.table_rows[f], int((~hit).sum())
                first = int((~hit).nonzero()[0]) * rows // COVERAGE_RANGES
                tables.append(f"C{f + 1}: {empty} of {COVERAGE_RANGES} row ranges untouched (first from row "
                              f"{first:,} of {rows:,}) by {distinct} distinct ids")
        if not tables:
            return None
        return (f"embedding rows never touched ({'; '.join(tables[:3])}{'; ...' if len(tables) > 3 else ''}): "
                f"hashed ids should cover every range of their table, so ids were cut to a smaller range or "
                f"remapped wrongly, and the shard holding those rows trains nothing; check data.max_ind_range and "
                f"data.cardinalities against the manifest")


class Doctor:
    """The trainer's doctor (rank 0; an inert one elsewhere). The trainer calls :meth:`on_batch` for every batch
    it fetches (with the seconds it waited for it), :meth:`on_step` after every step, :meth:`train_stats` and
    :meth:`check_train` at log points and :meth:`check_eval` after evaluations."""

    def __init__(self, cfg: Config, *, total_steps: int, table_rows: list[int],
                 report: Callable[[Finding], None], sample_every: int) -> None:
        self.checks = Checks(cfg, total_steps=total_steps, report=report)
        synthetic_or_hashed = not cfg.data.path or cfg.data.encoding == "hash"
        self.batch_stats = BatchStats(table_rows, check_coverage=synthetic_or_hashed)
        self.sample_every = max(1, sample_every)
        self._fetched = 0
        self._waited = 0.0
        self._window_start = time.perf_counter()
        self._positives: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None
        self._last_output = None

    def on_batch(self, batch, *, waited: float, step: int) -> None:
        self._waited += waited
        self._fetched += 1
        if self._fetched % self.sample_every == 1 or self.sample_every == 1:
            for code, message in self.batch_stats.observe(batch):
                self.checks.flag(code, step, message)

    def on_step(self, output) -> None:
        """Accumulates the window's labels on the device (no host sync) and keeps the step's outputs."""
        positives, rows = (output.labels * output.mask).sum(), output.mask.sum()
        if self._positives is None:
            self._positives, self._rows = positives, rows
        else:
            self._positives += positives
            self._rows += rows
        self._last_output = output

    def restart_window(self) -> None:
        """Starts a new timing window (after an evaluation or a checkpoint, which are not loader time)."""
        self._waited, self._window_start = 0.0, time.perf_counter()

    def train_stats(self) -> dict[str, float]:
        """``ctr`` of the window's rows, ``pred_spread`` (max - min predicted probability of the last step's real
        rows) and ``loader_wait_share``; starts the next window."""
        stats: dict[str, float] = {}
        if self._rows is not None and float(self._rows) > 0:
            stats["ctr"] = float(self._positives) / float(self._rows)
        if self._last_output is not None:
            real = self._last_output.mask > 0
            probabilities = torch.sigmoid(self._last_output.logits[real].float())
            if probabilities.numel():
                stats["pred_spread"] = float(probabilities.max() - probabilities.min())
        elapsed = time.perf_counter() - self._window_start
        if elapsed > 0:
            stats["loader_wait_share"] = self._waited / elapsed
        self._positives = self._rows = self._last_output = None
        self.restart_window()
        return stats

    def check_train(self, step: int, values: dict[str, Any]) -> None:
        self.checks.train(step, values)
        message = self.batch_stats.untouched() if self.checks.warmed_up(step) else None
        if message:
            self.checks.flag("untouched_rows", step, message)

    def check_eval(self, step: int, values: dict[str, Any]) -> None:
        self.checks.eval(step, values)


def make_doctor(cfg: Config, *, rank: int, total_steps: int, logger: MetricsLogger) -> Doctor | None:
    """The run's doctor on rank 0 when ``train.doctor`` is on (None otherwise). A finding is printed as its one
    line and written as a ``doctor`` record to ``logger``'s sinks other than stdout (``metrics.jsonl``)."""
    if not cfg.train.doctor or rank != 0:
        return None
    from dlrm_scale.data.loader import table_sizes

    def report(finding: Finding) -> None:
        write_line(finding.message)
        for sink in logger.sinks:
            if not isinstance(sink, StdoutSink):
                sink.write("doctor", finding.step, {"code": finding.code, "message": finding.message})

    return Doctor(cfg, total_steps=total_steps, table_rows=table_sizes(cfg.data), report=report,
                  sample_every=cfg.train.log_every_steps)
