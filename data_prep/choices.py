"""The allowed values of ``dlrm-scale prep criteo``'s choice flags, in one light module (no pyarrow), so the CLI
and the validation of :class:`~data_prep.config.PrepConfig` cannot drift apart."""

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("kaggle", "terabyte", "auto"),
    "encoding": ("hash", "vocab", "contiguous"),
    "dense_transform": ("log1p", "log3"),
    "on_bad_line": ("error", "skip"),
    "format": ("auto", "tsv", "csv"),
    "holdout": ("auto", "none", "last-file", "last-seventh"),
    "first_half": ("test", "val"),
    "compression": ("snappy", "zstd", "none"),
}
