"""`to_toml` writes every key; loading its text back gives the same Config, for every preset and for values TOML
needs care with (unset optionals, per-table overrides, nested params, quotes, floats)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from dlrm_scale.config import Config, list_presets, load_config
from dlrm_scale.config_toml import to_toml


def _round_trip(cfg: Config, tmp_path: Path) -> Config:
    path = tmp_path / "run.toml"
    path.write_text(to_toml(cfg, header="written by a test\nsecond line"))
    return load_config(str(path))


def _keys(node: object, prefix: str = "") -> set[str]:
    keys = set()
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if dataclasses.is_dataclass(value):
            keys |= _keys(value, f"{prefix}{field.name}.")
        else:
            keys.add(f"{prefix}{field.name}")
    return keys


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_round_trips(preset: str, tmp_path: Path) -> None:
    cfg = load_config(preset)
    assert _round_trip(cfg, tmp_path) == cfg


def test_awkward_values_round_trip(tmp_path: Path) -> None:
    cfg = load_config("tiny_cpu", [
        'train.out_dir="runs/with \\"quotes\\" and \\\\ backslash"', "sharding.hbm_gb=79.5",
        'sharding.tables.C3={sharding_type = "column_wise", min_partition = 8}',
        'model.interaction.params={self_interaction = true, pad_to_multiple = 8}',
        "optimizer.dense.eps=1e-12", "data.synthetic_alpha=1.0",
    ])
    again = _round_trip(cfg, tmp_path)
    assert again == cfg
    assert again.sharding.tables["C3"].sharding_type == "column_wise"
    assert again.sharding.tables["C3"].weight_dtype is None  # unset optional stays unset
    assert again.train.out_dir == 'runs/with "quotes" and \\ backslash'


def _written_keys(text: str) -> set[str]:
    """Dotted keys the TOML text sets, plus those it writes as ``# key = (not set)`` under a section."""

    def flatten(table: dict, prefix: str) -> set[str]:
        keys = set()
        for key, value in table.items():
            keys.add(prefix + key)
            if isinstance(value, dict):
                keys |= flatten(value, f"{prefix}{key}.")
        return keys

    keys, section = flatten(tomllib.loads(text), ""), ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line.endswith("= (not set)"):
            keys.add(f"{section}.{line.removeprefix('# ').split(' = ')[0]}")
    return keys


def test_every_key_is_written() -> None:
    """Defaults a preset leaves out are spelled out (unset optionals as comments), under their section."""
    cfg = load_config("tiny_cpu")
    text = to_toml(cfg)
    assert _keys(cfg) <= _written_keys(text)
    assert "compile = false" in text and "# Where batches come from" in text
