"""Presets load, overrides apply with TOML types, and every mistake names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrm_scale.config import Config, ConfigError, list_presets, load_config, parse_override

TERABYTE_40M = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209,
                11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36]


def test_required_presets_exist_and_validate() -> None:
    assert {"tiny_cpu", "criteo_kaggle", "criteo_terabyte", "mlperf_dcnv2"} <= set(list_presets())
    for name in list_presets():
        assert isinstance(load_config(name), Config)


def test_presets_carry_the_published_cardinalities() -> None:
    terabyte = load_config("criteo_terabyte")
    assert terabyte.data.cardinalities == TERABYTE_40M and sum(TERABYTE_40M) == 204_184_588
    mlperf = load_config("mlperf_dcnv2")
    assert mlperf.data.cardinalities == TERABYTE_40M
    assert sum(mlperf.data.multi_hot_sizes) == 214 and mlperf.model.interaction.name == "dcnv2"
    assert len(load_config("criteo_kaggle").data.cardinalities) == 26


def test_overrides_parse_toml_values() -> None:
    cfg = load_config("tiny_cpu", [
        "train.batch_size=4096", "optimizer.dense.lr=1e-3", "sharding.default_type=row_wise",
        "model.bottom_mlp=[32, 16]", "model.interaction.params={num_layers = 2}", "train.pipeline=false",
        "sharding.tables.C1.sharding_type=table_wise",
    ])
    assert cfg.train.batch_size == 4096
    assert cfg.optimizer.dense.lr == pytest.approx(1e-3)
    assert cfg.sharding.default_type == "row_wise"
    assert cfg.model.interaction.params == {"num_layers": 2}
    assert cfg.train.pipeline is False
    assert cfg.sharding.tables["C1"].sharding_type == "table_wise"
    assert parse_override("data.path=") == (["data", "path"], "")


@pytest.mark.parametrize(("override", "message"), [
    ("train.batchsize=3", "unknown key train.batchsize"),
    ("nosection.x=1", "unknown key nosection"),
    ("train.batch_size=\"big\"", "train.batch_size: expected an integer"),
    ("train.batch_size=1.5", "train.batch_size: expected an integer"),
    ("train.pipeline=1", "train.pipeline: expected true/false"),
    ("sharding.default_type=rowwise", "sharding.default_type: 'rowwise' is not one of"),
    ("model.top_mlp=[1, \"a\"]", "model.top_mlp[1]: expected an integer"),
    ("sharding.tables.C3.kernel=fused", "unknown key sharding.tables.C3.kernel"),
    ("train.batch_size=0", "train.batch_size must be positive"),
    ("model.bottom_mlp=[64, 8]", "model.bottom_mlp must end in model.embedding_dim"),
    ("model.top_mlp=[64, 2]", "model.top_mlp must end in 1"),
    ("train", "must look like section.key=value"),
])
def test_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config("tiny_cpu", [override])


def test_unknown_preset_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="available: .*tiny_cpu"):
        load_config("no_such_preset")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nbatch_size = \n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(str(bad))
    own = tmp_path / "own.toml"
    own.write_text("[data]\ncardinalities = [10, 20]\n[train]\nbatch_size = 7\n")
    assert load_config(str(own)).train.batch_size == 7


def test_synthetic_data_needs_cardinalities() -> None:
    with pytest.raises(ConfigError, match="needs data.cardinalities"):
        load_config("tiny_cpu", ["data.source=synthetic"])


def test_empty_data_path_is_never_synthetic_data() -> None:
    """An empty path with the default source says how to fix it; presets without a path still load (to print
    and plan them)."""
    from dlrm_scale.config import check_data_source

    cfg = load_config("criteo_terabyte")
    with pytest.raises(ConfigError, match="data.path is empty: set --set data.path=DIR .* data.source=synthetic"):
        check_data_source(cfg.data)
    check_data_source(load_config("criteo_terabyte", ["data.source=synthetic"]).data)


def test_interaction_params_are_checked_against_the_constructor() -> None:
    from dlrm_scale.config import check_interaction

    check_interaction(load_config("mlperf_dcnv2").model)
    with pytest.raises(ConfigError, match=r"\{'num_layer': 2\} do not fit 'dcnv2'.*accepted: num_layers=3"):
        check_interaction(load_config("tiny_cpu", ["model.interaction.name=dcnv2",
                                                   "model.interaction.params={num_layer = 2}"]).model)
    with pytest.raises(ConfigError, match="model.interaction.name: unknown interaction 'dott'"):
        check_interaction(load_config("tiny_cpu", ["model.interaction.name=dott"]).model)


def test_a_run_folder_and_a_json_config_load(tmp_path: Path) -> None:
    import json

    from dlrm_scale.config_toml import to_toml

    cfg = load_config("tiny_cpu", ["train.epochs=5"])
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    assert load_config(str(tmp_path)) == cfg
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert load_config(str(tmp_path / "config.json")) == cfg
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without config.toml"):
        load_config(str(tmp_path / "empty"))
