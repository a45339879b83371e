"""The scripted serving model against its references, without training: prep's output for the preprocessing
(hash and vocab, both dense transforms, synthetic and real Criteo rows), prep's parser for the text parser, and the
eager DLRM for every registered interaction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_prep.layout import inspect_input
from data_prep.parse import BlockParser
from dlrm_scale.config import load_config, sparse_feature_names
from dlrm_scale.models.dlrm import build_dlrm
from dlrm_scale.models.interactions import INTERACTIONS, load_builtin
from dlrm_scale.serving.export import _data_contract, build_serving_module
from tests.conftest import CRITEO_SAMPLES
from tests.data_prep.raw import prep, random_lines, read_split, write_lines


def parse_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``dense_raw (N, 13) float64``, ``sparse_raw (N, 26)`` int64 (-1 missing) of a raw file, by prep's parser."""
    source = inspect_input(0, path)
    parsed = BlockParser(source).parse(path.read_bytes()[source.data_start:])
    assert not parsed.bad
    sparse = np.where(parsed.sparse_missing, -1, parsed.sparse.astype(np.int64))
    return torch.from_numpy(parsed.dense.T.copy()), torch.from_numpy(sparse.T.copy())


def kjt(ids: torch.Tensor) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=sparse_feature_names(ids.shape[1]), values=ids.t().reshape(-1),
                             lengths=torch.ones(ids.numel(), dtype=torch.int32))


def serving_pair(overrides: list[str], sizes: list[int] | None = None, data: Path | None = None):
    """A randomly initialised tiny DLRM (eager) and its scripted serving model."""
    where = [f"data.path={data}"] if data else ["data.path=", f"data.cardinalities={sizes}"]
    cfg = load_config("tiny_cpu", [*where, *overrides])
    sizes, vocab_sorted, vocab_ids = _data_contract(cfg, data) if data else (sizes, [], [])
    torch.manual_seed(0)
    model = build_dlrm(cfg.model, sizes, device="cpu").eval()
    for table in model.sparse_arch.embedding_bag_collection.parameters():
        torch.nn.init.normal_(table)
    with torch.no_grad():
        scripted = build_serving_module(model, model.sparse_arch.embedding_bag_collection, cfg, sizes,
                                        vocab_sorted=vocab_sorted, vocab_ids=vocab_ids)
    return model, scripted


@pytest.mark.parametrize("source", ["synthetic", "criteo"])
@pytest.mark.parametrize("encoding, transform", [("hash", "log1p"), ("vocab", "log3")])
def test_raw_rows_through_the_model_equal_prep_then_the_model(tmp_path, source, encoding, transform):
    if source == "criteo":
        if not CRITEO_SAMPLES.is_dir():
            pytest.skip(f"real Criteo samples not found at {CRITEO_SAMPLES}")
        raw = CRITEO_SAMPLES / "DERIVED_kaggle-2014-criteo__train.tiny.raw.tsv"
    else:
        raw = write_lines(tmp_path / "raw.tsv", random_lines(400, seed=7))
    settings = ["--encoding", encoding, "--dense-transform", transform, "--max-ind-range", "5000"]
    if encoding == "vocab":
        settings += ["--min-frequency", "2"]
    assert prep("--input", raw, "--out", tmp_path / "data", "--workers", "1", *settings) == 0
    model, scripted = serving_pair([f"data.encoding={encoding}", f"data.dense_transform={transform}",
                                    "data.max_ind_range=5000", "data.min_frequency=2", "data.eval_split="],
                                   data=tmp_path / "data")
    dense_raw, sparse_raw = parse_file(raw)
    _, expected_dense, expected_ids = read_split(tmp_path / "data", "train")
    dense, ids = scripted.prepare(dense_raw, sparse_raw)
    np.testing.assert_array_equal(dense.numpy(), expected_dense)
    np.testing.assert_array_equal(ids.numpy(), expected_ids)
    if encoding == "vocab":
        assert (ids == 0).any() and (ids > 0).any()  # rare/missing and known values both occur
    with torch.no_grad():
        expected = model(torch.from_numpy(expected_dense), kjt(torch.from_numpy(expected_ids)))
        np.testing.assert_array_equal(scripted(dense_raw, sparse_raw).numpy(), expected.numpy())


def test_text_parser_reads_fields_as_prep_does(tmp_path):
    lines = random_lines(200, seed=3)  # missing fields, negatives, short and upper-case hex
    lines.append("\t".join(["1", "260.0"] + ["-3"] * 12 + ["0"] * 26))  # CSV-style float integers
    raw = write_lines(tmp_path / "raw.tsv", lines)
    _, scripted = serving_pair(["data.max_ind_range=1000"], sizes=[1000] * 26)
    dense_raw, sparse_raw = scripted.parse_fields([line.split("\t")[1:] for line in lines])
    expected_dense, expected_sparse = parse_file(raw)
    np.testing.assert_array_equal(dense_raw.numpy(), expected_dense.numpy())
    np.testing.assert_array_equal(sparse_raw.numpy(), expected_sparse.numpy())


@pytest.mark.parametrize("field, value, message", [
    (0, "1.5", "field I1"), (13, "zz", "field C1"), (14, "123456789", "field C2"), (5, "abc", "field I6"), (6, "-", "field I7"), (7, "1.2.0", "field I8"),
])
def test_text_parser_rejects_what_prep_rejects(field, value, message):
    _, scripted = serving_pair(["data.max_ind_range=1000"], sizes=[1000] * 26)
    row = ["1"] * 13 + ["a"] * 26
    row[field] = value
    with pytest.raises(Exception, match=message):
        scripted.parse_fields([row])
    with pytest.raises(Exception, match="expected 39"):
        scripted.parse_fields([row[:-1]])


def test_out_of_range_inputs_raise_instead_of_reading_outside_a_table():
    _, scripted = serving_pair(["data.max_ind_range=0"], sizes=[50] * 26)
    dense = torch.zeros(2, 13)
    with pytest.raises(Exception, match="outside"):
        scripted.logits_prepared(dense, torch.full((2, 26), 50, dtype=torch.int64))
    with pytest.raises(Exception, match="outside"):
        scripted(dense, torch.full((2, 26), 60, dtype=torch.int64))  # no max_ind_range: 60 stays 60
    with pytest.raises(Exception, match="2\\*\\*32"):
        scripted(dense, torch.full((2, 26), 2**32, dtype=torch.int64))
    with pytest.raises(Exception, match="dense_raw must be"):
        scripted(torch.zeros(2, 12), torch.zeros(2, 26, dtype=torch.int64))


def test_every_registered_interaction_exports_for_any_batch_size():
    """The dense part is traced at B = 3; the scripted model must equal the eager one at other batch sizes."""
    load_builtin()
    sizes = [20, 30, 40]
    generator = torch.Generator().manual_seed(1)
    for name in INTERACTIONS.names():
        model, scripted = serving_pair([f"model.interaction.name={name}"], sizes=sizes)
        for batch in (1, 7):
            dense = torch.rand(batch, 13, generator=generator)
            ids = torch.stack([torch.randint(0, size, (batch,), generator=generator) for size in sizes], dim=1)
            with torch.no_grad():
                expected = model(dense, kjt(ids))
            torch.testing.assert_close(scripted.logits_prepared(dense, ids), expected, rtol=1e-6, atol=1e-6,
                                       msg=f"interaction {name!r}, batch {batch}")


def test_a_keyed_jagged_tensor_scores_as_the_id_matrix_and_is_checked():
    sizes = [20, 30, 40]
    model, scripted = serving_pair([], sizes=sizes)
    generator = torch.Generator().manual_seed(2)
    dense = torch.rand(5, 13, generator=generator)
    ids = torch.stack([torch.randint(0, size, (5,), generator=generator) for size in sizes], dim=1)
    torch.testing.assert_close(scripted.logits_kjt(dense, kjt(ids)), scripted.logits_prepared(dense, ids),
                               rtol=0, atol=0)
    lengths = torch.tensor([2, 0, 1, 1, 1, 1, 0, 3, 1, 1, 1, 1, 1, 2, 0], dtype=torch.int32)  # several ids, or none
    multi_hot = KeyedJaggedTensor(keys=["C1", "C2", "C3"], values=torch.randint(0, 20, (int(lengths.sum()),)),
                                  lengths=lengths)
    with torch.no_grad():
        torch.testing.assert_close(scripted.logits_kjt(dense, multi_hot), model(dense, multi_hot), rtol=1e-6,
                                   atol=1e-6)
    with pytest.raises(Exception, match="stride"):
        scripted.logits_kjt(dense[:4], multi_hot)
    with pytest.raises(Exception, match="outside"):
        scripted.logits_kjt(dense, kjt(ids + 25))
    with pytest.raises(Exception, match="keys must be"):
        scripted.logits_kjt(dense, KeyedJaggedTensor(keys=["C2", "C1", "C3"], values=ids.t().reshape(-1),
                                                     lengths=torch.ones(15, dtype=torch.int32)))
