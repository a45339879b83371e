"""Diagnose a run from its folder: the training doctor's checks over the run's logged metrics.

Reads ``DIR/config.toml`` and ``DIR/metrics.jsonl`` (both written by ``dlrm-scale train``) and prints the same
one-line findings the doctor printed during training (see ``dlrm_scale.train.doctor``): non-finite loss, loss at
the label entropy, collapsed predictions, AUC at chance, ids out of range or rows never touched, dense features
out of range, loader-bound. Exit status 0 when nothing is found, 1 when something is, 2 when DIR is not a run.

    dlrm-scale doctor --run-dir runs/criteo_terabyte
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from dlrm_scale.config import ConfigError, load_config

if TYPE_CHECKING:
    from dlrm_scale.train.doctor import Finding


class RunFolderError(ValueError):
    """The folder is not a run folder (no ``config.toml`` / ``metrics.jsonl``) or its metrics are unreadable."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, type=Path, metavar="DIR",
                        help="the run folder (train.out_dir): holds config.toml and metrics.jsonl")


def read_records(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunFolderError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
        if not isinstance(record, dict) or "kind" not in record or "step" not in record:
            raise RunFolderError(f"{path}:{number}: a metrics record needs 'kind' and 'step'")
        records.append(record)
    return records


def diagnose(run_dir: Path) -> tuple[list[Finding], list[dict]]:
    """The findings for the run in ``run_dir``, in the order the doctor makes them, and the records read."""
    from dlrm_scale.train.doctor import BATCH_CODES, Checks, Finding  # imports torch: not at --help time
    config_path, metrics_path = run_dir / "config.toml", run_dir / "metrics.jsonl"
    for path in (config_path, metrics_path):
        if not path.is_file():
            raise RunFolderError(f"{path} does not exist: --run-dir must be a run folder written by "
                                 f"dlrm-scale train (its train.out_dir)")
    try:
        cfg = load_config(str(config_path))
    except ConfigError as exc:
        raise RunFolderError(f"{config_path}: {exc}") from None
    records = read_records(metrics_path)
    summaries = [r for r in records if r["kind"] == "summary" and isinstance(r.get("steps"), int)]
    total_steps = summaries[-1]["steps"] if summaries else max((r["step"] for r in records), default=0)
    findings: list[Finding] = []
    checks = Checks(cfg, total_steps=total_steps, report=findings.append)
    for record in records:
        values = {key: (math.nan if value is None else value) for key, value in record.items()}
        if record["kind"] == "train":
            checks.train(record["step"], values)
        elif record["kind"] == "eval":
            checks.eval(record["step"], values)
        elif record["kind"] == "doctor" and record.get("code") in BATCH_CODES - checks.reported:
            # findings from sampled batches: the batches are not in the folder, their verdicts are
            checks.reported.add(record.get("code"))
            findings.append(Finding(code=str(record.get("code")), step=record["step"],
                                    message=str(record.get("message"))))
    return findings, records


def run(args: argparse.Namespace) -> int:
    findings, records = diagnose(args.run_dir)
    for finding in findings:
        print(finding.message)
    kinds = {kind: sum(r["kind"] == kind for r in records) for kind in ("train", "eval")}
    if findings:
        print(f"doctor: {len(findings)} problem(s) in {args.run_dir} ({kinds['train']} train and {kinds['eval']} "
              f"eval records); README section 'When AUC is 0.5' explains each")
        return 1
    print(f"doctor: nothing wrong found in {args.run_dir} ({kinds['train']} train and {kinds['eval']} eval records)")
    return 0
