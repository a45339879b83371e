"""Test hooks, switched on by environment variables only (never by the run config):

- ``DLRM_SCALE_DEBUG_ROWS=1``: after every optimizer step each rank appends
  ``{"attempt", "rank", "step", "epoch", "rows": [row key, ...]}`` to ``<out_dir>/debug/rows-rank<r>.jsonl``,
  one key per real row of the batch just trained on (a hash of its dense values and sparse ids). The fault
  tolerance test uses it to prove that a restarted job trained on every row exactly once.
- ``DLRM_SCALE_DEBUG_KILL=<rank>:<step>``: that rank SIGKILLs itself right after the optimizer step ``<step>``,
  on the first attempt only (torchrun's ``TORCHELASTIC_RESTART_COUNT`` is 0), to simulate a lost machine.

``attempt`` is ``TORCHELASTIC_RESTART_COUNT`` (0 outside torchrun's restarts).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import torch


def row_keys(batch) -> list[str]:
    """A content hash per real row of a CPU ``batch`` (B rows): its dense values (B, 13) and its ids in every
    sparse feature. Rows of synthetic or prepared data are distinct with overwhelming probability."""
    dense = batch.dense_features.detach().cpu().contiguous()
    ids_per_feature = []
    for key in batch.sparse_features.keys():
        jagged = batch.sparse_features[key]
        ids_per_feature.append(torch.split(jagged.values().cpu(), jagged.lengths().cpu().tolist()))
    keys = []
    for row in torch.nonzero(batch.mask.cpu() > 0).flatten().tolist():
        digest = hashlib.blake2b(dense[row].numpy().tobytes(), digest_size=12)
        for ids in ids_per_feature:
            digest.update(b"|" + ids[row].numpy().tobytes())
        keys.append(digest.hexdigest())
    return keys


class DebugHooks:
    """The hooks above for one rank; inert when the variables are unset."""

    def __init__(self, *, out_dir: str | Path, rank: int, environ: dict[str, str] | None = None) -> None:
        environ = dict(os.environ if environ is None else environ)
        self.rank = rank
        self.attempt = int(environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        self.log_rows = environ.get("DLRM_SCALE_DEBUG_ROWS") == "1"
        self._rows_path = Path(out_dir) / "debug" / f"rows-rank{rank}.jsonl"
        self._kill_step = None
        kill = environ.get("DLRM_SCALE_DEBUG_KILL", "")
        if kill:
            kill_rank, kill_step = (int(part) for part in kill.split(":"))
            if kill_rank == rank and self.attempt == 0:
                self._kill_step = kill_step

    def after_step(self, *, step: int, epoch: int, rows: list[str] | None) -> None:
        if self.log_rows and rows is not None:
            self._rows_path.parent.mkdir(parents=True, exist_ok=True)
            with self._rows_path.open("a", encoding="utf-8") as file:
                file.write(json.dumps({"attempt": self.attempt, "rank": self.rank, "step": step, "epoch": epoch,
                                       "rows": rows}) + "\n")
        if self._kill_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
