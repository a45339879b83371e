"""Scoring speed and quality of exported models per embedding quantization, beside the trained model's own forward.

Setup (skipped with ``--run-dir`` and ``--data``): ``dlrm-scale synth criteo`` rows from a hidden model (so AUC
means something), ``prep --dataset terabyte --encoding hash`` (the last day held out: ``test`` and ``val``), and
one epoch of ``tiny_cpu`` training on one process. Then, for ``--quantize none,fp16,int8,int4``:

- ``export`` the run, record the artifact's size;
- on the held-out ``val`` split (prepared shards), score every row with ``logits_prepared`` and report AUC and
  logloss and their change from the fp32 export, and the largest change of a click probability;
- time one thread (``torch.set_num_threads(1)``: rows/s per core) over the same batches of ``--batch-rows``:
  the export from prepared features, the export from raw parsed fields (preprocessing inside included), and, as
  the reference timed in the same run, the trained DLRM's eager forward (unsharded, TorchRec's
  ``EmbeddingBagCollection``: the trainer's eval forward without the process group). One untimed burn-in pass,
  then the best of ``--repeats`` passes.

Results go to ``benchmarks/results/predict_<date>_<host>.json`` and ``.md``.

Example::

    python benchmarks/bench_predict.py --rows 200000 --quantize none,fp16,int8,int4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows over 2 days (setup)")
    parser.add_argument("--max-ind-range", type=int, default=20_000, help="hash modulo = table rows (setup)")
    parser.add_argument("--run-dir", default="", help="an existing run folder instead of the setup")
    parser.add_argument("--data", default="", help="its prepared data (hash encoding, with a val split)")
    parser.add_argument("--quantize", default="none,fp16,int8,int4", help="comma-separated export variants")
    parser.add_argument("--batch-rows", type=int, default=4096, help="rows per scoring call")
    parser.add_argument("--max-rows", type=int, default=100_000, help="held-out rows scored (at most)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--work-dir", default="", help="where the setup and exports go (default: a temp dir)")
    parser.add_argument("--out", default=str(RESULTS), help="results directory")
    args = parser.parse_args(argv)
    if bool(args.run_dir) != bool(args.data):
        parser.error("--run-dir and --data go together")
    if args.rows < 1000 or args.batch_rows < 1 or args.repeats < 1 or args.max_rows < 1:
        parser.error("--rows >= 1000; --batch-rows, --repeats and --max-rows positive")
    return args


def _cli(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-m", "dlrm_scale.cli", *args], cwd=REPO, env=env, check=True)


def setup(work: Path, rows: int, max_ind_range: int) -> tuple[Path, Path]:
    """Synthetic raw days -> prepared hash data -> a one-process tiny_cpu run; returns (run dir, data dir)."""
    _cli("synth", "criteo", "--rows", str(rows), "--days", "2", "--out", str(work / "raw"))
    _cli("prep", "criteo", "--input", str(work / "raw" / "day_0"), str(work / "raw" / "day_1"), "--out",
         str(work / "data"), "--dataset", "terabyte", "--encoding", "hash", "--max-ind-range", str(max_ind_range),
         "--workers", "1", "--no-progress")
    settings = [f"data.path={work / 'data'}", f"data.max_ind_range={max_ind_range}", "train.epochs=1",
                "train.progress=false", "train.log_every_steps=1000", f"train.out_dir={work / 'run'}"]
    _cli("train", "--config", "tiny_cpu", *[arg for s in settings for arg in ("--set", s)])
    return work / "run", work / "data"


def held_out(data: Path, max_rows: int):
    """``labels (N,)``, ``dense (N, 13) float32``, ``ids (N, 26) int64`` of split ``val``, and raw fields of the
    same shape to time the raw path: ``dense_raw`` = expm1 of the dense values (log1p's inverse, rounded; exact
    for small counts only, which does not matter for timing), ``sparse_raw`` = the ids (hash ids below
    max_ind_range are their own raw values)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dlrm_scale.config import dense_feature_names, sparse_feature_names
    from dlrm_scale.data.manifest import Manifest

    manifest = Manifest.load(data)
    table = pa.concat_tables([pq.read_table(data / shard.path) for shard in manifest.split("val").shards])
    table = table.slice(0, max_rows)
    labels = table.column("label").to_numpy().astype(np.float32)
    dense = np.stack([table.column(n).to_numpy() for n in dense_feature_names(13)], 1)
    ids = np.stack([table.column(n).to_numpy() for n in sparse_feature_names(26)], 1)
    dense_raw = np.round(np.expm1(dense.astype(np.float64)))
    return labels, dense, ids, dense_raw, ids.copy()


def best_rate(call, batches, repeats: int) -> float:
    """Rows per second of ``call(*batch)`` over ``batches``: one burn-in pass, then the best of ``repeats``."""
    import torch

    rows = sum(len(batch[0]) for batch in batches)
    with torch.inference_mode():
        for batch in batches:
            call(*batch)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                call(*batch)
            best = min(best, time.perf_counter() - start)
    return rows / best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks.report import machine_meta, write_results

    meta = machine_meta()
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from dlrm_scale.checkpoint import Checkpointer
    from dlrm_scale.config import load_config, sparse_feature_names
    from dlrm_scale.serving.artifact import MODEL_FILE, load_model
    from dlrm_scale.serving.export import export_model, load_unsharded
    from dlrm_scale.train.evaluate import binary_metrics

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        run_dir, data = (Path(args.run_dir), Path(args.data)) if args.run_dir else \
            setup(work, args.rows, args.max_ind_range)
        labels, dense, ids, dense_raw, sparse_raw = held_out(data, args.max_rows)
        torch.set_num_threads(1)
        batches = [(torch.from_numpy(dense[i:i + args.batch_rows]), torch.from_numpy(ids[i:i + args.batch_rows]))
                   for i in range(0, len(ids), args.batch_rows)]
        raw_batches = [(torch.from_numpy(dense_raw[i:i + args.batch_rows]),
                        torch.from_numpy(sparse_raw[i:i + args.batch_rows]))
                       for i in range(0, len(ids), args.batch_rows)]

        cfg = load_config(str(run_dir / "config.toml"))
        checkpointer = Checkpointer(run_dir / "checkpoints")
        eager = load_unsharded(cfg, _sizes(data, cfg), checkpointer, checkpointer.latest())
        names = sparse_feature_names(ids.shape[1])

        def eager_forward(dense_batch, ids_batch):
            features = KeyedJaggedTensor(keys=names, values=ids_batch.t().reshape(-1),
                                         lengths=torch.ones(ids_batch.numel(), dtype=torch.int32))
            return eager(dense_batch, features)

        eager_rate = best_rate(eager_forward, batches, args.repeats)
        results, reference = [], None
        for variant in args.quantize.split(","):
            model_dir = work / f"model_{variant}"
            export_model(run_dir, model_dir, quantize=variant, data_dir=data, force=True)
            model, _ = load_model(model_dir)
            with torch.inference_mode():
                logits = torch.cat([model.logits_prepared(*batch) for batch in batches])
            metrics = binary_metrics(logits, torch.from_numpy(labels))
            probabilities = torch.sigmoid(logits.double())
            if reference is None:
                reference = (metrics, probabilities)
            record = {
                "quantize": variant, "rows": len(labels), "size_mib": (model_dir / MODEL_FILE).stat().st_size / 2**20,
                "prepared_rows_per_s": best_rate(model.logits_prepared, batches, args.repeats),
                "raw_rows_per_s": best_rate(model.forward, raw_batches, args.repeats),
                "eager_rows_per_s": eager_rate, "auc": metrics.auc, "logloss": metrics.logloss,
                "auc_change": metrics.auc - reference[0].auc, "logloss_change": metrics.logloss - reference[0].logloss,
                "max_probability_change": (probabilities - reference[1]).abs().max().item(),
            }
            record["vs_eager"] = record["prepared_rows_per_s"] / eager_rate
            results.append(record)
            print(f"{variant:>5}: {record['size_mib']:.2f} MiB, {record['prepared_rows_per_s']:,.0f} rows/s/core "
                  f"prepared, {record['raw_rows_per_s']:,.0f} raw, eager {eager_rate:,.0f}; AUC {metrics.auc:.5f} "
                  f"({record['auc_change']:+.2e}), logloss {metrics.logloss:.5f} ({record['logloss_change']:+.2e})")

    lines = [f"# Exported-model scoring ({meta['date']}, {meta['cpu']}, {meta['cpu_count']} CPUs, load "
             f"{meta['loadavg']})", "",
             f"{len(labels):,} held-out rows (split val), batches of {args.batch_rows}, one thread; eager = the "
             "trained DLRM's forward (unsharded TorchRec EBC) on the same batches in the same run.", "",
             "| quantize | artifact MiB | prepared rows/s/core | raw rows/s/core | eager rows/s/core | vs eager | "
             "AUC | ΔAUC | logloss | Δlogloss | max Δp |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['quantize']} | {r['size_mib']:.2f} | {r['prepared_rows_per_s']:,.0f} | "
                     f"{r['raw_rows_per_s']:,.0f} | {r['eager_rows_per_s']:,.0f} | {r['vs_eager']:.2f}x | "
                     f"{r['auc']:.5f} | {r['auc_change']:+.2e} | {r['logloss']:.5f} | {r['logloss_change']:+.2e} | "
                     f"{r['max_probability_change']:.2e} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(args.out, "predict", meta, results, markdown)
    return 0


def _sizes(data: Path, cfg) -> list[int]:
    from dlrm_scale.data.manifest import Manifest, check_compatible

    return check_compatible(Manifest.load(data), cfg.data)


if __name__ == "__main__":
    sys.exit(main())
