"""Known-harmless library warnings are hidden, each with a reason; any other warning still shows."""

from __future__ import annotations

import subprocess
import sys

from dlrm_scale.quiet import HARMLESS_LOGS, HARMLESS_WARNINGS

CODE = """
import logging, warnings
from dlrm_scale.quiet import install
install(); install()  # idempotent
warnings.warn("`broadcast_buffers` is deprecated. Use `forward_sync_buffers` instead.", FutureWarning)
warnings.warn("something new", FutureWarning)
logging.getLogger("torchrec.distributed.planner.types").warning(
    "The topology was constructed directly rather than via TopologyFactory ...; otherwise, the job will fail.")
logging.getLogger("torchrec.distributed.planner.types").warning("a planner warning we have not judged")
logging.warning("Sharding spec not found for a.b")
"""


def test_listed_warnings_are_hidden_and_others_still_print() -> None:
    assert all(len(why) > 20 for *_, why in HARMLESS_WARNINGS + HARMLESS_LOGS), "every entry says why"
    err = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stderr
    assert "something new" in err and "a planner warning we have not judged" in err
    assert "broadcast_buffers" not in err and "the job will fail" not in err and "Sharding spec" not in err
