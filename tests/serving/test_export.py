"""``dlrm-scale export`` from real run folders: the artifact scores rows as the trainer's evaluation scores them
after prep and the loader (fp32), within stated tolerances when quantized; errors are one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dlrm_scale.cli import main
from dlrm_scale.data.manifest import Manifest
from dlrm_scale.serving.artifact import MANIFEST_FILE, MODEL_FILE, read_manifest

pytestmark = pytest.mark.multiproc

def test_two_rank_rowwise_export_holds_the_trained_model_and_its_data_contract(hash_run, hash_model):
    """The export of a 2-rank row-wise run scores prepared rows as the trainer's evaluation does (the fresh-
    interpreter, raw-row version of this is the README example's test)."""
    import torch

    from dlrm_scale.serving.artifact import load_model
    from tests.data_prep.raw import read_split

    model, manifest = load_model(hash_model)
    _, dense, ids = read_split(hash_run.data, "train")
    with torch.inference_mode():
        logits = model.logits_prepared(torch.from_numpy(dense), torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(logits, hash_run.trainer_logits, rtol=0, atol=1e-5)
    assert np.std(logits) > 0  # a trained model that tells rows apart, not a constant
    assert manifest["encoding"] == "hash" and manifest["max_ind_range"] == 300
    assert manifest["cardinalities"] == [300] * 26 and manifest["sparse_features"][0] == "C1"
    assert manifest["artifact"]["format"] == "torchscript" and manifest["quantize"] == "none"
    assert manifest["export_check"]["max_abs_logit_diff"] == 0
    assert json.loads((hash_model / MANIFEST_FILE).read_text()) == manifest


@pytest.mark.parametrize("quantize, tolerance", [
    ("int8", 1e-2),
    pytest.param("fp16", 1e-3, marks=pytest.mark.slow),
    pytest.param("int4", 5e-2, marks=pytest.mark.slow),
])
def test_quantized_export_is_within_tolerance_and_smaller(hash_run, hash_model, tmp_path, quantize, tolerance):
    """Row-wise quantized tables (torchrec.quant on fbgemm): click probabilities within ``tolerance`` of fp32."""
    import torch

    from dlrm_scale.serving.artifact import load_model

    out = tmp_path / quantize
    assert main(["export", "--run-dir", str(hash_run.run_dir), "--out", str(out), "--quantize", quantize]) == 0
    lines = [line.split("\t")[1:] for line in hash_run.raw[0].read_text().splitlines()]
    scores = {}
    for name, directory in (("fp32", hash_model), (quantize, out)):
        model, manifest = load_model(directory)
        with torch.inference_mode():
            scores[name] = model.score_fields(lines).numpy()
    assert manifest["quantize"] == quantize
    # streamed table by table, the quantized model is TorchRec's quantization of the whole collection at once
    from torch import nn
    from torchrec.inference.modules import quantize_embeddings

    from dlrm_scale.checkpoint import Checkpointer
    from dlrm_scale.config import load_config
    from dlrm_scale.serving.export import build_serving_module, load_unsharded

    cfg = load_config(str(hash_run.run_dir / "config.toml"), [f"data.path={hash_run.data}"])
    checkpointer = Checkpointer(hash_run.run_dir / "checkpoints")
    trained = load_unsharded(cfg, [300] * 26, checkpointer, checkpointer.latest())
    holder = nn.Module()
    holder.embeddings = trained.sparse_arch.embedding_bag_collection
    dtype = {"fp16": torch.float16, "int8": torch.qint8, "int4": torch.quint4x2}[quantize]
    quantize_embeddings(holder, dtype=dtype, inplace=True)
    whole = build_serving_module(trained, holder.embeddings, cfg, [300] * 26)
    with torch.inference_mode():
        np.testing.assert_array_equal(whole.score_fields(lines).numpy(), scores[quantize])
    difference = np.abs(scores[quantize] - scores["fp32"]).max()
    assert difference <= tolerance
    assert difference > 0  # the tables really are quantized
    assert (out / MODEL_FILE).stat().st_size < (hash_model / MODEL_FILE).stat().st_size


def test_vocab_export_of_real_criteo_samples_predicts_as_the_trainer(criteo_vocab_run, tmp_path, capsys):
    """Raw TSV and CSV (integers printed as 260.0) -> predict -> the trainer's scores after prep + loader."""
    import pyarrow.parquet as pq

    model_dir = tmp_path / "model"
    assert main(["export", "--run-dir", str(criteo_vocab_run.run_dir), "--out", str(model_dir)]) == 0
    manifest = read_manifest(model_dir)
    assert manifest["encoding"] == "vocab" and manifest["min_frequency"] == 2
    vocabulary = np.load(model_dir / manifest["vocabularies"]["C1"], allow_pickle=False)
    assert vocabulary.dtype == np.int64 and len(vocabulary) == manifest["cardinalities"][0] - 1
    scores = tmp_path / "scores.parquet"
    assert main(["predict", "--model", str(model_dir), "--input", *map(str, criteo_vocab_run.raw), "--out",
                 str(scores), "--no-progress"]) == 0
    table = pq.read_table(scores)
    np.testing.assert_allclose(table.column("logit").to_numpy(), criteo_vocab_run.trainer_logits, rtol=0, atol=1e-5)
    sigmoid = 1 / (1 + np.exp(-table.column("logit").to_numpy().astype(np.float64)))
    np.testing.assert_allclose(table.column("score").to_numpy(), sigmoid, rtol=1e-6)
    inputs = table.column("input").to_numpy()
    assert [int((inputs == i).sum()) for i in range(4)] == [1999, 200, 100, 5]
    assert table.column("row").to_numpy()[inputs == 1].tolist() == list(range(200))

    # the same rows as prep's shards: accepted (same vocabularies) and scored alike; other vocabularies: refused
    shards = [str(criteo_vocab_run.data / shard.path)
              for shard in Manifest.load(criteo_vocab_run.data).split("train").shards]
    assert main(["predict", "--model", str(model_dir), "--input", *shards, "--out", str(tmp_path / "shards.pq"),
                 "--no-progress"]) == 0
    np.testing.assert_allclose(pq.read_table(tmp_path / "shards.pq").column("logit").to_numpy(),
                               criteo_vocab_run.trainer_logits, rtol=0, atol=1e-5)
    other = tmp_path / "other_data"
    shutil.copytree(criteo_vocab_run.data, other)
    values = np.load(other / "vocab" / "C3" / "values.npy")
    np.save(other / "vocab" / "C3" / "values.npy", values[::-1].copy())
    shard = other / Manifest.load(other).split("train").shards[0].path
    assert main(["predict", "--model", str(model_dir), "--input", str(shard), "--out", str(tmp_path / "x.pq"),
                 "--no-progress"]) == 2
    assert "vocabulary of C3 differs" in capsys.readouterr().err


def test_export_refuses_what_it_cannot_export_in_one_line(hash_run, tmp_path, capsys):
    assert main(["export", "--run-dir", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert main(["export", "--run-dir", str(hash_run.run_dir), "--out", str(tmp_path / "m"),
                 "--checkpoint", str(tmp_path)]) == 2
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("keep me")
    assert main(["export", "--run-dir", str(hash_run.run_dir), "--out", str(occupied)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("dlrm-scale export: error:") for line in errors)
    assert "config.toml" in errors[0] and "checkpoint" in errors[1] and "--force" in errors[2]


def test_export_traces_dot_through_the_plain_ops_whatever_kernel_trained(hash_run):
    """A run trained with ``kernel = "triton"`` (CUDA) exports through the plain ops: the trace runs on the CPU."""
    from dlrm_scale.checkpoint import Checkpointer
    from dlrm_scale.config import load_config
    from dlrm_scale.serving.export import load_unsharded

    cfg = load_config(str(hash_run.run_dir / "config.toml"), ["model.interaction.params.kernel=triton"])
    checkpointer = Checkpointer(hash_run.run_dir / "checkpoints")
    model = load_unsharded(cfg, [300] * 26, checkpointer, checkpointer.latest())
    assert model.interaction.kernel == "torch" and cfg.model.interaction.params["kernel"] == "triton"
