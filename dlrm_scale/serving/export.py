"""Turn a run's checkpoint into a self-contained scoring model: ``dlrm-scale export``.

Reads only the run folder (``config.toml``, ``checkpoints/``) and, for the ``vocab`` encoding, the prepared data's
vocabularies (``data.path``, or ``--data``). Writes MODEL_DIR (see :mod:`dlrm_scale.serving.artifact`):
``model.pt``, a TorchScript archive of :class:`~dlrm_scale.serving.module.ServingDLRM` (raw Criteo fields ->
prep's encoding -> embeddings -> logits), and ``manifest.json``.

Why TorchScript: it is TorchRec's own inference path (``torchrec.inference``: quantize the embedding modules,
FX-trace, ``torch.jit.script``), it carries the preprocessing as compiled code next to the weights, and the
archive loads with ``torch.jit.load`` in a process that has only torch and torchrec/fbgemm installed; the tests
export and load it on torch 2.13/torchrec 1.8.0 and torch 2.11/torchrec 1.6.1 (a file written under 2.13 also
loaded and scored under 2.11 in a manual check). ``torch.export`` was not adopted: a KeyedJaggedTensor model goes through TorchRec's separate IR
serialization (``torchrec.ir``) for its embedding modules, a newer path than the TorchScript one and not tried
here; ``torch.package`` would pickle Python code, which the project never loads.

Gathering, in bounded memory: the model is built unsharded on the CPU (tables on ``meta``) and each table is
read alone by DCP, which reshards row-wise or table-wise shards of any world size. Unquantized, each table is read
straight into its place in the model, so the tables are held once. Quantized (``--quantize fp16|int8|int4``,
row-wise, TorchRec's ``quantize_embeddings`` -> ``torchrec.quant``'s ``EmbeddingBagCollection`` on fbgemm's TBE
kernels), each fp32 table is read into a one-table collection, quantized by TorchRec and copied into its place in
the quantized collection, so memory holds the quantized tables (2 bytes per value for fp16; 1 or 0.5 plus a
per-row fp16 scale and bias for int8/int4; rows padded to 16 bytes by fbgemm) plus one fp32 table.

Example::

    dlrm-scale export --run-dir quickstart_out/run --out quickstart_out/model --quantize int8
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

QUANTIZE = ("none", "fp16", "int8", "int4")


class ExportError(ValueError):
    """The run folder, checkpoint or data cannot be exported (named with the fix)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, metavar="DIR",
                        help="the run folder `train` wrote (config.toml, checkpoints/)")
    parser.add_argument("--checkpoint", default="", metavar="CKPT",
                        help="checkpoint directory; empty: the one <run-dir>/checkpoints/latest names")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="directory to write the model to (new)")
    parser.add_argument("--quantize", choices=QUANTIZE, default="none",
                        help="embedding rows as fp32 (none), fp16, or row-wise int8 / int4 (TorchRec's quantized "
                             "embedding modules); the MLPs stay fp32")
    parser.add_argument("--data", default="", metavar="DIR",
                        help="prepared data directory (its manifest and vocabularies); empty: the run's data.path")
    parser.add_argument("--force", action="store_true", help="replace MODEL_DIR if it exists")


def run(args: argparse.Namespace) -> int:
    manifest = export_model(args.run_dir, args.out, checkpoint=args.checkpoint or None, quantize=args.quantize,
                            data_dir=args.data or None, force=args.force)
    size = sum((Path(args.out) / name).stat().st_size for name in manifest["files"])
    print(f"exported {manifest['checkpoint']} -> {args.out} ({args.quantize}, {size / 2**20:.2f} MiB, "
          f"check: max |logit - fp32 model| = {manifest['export_check']['max_abs_logit_diff']:.3g} on "
          f"{manifest['export_check']['rows']} random rows)")
    return 0


def _load_run(run_dir: Path, checkpoint: str | Path | None):
    from dlrm_scale.checkpoint import Checkpointer
    from dlrm_scale.config import load_config

    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise ExportError(f"{run_dir}: no config.toml; pass the folder `dlrm-scale train` wrote (train.out_dir)")
    cfg = load_config(str(config_path))
    checkpointer = Checkpointer(run_dir / "checkpoints")
    path = Path(checkpoint) if checkpoint else checkpointer.latest()
    if path is None:
        raise ExportError(f"{run_dir / 'checkpoints'}: no complete checkpoint; train longer or pass --checkpoint")
    if not (path / ".metadata").is_file():
        raise ExportError(f"{path}: not a complete checkpoint (no .metadata)")
    return cfg, checkpointer, path


def _data_contract(cfg, data_dir: Path | None) -> tuple[list[int], list[Any], list[Any]]:
    """Table sizes, and for the vocab encoding each column's ``(sorted values, their ids)`` from the data."""
    import numpy as np

    from dlrm_scale.config import sparse_feature_names
    from dlrm_scale.data.manifest import MANIFEST_NAME, Manifest, check_compatible

    if data_dir is not None and (data_dir / MANIFEST_NAME).is_file():
        sizes = check_compatible(Manifest.load(data_dir), cfg.data)
    elif cfg.data.cardinalities:
        sizes = list(cfg.data.cardinalities)
    else:
        raise ExportError(f"no table sizes: {data_dir}/manifest.json is missing and data.cardinalities is empty; "
                          "pass --data DIR (the prepared data the run trained on)")
    if cfg.data.encoding != "vocab":
        return sizes, [], []
    if data_dir is None:
        raise ExportError("encoding 'vocab': the vocabularies are under the prepared data; pass --data DIR")
    sorted_values, sorted_ids = [], []
    for name, size in zip(sparse_feature_names(len(sizes)), sizes):
        column = data_dir / "vocab" / name
        try:
            values = np.load(column / "sorted_values.npy", allow_pickle=False)
            ids = np.load(column / "sorted_ids.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ExportError(f"{column}: vocabulary unreadable ({exc}); pass --data DIR of `prep --encoding "
                              "vocab`") from exc
        if len(values) != len(ids) or (len(ids) and int(ids.max()) >= size):
            raise ExportError(f"{column}: vocabulary of {len(values)} values does not fit table t_{name} "
                              f"({size} rows)")
        sorted_values.append(np.ascontiguousarray(values, dtype=np.int64))
        sorted_ids.append(np.ascontiguousarray(ids, dtype=np.int64))
    return sizes, sorted_values, sorted_ids


def _read(checkpointer, path: Path, state: dict) -> None:
    """Fills ``state`` (names of the trainer's ModelWithLoss, without the leading "model.") from the checkpoint."""
    import torch

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # world of one: intended
            checkpointer.load(path, {"model": state})
    except RuntimeError as exc:
        raise ExportError(f"{path}: cannot read the model from the checkpoint ({str(exc).splitlines()[0]})") from exc


def load_unsharded(cfg, sizes: list[int], checkpointer, path: Path, *, tables: bool = True):
    """The trained DLRM, unsharded on the CPU, its tensors filled from the checkpoint one table at a time.
    ``tables=False`` reads only the dense part and leaves the embedding tables on ``meta`` (see
    :func:`load_quantized_tables`)."""
    from dlrm_scale.models.dlrm import build_dlrm
    from dlrm_scale.train.model_with_loss import ModelWithLoss

    model_cfg = copy.deepcopy(cfg.model)
    if "kernel" in model_cfg.interaction.params:
        # dot's Triton kernels serve CUDA training; the export is traced on the CPU through the plain ops, which
        # compute the same function (and need no Triton where the model is loaded)
        model_cfg.interaction.params["kernel"] = "torch"
    model = build_dlrm(model_cfg, sizes, num_dense=cfg.data.num_dense, device="meta")
    if tables:
        model.sparse_arch.embedding_bag_collection.to_empty(device="cpu")
    # The checkpoint holds the trainer's ModelWithLoss under "model": its names are "model.<DLRM name>".
    state = ModelWithLoss(model).state_dict()
    stored = checkpointer.stored_keys(path)
    absent = sorted(f"model.{key}" for key in state if f"model.{key}" not in stored)
    if absent:
        raise ExportError(f"{path}: checkpoint does not hold {absent[:3]}{' …' if len(absent) > 3 else ''}; "
                          "is it from this run (model shape, table sizes)?")
    table_keys = [key for key in state if ".embedding_bags." in key]
    _read(checkpointer, path, {key: value for key, value in state.items() if key not in table_keys})
    for key in table_keys if tables else []:
        _read(checkpointer, path, {key: state[key]})
    return model.eval()


def load_quantized_tables(model, checkpointer, path: Path, quantize: str, probe_ids):
    """The DLRM's tables as ``torchrec.quant``'s ``EmbeddingBagCollection`` of ``quantize`` rows, streamed: each
    fp32 table is read alone, quantized by TorchRec (``quantize_embeddings`` on a one-table collection) and copied
    into its place in the quantized collection, so memory holds the quantized tables plus one fp32 table.
    Also returns the fp32 rows of ``probe_ids (B, F)`` as ``(B, F, D)``, the reference of the export check."""
    import dataclasses as dc

    import torch
    from torch import nn
    from torchrec.inference.modules import quantize_embeddings
    from torchrec.modules.embedding_configs import DataType
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection

    dtype, data_type = {"fp16": (torch.float16, DataType.FP16), "int8": (torch.qint8, DataType.INT8),
                        "int4": (torch.quint4x2, DataType.INT4)}[quantize]
    configs = model.sparse_arch.embedding_bag_collection.embedding_bag_configs()
    cpu = torch.device("cpu")
    quantized = QuantEmbeddingBagCollection([dc.replace(c, data_type=data_type) for c in configs], False, cpu)
    target = quantized.state_dict()
    probe_rows = []
    for column, config in enumerate(configs):
        holder = nn.Module()
        holder.embeddings = EmbeddingBagCollection(tables=[config], device=torch.device("meta"))
        holder.embeddings.to_empty(device=cpu)
        weight = holder.embeddings.embedding_bags[config.name].weight
        _read(checkpointer, path, {f"model.sparse_arch.embedding_bag_collection.embedding_bags.{config.name}.weight":
                                   weight})
        probe_rows.append(weight.detach()[probe_ids[:, column]])
        quantize_embeddings(holder, dtype=dtype, inplace=True)
        key = f"embedding_bags.{config.name}.weight"
        with torch.no_grad():
            target[key].copy_(holder.embeddings.state_dict()[key])
    return quantized.eval(), torch.stack(probe_rows, dim=1)


def build_serving_module(model, embeddings, cfg, sizes: list[int], *, vocab_sorted=(), vocab_ids=()):
    """The scripted :class:`ServingDLRM` of an unsharded, loaded DLRM's dense part and ``embeddings`` (its own
    ``EmbeddingBagCollection`` or the quantized one of :func:`load_quantized_tables`)."""
    import torch
    import torchrec.fx

    from dlrm_scale.config import sparse_feature_names
    from dlrm_scale.serving.module import DenseArch, ServingDLRM

    names = sparse_feature_names(len(sizes))
    dim = cfg.model.embedding_dim
    dense_arch = DenseArch(model.bottom_mlp, model.interaction, model.top_mlp).eval()
    example = (torch.rand(3, cfg.data.num_dense), torch.rand(3, len(sizes), dim))
    with warnings.catch_warnings():
        # The interaction's shape checks become constants of the trace: true for every batch size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(dense_arch, example, check_trace=False)
    serving = ServingDLRM(
        embeddings=torchrec.fx.symbolic_trace(embeddings), dense_arch=traced, sparse_names=names,
        cardinalities=sizes, embedding_dim=dim, num_dense=cfg.data.num_dense, encoding=cfg.data.encoding,
        max_ind_range=cfg.data.max_ind_range, dense_transform=cfg.data.dense_transform,
        vocab_sorted=[torch.from_numpy(v) for v in vocab_sorted], vocab_ids=[torch.from_numpy(i) for i in vocab_ids])
    for parameter in serving.parameters():
        parameter.requires_grad_(False)  # a scoring model: no autograd graph behind its outputs
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TorchScript will treat type annotations")  # torchrec's
        return torch.jit.script(serving.eval())


def _random_prepared(sizes: list[int], num_dense: int, rows: int = 64):
    import torch

    generator = torch.Generator().manual_seed(0)
    dense = torch.rand(rows, num_dense, generator=generator) * 5
    ids = torch.stack([torch.randint(0, size, (rows,), generator=generator) for size in sizes], dim=1)
    return dense, ids


def export_model(run_dir: str | Path, out: str | Path, *, checkpoint: str | Path | None = None,
                 quantize: str = "none", data_dir: str | Path | None = None, force: bool = False) -> dict[str, Any]:
    """Writes MODEL_DIR from a run folder; returns its manifest. Refuses an existing MODEL_DIR unless ``force``."""
    import numpy as np
    import torch
    import torchrec
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from dlrm_scale.config import dense_feature_names, sparse_feature_names
    from dlrm_scale.serving.artifact import FORMAT_VERSION, MODEL_FILE, VOCAB_DIR, sha256_file, write_manifest
    from dlrm_scale.serving.module import DenseArch

    if quantize not in QUANTIZE:
        raise ExportError(f"quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ExportError(f"{out}: exists and is not empty; choose a new --out or pass --force")
        shutil.rmtree(out)
    cfg, checkpointer, path = _load_run(run_dir, checkpoint)
    if cfg.data.multi_hot_sizes:
        raise ExportError("multi-hot features (data.multi_hot_sizes) are not supported by export; Criteo is one-hot")
    data = Path(data_dir) if data_dir else (Path(cfg.data.path) if cfg.data.path else None)
    sizes, vocab_sorted, vocab_ids = _data_contract(cfg, data)
    dense, ids = _random_prepared(sizes, cfg.data.num_dense)
    names = sparse_feature_names(len(sizes))
    # torch.fx logs that is_fx_tracing also covers torch.export each time torchrec asks: not ours to act on
    fx_log = logging.getLogger("torch.fx._symbolic_trace")
    level = fx_log.level
    fx_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            model = load_unsharded(cfg, sizes, checkpointer, path, tables=quantize == "none")
            if quantize == "none":
                embeddings = model.sparse_arch.embedding_bag_collection
                reference = model(dense, KeyedJaggedTensor(keys=names, values=ids.t().reshape(-1),
                                                           lengths=torch.ones(ids.numel(), dtype=torch.int32)))
            else:
                embeddings, probe_rows = load_quantized_tables(model, checkpointer, path, quantize, ids)
                reference = DenseArch(model.bottom_mlp, model.interaction, model.top_mlp)(dense, probe_rows)
            scripted = build_serving_module(model, embeddings, cfg, sizes, vocab_sorted=vocab_sorted,
                                            vocab_ids=vocab_ids)
            check = (scripted.logits_prepared(dense, ids) - reference).abs().max().item()
    finally:
        fx_log.setLevel(level)
    if quantize == "none" and not check <= 1e-5:
        raise ExportError(f"export check failed: the scripted model's logits differ from the trained model's by "
                          f"{check:.3g} on random rows (expected <= 1e-5)")

    out.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(out / MODEL_FILE))
    files = {MODEL_FILE: sha256_file(out / MODEL_FILE)}
    if vocab_sorted:
        (out / VOCAB_DIR).mkdir()
        for name, values, id_of in zip(names, vocab_sorted, vocab_ids):
            in_id_order = np.empty(len(values), np.int64)
            in_id_order[id_of - 1] = values
            target = out / VOCAB_DIR / f"{name}.npy"
            np.save(target, in_id_order, allow_pickle=False)
            files[f"{VOCAB_DIR}/{name}.npy"] = sha256_file(target)
    manifest = {
        "format_version": FORMAT_VERSION,
        "quantize": quantize,
        "artifact": {"format": "torchscript", "file": MODEL_FILE, "load": "import torch, torchrec; "
                     "torch.jit.load(path)"},
        "model": dataclasses.asdict(cfg.model),
        "embedding_dim": cfg.model.embedding_dim,
        "dense_features": dense_feature_names(cfg.data.num_dense),
        "sparse_features": names,
        "cardinalities": sizes,
        "encoding": cfg.data.encoding,
        "max_ind_range": cfg.data.max_ind_range,
        "min_frequency": cfg.data.min_frequency,
        "dense_transform": cfg.data.dense_transform,
        "vocabularies": {name: f"{VOCAB_DIR}/{name}.npy" for name in names} if vocab_sorted else {},
        "inputs": {
            "forward": "dense_raw (B, ND) float64/int64 integers, missing 0; sparse_raw (B, NS) int64 "
                       "int(hex, 16), -1 missing -> logits (B,)",
            "logits_prepared": "dense (B, ND) float32 transformed; ids (B, NS) int64 -> logits (B,)",
            "score_fields": "rows: list of ND + NS strings (I1.., C1..) -> probabilities (B,)",
        },
        "export_check": {"rows": len(ids), "max_abs_logit_diff": check},
        "checkpoint": str(path.resolve()),
        "run_dir": str(run_dir.resolve()),
        "versions": {"torch": torch.__version__, "torchrec": getattr(torchrec, "__version__", "unknown")},
        "files": files,
    }
    write_manifest(out, manifest)
    return manifest
