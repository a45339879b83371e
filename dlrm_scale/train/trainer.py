"""The training loop.

Read :meth:`Trainer.fit` top to bottom: resume if a checkpoint exists, then for each epoch run the batches in
*segments* that end where something must happen with a quiet model (an evaluation, a checkpoint, ``max_steps``),
and at the end evaluate, checkpoint and summarise. Inside a segment the :class:`BatchRunner` may pipeline
batches (reading up to two ahead of the step it trains); a segment is an ``islice`` of the epoch's batches and
always ends with the pipeline empty, so at every stop the loader has handed out exactly the batches trained on:
its ``state_dict()`` is the position a checkpoint must save, and an evaluation never meets half-processed batches.

Counters: ``step`` counts optimizer steps (one per batch, all ranks in lockstep), ``samples`` counts real rows
(padding excluded) trained on by all ranks together.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dlrm_scale.checkpoint import Checkpointer, pack, unpack
from dlrm_scale.config import Config
from dlrm_scale.metrics import MetricsLogger, Progress, ThroughputMeter, write_line
from dlrm_scale.train.build import DistEnv
from dlrm_scale.train.debug import DebugHooks, row_keys
from dlrm_scale.train.doctor import learning_rates, make_doctor
from dlrm_scale.train.evaluate import EvalMetrics, evaluate
from dlrm_scale.train.nonfinite import GuardedOptimizer, NonFiniteGuard
from dlrm_scale.train.optim import total_steps
from dlrm_scale.train.steps import BatchRunner


@dataclass(kw_only=True)
class TrainState:
    """Everything about the loop's progress that a checkpoint must restore (besides model, optimizer, loader)."""

    step: int = 0
    epoch: int = 0  # the epoch in progress; equals train.epochs once all are done
    epoch_started: bool = False  # the loader is positioned inside ``epoch``: continue it, do not restart it
    samples: int = 0
    world_size: int = 1


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def ensure_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Creates lazily-initialised optimizer state (Adam's moments appear at the first step) so that a checkpoint
    can be loaded into it in place. Runs one step with zero gradients and the learning rates set to 0, which
    leaves every parameter unchanged; the loaded checkpoint then overwrites the state it created."""
    # Plain parameters only: the fused embedding optimizer creates its (sharded) state with the tables.
    params = [p for p in optimizer.params.values() if isinstance(p, torch.nn.Parameter) and p.requires_grad]
    missing = [p for p in params if p not in optimizer.state]
    if not missing:
        return
    saved_lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for param in missing:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, saved_lrs):
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


class Trainer:
    """Trains a sharded model (``DistributedModelParallel`` of a ``ModelWithLoss``) as ``cfg.train`` says."""

    def __init__(self, *, cfg: Config, env: DistEnv, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, train_loader, eval_loader,
                 checkpointer: Checkpointer, logger: MetricsLogger, hooks: DebugHooks | None = None) -> None:
        self.cfg = cfg
        self.env = env
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.eval_loader = eval_loader
        self.checkpointer = checkpointer
        self.logger = logger
        self.hooks = hooks or DebugHooks(out_dir=cfg.train.out_dir, rank=env.rank, environ={})
        # the runner steps the optimizer through the non-finite guard (train.on_nonfinite)
        guarded = GuardedOptimizer(optimizer, skip=cfg.train.on_nonfinite == "skip_batch")
        self.nonfinite = NonFiniteGuard(guarded, device=env.device, learning_rates=learning_rates(cfg))
        self.runner = BatchRunner(model, guarded, env.device, pipelined=cfg.train.pipeline)
        self.state = TrainState(world_size=env.world_size)
        self.last_eval: EvalMetrics | None = None
        self._last_eval_step = -1
        self._last_checkpoint_step = -1
        self._row_keys: deque[list[str] | None] = deque()  # of batches read but not yet trained on
        self._window_loss = torch.zeros((), dtype=torch.float64, device=env.device)
        self._window_rows = torch.zeros((), dtype=torch.float64, device=env.device)
        self._train_seconds = 0.0
        self._lr = math.nan
        self._run_samples = 0
        self.progress = Progress(total=0, initial=0, enabled=False)
        self.meter = ThroughputMeter()
        self.doctor = make_doctor(cfg, rank=env.rank, total_steps=self.total_steps(), logger=logger)

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Trains to ``train.epochs`` / ``train.max_steps`` and returns the summary (also logged)."""
        self.resume()
        self.progress = Progress(total=self.total_steps(), initial=self.state.step,
                                 enabled=self.cfg.train.progress and self.env.rank == 0)
        while self.state.epoch < self.cfg.train.epochs and not self._reached_max_steps():
            self._train_epoch()
        if self.eval_loader is not None and self._last_eval_step != self.state.step:
            self.run_evaluation()
        if self._last_checkpoint_step != self.state.step:
            self.save_checkpoint()
        self.progress.close()
        summary = self.summary()
        self.logger.log("summary", self.state.step, summary)
        return summary

    def _train_epoch(self) -> None:
        if not self.state.epoch_started:  # a resumed run continues the restored loader position instead
            self.train_loader.set_epoch(self.state.epoch)
            self.state.epoch_started = True
        batches = self._fetch(self.train_loader)
        while not self._reached_max_steps():
            segment = itertools.islice(batches, self._steps_to_next_stop())
            if self._train_segment(segment) == 0:
                self.state.epoch += 1
                self.state.epoch_started = False
                return
            self._at_stop()

    def _train_segment(self, batches: Iterator) -> int:
        """Trains on ``batches`` until exhausted; returns the number of optimizer steps taken."""
        self.model.train()
        started = time.perf_counter()
        steps = 0
        for out in self.runner.run(batches):
            rows = self._row_keys.popleft()
            self._lr = self.scheduler.get_last_lr()[-1]  # the rate this step used (dense group: the last one)
            self.scheduler.step()
            self.state.step += 1
            steps += 1
            if self.nonfinite.after_step(self.state.step, out.loss):
                self._window_loss += out.loss.double() * out.mask.numel()
                self._window_rows += out.mask.sum().double()
                if self.doctor is not None:
                    self.doctor.on_step(out)
            elif self.env.rank == 0:
                write_line(f"step {self.state.step}: non-finite dense gradient norm, batch skipped "
                           f"({self.nonfinite.skipped} so far)")
            self.progress.update()
            self.hooks.after_step(step=self.state.step, epoch=self.state.epoch, rows=rows)
            if _due(self.state.step, self.cfg.train.log_every_steps):
                self._log_train()
        self._flush_window()
        self._train_seconds += time.perf_counter() - started
        return steps

    def _at_stop(self) -> None:
        step = self.state.step
        if self.eval_loader is not None and _due(step, self.cfg.train.eval_every_steps):
            self.run_evaluation()
        if _due(step, self.cfg.train.checkpoint_every_steps):
            self.save_checkpoint()
        self.meter.rate()  # restart the throughput window after the pause
        if self.doctor is not None:
            self.doctor.restart_window()

    # ---------------------------------------------------------------- bookkeeping
    def _fetch(self, loader) -> Iterator:
        """The loader's batches; with row logging on, each batch's row keys wait in a queue for its step. The
        doctor sees each batch and how long the loop waited for it."""
        batches = iter(loader)
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                return
            if self.doctor is not None:
                self.doctor.on_batch(batch, waited=time.perf_counter() - started, step=self.state.step)
            self._row_keys.append(row_keys(batch) if self.hooks.log_rows else None)
            yield batch

    def _steps_to_next_stop(self) -> int | None:
        step, train = self.state.step, self.cfg.train
        candidates = [every - step % every for every in (train.eval_every_steps, train.checkpoint_every_steps)
                      if every > 0]
        if train.max_steps > 0:
            candidates.append(train.max_steps - step)
        return min(candidates) if candidates else None

    def _reached_max_steps(self) -> bool:
        return 0 < self.cfg.train.max_steps <= self.state.step

    def total_steps(self) -> int:
        return total_steps(self.cfg.train, len(self.train_loader))

    def _flush_window(self) -> tuple[float, int]:
        """Sums the loss and row counts since the last flush over all ranks; returns (mean loss, rows). Stops the
        run first if any step so far was not finite (so no evaluation or checkpoint follows a bad step)."""
        self.nonfinite.check(newest_checkpoint=self.checkpointer.latest)
        totals = torch.stack([self._window_loss, self._window_rows])
        dist.all_reduce(totals)
        loss_sum, rows = totals.tolist()
        self._window_loss.zero_()
        self._window_rows.zero_()
        self.state.samples += int(rows)
        self._run_samples += int(rows)
        self.meter.add(int(rows))
        return (loss_sum / rows if rows else math.nan), int(rows)

    def _log_train(self) -> None:
        loss, _ = self._flush_window()
        values = {"epoch": self.state.epoch, "loss": loss, "samples_per_s": self.meter.rate(),
                  "samples": self.state.samples, "lr": self._lr, "skipped_batches": self.nonfinite.skipped}
        if self.doctor is not None:
            values.update(self.doctor.train_stats())
        self.progress.set_postfix(loss=loss, samples_per_s=values["samples_per_s"])
        self.logger.log("train", self.state.step, values)
        if self.doctor is not None:
            self.doctor.check_train(self.state.step, values)

    def run_evaluation(self) -> EvalMetrics:
        self.model.eval()
        try:
            metrics = evaluate(self.runner.run, self.eval_loader, max_batches=self.cfg.train.eval_max_batches)
        finally:
            self.model.train()
        self.last_eval = metrics
        self._last_eval_step = self.state.step
        values = {"split": self.cfg.data.eval_split, **metrics.as_dict()}
        self.logger.log("eval", self.state.step, values)
        if self.doctor is not None:
            self.doctor.check_eval(self.state.step, values)
        return metrics

    def summary(self) -> dict[str, Any]:
        values: dict[str, Any] = {"steps": self.state.step, "epochs_done": self.state.epoch,
                                  "samples": self.state.samples,
                                  "samples_per_s": self._run_samples / self._train_seconds
                                  if self._train_seconds > 0 else math.nan,
                                  "train_seconds": self._train_seconds, "skipped_batches": self.nonfinite.skipped}
        if self.last_eval is not None:
            values.update({f"eval_{k}": v for k, v in self.last_eval.as_dict().items()})
        return values

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": pack(self.scheduler.state_dict()),
            "trainer": pack(asdict(self.state)),
            f"rank{self.env.rank}": pack({"loader": self.train_loader.state_dict(),
                                          "rng": rng_state(self.env.device)}),
        }

    def save_checkpoint(self) -> None:
        from dlrm_scale.config_toml import to_toml  # the checkpoint records the configuration it belongs to

        config = to_toml(self.cfg, header=f"configuration of checkpoint step {self.state.step}").encode()
        path = self.checkpointer.save(self.state.step, self._checkpoint_state(), attachments={"config.toml": config})
        self._last_checkpoint_step = self.state.step
        if self.env.rank == 0:
            write_line(f"checkpoint: {path}")

    def resume(self) -> bool:
        """Restores the newest checkpoint under ``out_dir/checkpoints`` when ``train.resume`` is set."""
        path = self.checkpointer.latest() if self.cfg.train.resume else None
        if path is None:
            return False
        saved_ranks = {int(match.group(1)) for key in self.checkpointer.stored_keys(path)
                       if (match := re.fullmatch(r"rank(\d+)", key))}
        if saved_ranks != set(range(self.env.world_size)):
            raise RuntimeError(f"{path} was written by {len(saved_ranks)} ranks but this job has "
                               f"{self.env.world_size}: loader positions and RNG states are per rank, so resume "
                               f"on the same world size (or start a new out_dir)")
        ensure_optimizer_state(self.optimizer)
        state = self._checkpoint_state()
        self.checkpointer.load(path, state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(unpack(state["scheduler"]))
        self.state = TrainState(**unpack(state["trainer"]))
        mine = unpack(state[f"rank{self.env.rank}"])
        self.train_loader.load_state_dict(mine["loader"])
        set_rng_state(mine["rng"], self.env.device)
        self._last_checkpoint_step = self.state.step
        if self.env.rank == 0:
            write_line(f"resumed from {path} at step {self.state.step} (epoch {self.state.epoch})")
        return True


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0
