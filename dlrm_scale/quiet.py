"""Known-harmless library warnings, each listed with why it is harmless, hidden once per process.

A training job printed about 28 such lines, repeated by every rank, one of them saying "otherwise, the job will
fail" while the job was fine; real warnings drowned among them. Each entry below names a message we have read
and judged; anything not listed still prints. ``install()`` is idempotent: call it first in every command that
builds a model (every rank runs it, so nothing is printed per rank).
"""

from __future__ import annotations

import logging
import warnings

# (warnings category, message regex, why it is harmless here)
HARMLESS_WARNINGS: list[tuple[type[Warning], str, str]] = [
    (FutureWarning, r".*HeuristicalStorageReservation is known to cause issues",
     "TorchRec's default storage reservation; it over-estimates dense memory only in planner dry runs, and our "
     "plans are checked by the sharding tests"),
    (FutureWarning, r"`broadcast_buffers` is deprecated",
     "raised inside TorchRec's own DistributedDataParallel wrapper, not by our code; behaviour is unchanged"),
    (FutureWarning, r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated",
     "called by TorchRec's sharded embedding collectives; the renamed functions do the same thing"),
    (FutureWarning, r"Please use DTensor instead and we are deprecating ShardedTensor",
     "DCP's planner notes that TorchRec's sharded state dicts use ShardedTensor; saving and loading them is exact "
     "(tests/train/test_distributed.py)"),
    (UserWarning, r"`_get_pg_default_device` will be deprecated",
     "torchrec 1.6.1's ShardingEnv asks torch for the process group's device to build a device mesh; the call "
     "still answers, and torchrec 1.8 no longer makes it"),
    (UserWarning, r"Multiple backends are registered with this ProcessGroup",
     "the same torchrec 1.6.1 call on a CPU (gloo) group: torch answers cpu, which is the group's device"),
]

# (logger name, message substring, why it is harmless here)
HARMLESS_LOGS: list[tuple[str, str, str]] = [
    ("torchrec.distributed.planner.types", "topology was constructed directly",
     "we build Topology with explicit world size, device and capacities (sharding/planner.py), which is what "
     "TopologyFactory would resolve; the job does not fail"),
    ("torchrec.distributed.planner.storage_reservations", "known issue with TorchRec's dense tensor size",
     "the same dry-run over-estimate as the HeuristicalStorageReservation warning"),
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true",
     "an API note for callers of is_fx_tracing (TorchRec's modules), printed on their first forward"),
    ("", "_fbgemm_torch_compat_table has no entry",
     "fbgemm-gpu 1.6.0 (the GPU machine's release) has no row for itself in its table of tested torch releases; "
     "its operators load and the whole suite passes on that stack (torch 2.11)"),
    ("", "Sharding spec not found",
     "data-parallel tables have no sharding spec by design; TorchRec's plan validation notes each one"),
]

_installed = False


class _DropMessages(logging.Filter):
    def __init__(self, fragments: list[str]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def install() -> None:
    """Hides the listed warnings and log records in this process (once; later calls do nothing)."""
    global _installed
    if _installed:
        return
    _installed = True
    for category, pattern, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    by_logger: dict[str, list[str]] = {}
    for name, fragment, _why in HARMLESS_LOGS:
        by_logger.setdefault(name, []).append(fragment)
    for name, fragments in by_logger.items():
        # each message is logged on the named logger itself (the root one for ""), where a filter sees it
        logging.getLogger(name or None).addFilter(_DropMessages(fragments))


def quiet_planner() -> None:
    """For commands that only plan: the warnings above, plus TorchRec's planner chatter below ERROR."""
    install()
    for name in ("torchrec.distributed.planner.types", "torchrec.distributed.planner.storage_reservations"):
        logging.getLogger(name).setLevel(logging.ERROR)
