"""Headers and files for the CPU-side benchmarks' results. Imports nothing heavy (bench_prep's parent process
stays free of torch so that it measures only its children)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "unknown CPU"."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine_meta() -> dict:
    """When and where a run happens: date, host, CPU model and count, and the load average, read now (call it
    before measuring: results tables print it as the load at the start)."""
    return {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "host": socket.gethostname(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def write_results(out: str | Path, prefix: str, meta: dict, results: list[dict], markdown: str) -> Path:
    """Writes ``OUT/<prefix>_<date>_<host>.json`` ({"meta", "results"}) and ``.md``; returns the common stem."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", meta["host"])
    stem = out / f"{prefix}_{dt.date.today().isoformat()}_{host}"
    stem.with_name(stem.name + ".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    stem.with_name(stem.name + ".md").write_text(markdown)
    print(f"wrote {stem}.json and .md")
    return stem
