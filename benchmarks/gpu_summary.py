"""The one summary table of ``gpu_check.sh``: each stage's exit status and time, and the figures its result files
hold (the dot kernels' headline and chosen configs, training ratios per preset, loader rows/s). Reads only what
the stages wrote; a stage that wrote nothing shows its status alone.

Usage: ``python benchmarks/gpu_summary.py RESULTS_DIR`` (prints the table and writes ``RESULTS_DIR/summary.md``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stage_rows(results: Path) -> list[list[str]]:
    """``stages.tsv``: one ``name exit_status seconds limit`` line per stage, in order."""
    rows = []
    path = results / "stages.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, seconds, limit = line.split("\t")
        verdict = {"0": "ok", "124": "TIMED OUT", "137": "TIMED OUT", "skipped": "SKIPPED (budget spent)"}.get(
            status, f"FAILED ({status})")
        rows.append([name, verdict, f"{seconds} / {limit} s"])
    return rows


def figures(results: Path) -> dict[str, list[str]]:
    """Per stage name, the lines worth a glance from its result files."""
    found: dict[str, list[str]] = {}
    for path in sorted(results.glob("interaction_*.json")):
        data = _load(path)
        lines = list(data.get("headline", []))
        lines += [f"{r['implementation']} {r['benchmark']} {r['dtype']}: {r['median_ms']:.3f} ms"
                  for r in data.get("records", []) if "(chosen)" in r.get("implementation", "") and r.get("median_ms")]
        wrong = [r for r in data.get("records", []) if str(r.get("status", "")).startswith("WRONG")]
        lines += [f"WRONG: {r['implementation']} {r['benchmark']} {r['dtype']}" for r in wrong]
        found.setdefault("interaction", []).extend(lines)
    for path in sorted(results.glob("train_*.json")):
        for r in _load(path).get("records", []):
            ratio = r.get("ratio_to_reference")
            found.setdefault("train", []).append(
                f"{r['preset']} {r['implementation']}: {r['samples_per_s_per_rank']:,.0f} samples/s per rank"
                + (f" ({ratio:.2f}x TorchRec)" if ratio and r["implementation"] != "torchrec" else ""))
    for path in sorted(results.glob("loader_*.json")):
        for r in _load(path).get("results", []):
            rate = r.get("rows_per_s")
            if rate:
                found.setdefault("loader", []).append(
                    ", ".join(f"{k} {r[k]}" for k in ("batch_size", "workers", "ranks", "device") if k in r)
                    + f": {rate:,.0f} rows/s")
    return found


def summary(results: Path) -> str:
    table = ["| stage | status | time | figures |", "| --- | --- | --- | --- |"]
    extra = figures(results)
    for name, verdict, seconds in stage_rows(results):
        lines = extra.get(name.split(":")[0], [])
        table.append(f"| {name} | {verdict} | {seconds} | {'<br>'.join(lines) if lines else '-'} |")
    return "\n".join(table) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    text = summary(args.results)
    (args.results / "summary.md").write_text(f"# GPU check: {args.results.name}\n\n{text}")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
