"""Typed, keyword-only run configuration: TOML presets plus dotted command-line overrides.

Every knob of a run lives in one :class:`Config` tree so that a run is fully described by a preset name and a
list of ``section.key=value`` overrides, and so that a typo is an error rather than a silently ignored setting.

Example::

    cfg = load_config("tiny_cpu", ["train.batch_size=4096", "model.interaction.name=dcnv2"])
    cfg.train.batch_size  # 4096

Presets live in ``launch/configs/<name>.toml``; a path to any TOML file works too. Values given on the command
line are parsed as TOML values (``3``, ``1e-3``, ``[512, 256]``, ``"row_wise"``); a bare word that is not valid
TOML is taken as a string, so ``--set sharding.default_type=row_wise`` works without quotes.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PRESET_DIR = Path(__file__).resolve().parent.parent / "launch" / "configs"

NUM_DENSE = 13
NUM_SPARSE = 26

DenseTransform = Literal["log1p", "log3"]
Encoding = Literal["hash", "vocab", "contiguous"]
ShardingType = Literal["table_wise", "row_wise", "column_wise", "table_row_wise", "table_column_wise", "data_parallel"]
ComputeKernel = Literal["fused", "fused_uvm_caching", "fused_uvm", "dense"]


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or the values contradict each other."""


@dataclass(kw_only=True)
class DataConfig:
    """Where batches come from and what the data contract (``manifest.json``) must say.

    ``path`` is a directory written by ``dlrm-scale prep`` (it holds ``manifest.json``). ``encoding``,
    ``max_ind_range``, ``min_frequency`` and ``dense_transform`` are what prep must produce (``dlrm-scale prep
    criteo --preset NAME`` takes them from here) and training refuses data prepared differently.
    ``cardinalities`` are the embedding table sizes; empty means "take them from the manifest". ``source =
    "synthetic"`` draws batches from ``cardinalities`` instead (see ``dlrm_scale.data.synthetic``): only when asked
    for, never because ``path`` is empty; its evaluation split holds ``min(synthetic_rows, synthetic_eval_rows)``.
    """

    path: str = ""
    train_split: str = "train"
    eval_split: str = "val"
    num_dense: int = NUM_DENSE
    cardinalities: list[int] = field(default_factory=list)
    multi_hot_sizes: list[int] = field(default_factory=list)
    encoding: Encoding = "hash"
    max_ind_range: int = 0
    min_frequency: int = 1
    dense_transform: DenseTransform = "log1p"
    shuffle: bool = True
    shuffle_buffer_batches: int = 4
    prefetch_batches: int = 2
    num_workers: int = 1
    pin_memory: bool = True
    synthetic_rows: int = 1_000_000
    synthetic_alpha: float = 1.05
    synthetic_eval_rows: int = 100_000
    # source: "parquet" reads data.path; "synthetic" draws batches from cardinalities (never chosen implicitly).
    source: Literal["parquet", "synthetic"] = "parquet"
    # verify: shard bytes checked against the manifest's sha256 before their rows are used.
    verify: bool = True
    # check_values: ids in [0, cardinality), finite dense values, labels in {0, 1} (training/eval splits).
    check_values: bool = True


@dataclass(kw_only=True)
class InteractionConfig:
    """Which feature-interaction module to use: a registered name (``dlrm-scale list interactions``) or a dotted
    path ``my_pkg.module:MyInteraction`` to a researcher's own class. ``params`` go to its constructor."""

    name: str = "dot"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ModelConfig:
    """DLRM shape. ``bottom_mlp`` maps the dense features to ``embedding_dim`` (its last width must equal it);
    ``top_mlp`` ends in the single logit. The top MLP's input width comes from the interaction's ``output_dim``."""

    embedding_dim: int = 128
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 128])
    top_mlp: list[int] = field(default_factory=lambda: [1024, 1024, 512, 256, 1])
    interaction: InteractionConfig = field(default_factory=InteractionConfig)


@dataclass(kw_only=True)
class TableShardingConfig:
    """Per-table override of the planner's choice (becomes a TorchRec ``ParameterConstraints``)."""

    sharding_type: ShardingType | None = None
    compute_kernel: ComputeKernel | None = None
    weight_dtype: Literal["fp32", "fp16"] | None = None
    min_partition: int | None = None


@dataclass(kw_only=True)
class ShardingConfig:
    """How TorchRec's planner places the embedding tables. ``default_type``/``default_kernel`` constrain every
    table (empty: the planner chooses); ``tables`` overrides single tables by feature name (``C1``).
    ``min_partition`` is the width of column-wise shards (TorchRec's default: 128 columns, i.e. no split of
    narrower tables). HBM/DDR capacities are GiB per rank."""

    default_type: ShardingType | None = None
    default_kernel: ComputeKernel | None = None
    weight_dtype: Literal["fp32", "fp16"] = "fp32"
    min_partition: int | None = None
    tables: dict[str, TableShardingConfig] = field(default_factory=dict)
    hbm_gb: float | None = None
    ddr_gb: float | None = None
    # Quantized all-to-all of pooled embeddings (forward) and their gradients (backward) through TorchRec's
    # QCommsConfig and fbgemm's codecs: half the bytes, rounded values; bf16 needs CUDA (NCCL). See
    # dlrm_scale/sharding/options.py.
    qcomms_forward: Literal["fp32", "fp16", "bf16"] = "fp32"
    qcomms_backward: Literal["fp32", "fp16", "bf16"] = "fp32"
    # UVM-cached (fused_uvm_caching) tables: fraction of rows cached in HBM (None: TorchRec's default, 0.2), and
    # TorchRec's prefetch pipeline that fetches the next batch's rows into the cache while the current one trains
    # (needs train.pipeline and CUDA; used when the plan has a cached table). See dlrm_scale/sharding/options.py.
    cache_load_factor: float | None = None
    prefetch_pipeline: bool = False


@dataclass(kw_only=True)
class EmbeddingOptimizerConfig:
    """Optimizer fused into the embedding backward (TorchRec/fbgemm). ``rowwise_adagrad`` is the DLRM default."""

    name: Literal["rowwise_adagrad", "adagrad", "adam", "sgd"] = "rowwise_adagrad"
    lr: float = 0.01
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(kw_only=True)
class DenseOptimizerConfig:
    """Optimizer of the data-parallel part, with the MLPerf DLRMv2 schedule: linear warmup over
    ``warmup_steps``, constant, then polynomial decay from ``decay_start`` over ``decay_steps``."""

    name: Literal["adagrad", "adam", "sgd"] = "adagrad"
    lr: float = 0.01
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay_start: int = 0
    decay_steps: int = 0
    decay_power: float = 2.0


@dataclass(kw_only=True)
class OptimizerConfig:
    """Both optimizers, and the step schedule of TorchRec's DLRM example (``--change_lr``): when
    ``change_lr_at`` > 0, at that fraction of the run's total steps every learning rate (embedding and dense)
    becomes ``lr_after_change``."""

    embedding: EmbeddingOptimizerConfig = field(default_factory=EmbeddingOptimizerConfig)
    dense: DenseOptimizerConfig = field(default_factory=DenseOptimizerConfig)
    change_lr_at: float = 0.0
    lr_after_change: float = 0.0


@dataclass(kw_only=True)
class TrainConfig:
    """The loop. ``batch_size`` is per rank (TorchRec's convention; the global batch is it times world size) unless
    ``global_batch_size`` is set, which every world size then trains (``dlrm_scale.train.batch_size``).
    ``max_steps`` > 0 stops early; ``eval_every_steps`` > 0 evaluates periodically as well as at the end.
    ``compile`` runs the bottom and top MLPs through ``torch.compile`` (``compile_backend``; in place, so parameter
    names and checkpoints do not change); the interaction and the embedding lookups stay eager."""

    batch_size: int = 2048
    eval_batch_size: int = 0
    epochs: int = 1
    max_steps: int = 0
    eval_every_steps: int = 0
    eval_max_batches: int = 0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    pipeline: bool = True
    bf16: bool = False
    compile: bool = False
    compile_backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    # out_dir: the run folder; empty: a new runs/<preset>-<timestamp> for each run (see dlrm_scale.train.run_dir)
    out_dir: str = ""
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 2
    # resume: a run folder with a checkpoint is continued from it (same configuration only; see run_dir.py)
    resume: bool = True
    log_every_steps: int = 20
    tensorboard: bool = False
    progress: bool = True
    # global_batch_size > 0: the recipe's global batch; batch_size per rank becomes it / world size (a world size
    # that does not divide it is refused); the learning rates are the recipe's, unchanged.
    global_batch_size: int = 0
    # on_nonfinite: a non-finite loss stops the run ("stop") or its batch is skipped ("skip_batch").
    on_nonfinite: Literal["stop", "skip_batch"] = "stop"
    # doctor: report diverged/stuck/collapsed/loader-bound training as it happens (dlrm_scale.train.doctor).
    doctor: bool = True
    # tf32: TensorFloat-32 for fp32 matmuls and convolutions on CUDA (Ampere and later), set at init (also the
    # fused dot kernels' fp32 products); false: full fp32.
    tf32: bool = False


@dataclass(kw_only=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and builds nested dataclasses; raises naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table (section), got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)} ({'; '.join(errors)})")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__} {value!r}")
        return {k: _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"section [{prefix}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown key {prefix + '.' if prefix else ''}{unknown[0]} in {where}; valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.batch_size=4096"`` -> (["train", "batch_size"], 4096). Values are TOML; bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def resolve_preset(name_or_path: str) -> Path:
    """A preset name (``tiny_cpu``), a path to a TOML (or a run's JSON) file, or a run folder (its
    ``config.toml``)."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.toml"
        if not path.is_file():
            raise ConfigError(f"{path.parent} is a folder without config.toml: not a run folder written by `train`")
        return path
    if path.suffix in (".toml", ".json") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    candidate = PRESET_DIR / f"{name_or_path}.toml"
    if not candidate.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; available: {', '.join(list_presets())}")
    return candidate


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Builds a validated :class:`Config` from a preset (name or path) and ``section.key=value`` overrides."""
    values: dict[str, Any] = {}
    if preset:
        path = resolve_preset(preset)
        try:
            values = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for part in reversed(keys):
            nested = {part: nested}
        values = _deep_merge(values, nested)
    cfg = _build(Config, values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that a type annotation cannot express."""
    if cfg.train.batch_size <= 0:
        raise ConfigError(f"train.batch_size must be positive, got {cfg.train.batch_size}")
    if cfg.model.embedding_dim <= 0:
        raise ConfigError(f"model.embedding_dim must be positive, got {cfg.model.embedding_dim}")
    if not cfg.model.bottom_mlp or cfg.model.bottom_mlp[-1] != cfg.model.embedding_dim:
        raise ConfigError(
            f"model.bottom_mlp must end in model.embedding_dim ({cfg.model.embedding_dim}) so the dense vector "
            f"joins the embeddings; got {cfg.model.bottom_mlp}"
        )
    if not cfg.model.top_mlp or cfg.model.top_mlp[-1] != 1:
        raise ConfigError(f"model.top_mlp must end in 1 (the logit); got {cfg.model.top_mlp}")
    if any(c <= 0 for c in cfg.data.cardinalities):
        raise ConfigError("data.cardinalities must all be positive")
    if cfg.data.multi_hot_sizes and cfg.data.cardinalities and len(cfg.data.multi_hot_sizes) != len(cfg.data.cardinalities):
        raise ConfigError(
            f"data.multi_hot_sizes has {len(cfg.data.multi_hot_sizes)} entries but data.cardinalities has "
            f"{len(cfg.data.cardinalities)}"
        )
    if cfg.train.global_batch_size < 0:
        raise ConfigError(f"train.global_batch_size must be >= 0 (0: use train.batch_size per rank), "
                          f"got {cfg.train.global_batch_size}")
    if not 0.0 <= cfg.optimizer.change_lr_at < 1.0:
        raise ConfigError(f"optimizer.change_lr_at must be in [0, 1) (a fraction of the run's steps; 0: off), "
                          f"got {cfg.optimizer.change_lr_at}")
    factor = cfg.sharding.cache_load_factor
    if factor is not None and not 0.0 < factor <= 1.0:
        raise ConfigError(f"sharding.cache_load_factor must be in (0, 1], got {factor}")
    if cfg.data.source == "synthetic" and not cfg.data.cardinalities:
        raise ConfigError("data.source = \"synthetic\" needs data.cardinalities (the table sizes to draw ids from)")
    if cfg.data.synthetic_rows < 0 or cfg.data.synthetic_eval_rows < 0:
        raise ConfigError("data.synthetic_rows and data.synthetic_eval_rows must be >= 0")


def check_data_source(data_cfg: DataConfig) -> None:
    """Training and evaluation read data: Parquet needs a ``data.path``. Checked where data is read, not in
    :func:`validate`, so presets without a path still print (``dlrm-scale config``) and plan."""
    if data_cfg.source == "parquet" and not data_cfg.path:
        raise ConfigError("data.path is empty: set --set data.path=DIR (a folder written by `dlrm-scale prep`), "
                          "or --set data.source=synthetic to train on synthetic batches")


def check_interaction(model_cfg: ModelConfig) -> None:
    """The interaction's name and ``params`` against its constructor's signature, without building anything:
    a misspelt option is a :class:`ConfigError` naming the accepted ones (imports torch)."""
    import inspect

    from dlrm_scale.models.interactions import INTERACTIONS, accepted_params, load_builtin

    load_builtin()
    name, params = model_cfg.interaction.name, model_cfg.interaction.params
    try:
        cls = INTERACTIONS.get(name)
    except KeyError as exc:
        raise ConfigError(f"model.interaction.name: {exc.args[0] if exc.args else exc}") from exc
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.interaction.name {name!r} is not a class that can be called ({exc})") from exc
    try:
        signature.bind(num_sparse_features=1, embedding_dim=model_cfg.embedding_dim, **params)
    except TypeError as exc:
        options = ", ".join(f"{key}={default!r}" if default is not inspect.Parameter.empty else f"{key} (required)"
                            for key, default in accepted_params(cls).items()) or "none"
        raise ConfigError(f"model.interaction.params {dict(params)!r} do not fit {name!r} ({exc}); "
                          f"accepted: {options}") from exc


def sparse_feature_names(num_sparse: int) -> list[str]:
    """Criteo's categorical column names, ``C1`` … ``C<num_sparse>``; also the embedding feature names."""
    return [f"C{i + 1}" for i in range(num_sparse)]


def dense_feature_names(num_dense: int = NUM_DENSE) -> list[str]:
    return [f"I{i + 1}" for i in range(num_dense)]


def add_config_arguments(parser: Any) -> None:
    """``--config`` and ``--set`` for every command that takes a run configuration."""
    parser.add_argument("--config", default="tiny_cpu",
                        help=f"preset name ({', '.join(list_presets())}), a TOML file, or a run folder (its config.toml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.batch_size=4096 (repeatable; TOML values)")


def config_from_args(args: Any) -> Config:
    return load_config(args.config, args.overrides)
