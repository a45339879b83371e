"""Print the resolved run configuration as TOML: every key of every section with the value a run would use.

The preset (``--config``) and the overrides (``--set``) are applied exactly as ``train`` applies them, and the
result is checked the same way (the interaction's params too, against its constructor, without building it), so
this is also how to try an override before launching a job. Keys a preset
does not mention appear with their defaults; unset optional keys appear as comments. Save the output
(``--out run.toml``), edit it, and pass the file to ``--config``.

Example::

    dlrm-scale config --config criteo_terabyte --set train.batch_size=4096 --out my_run.toml
    torchrun --nproc_per_node=8 -m dlrm_scale.cli train --config my_run.toml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlrm_scale.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", default="", help="write the TOML to this file instead of printing it")


def run(args: argparse.Namespace) -> int:
    from dlrm_scale.config import check_interaction
    from dlrm_scale.config_toml import to_toml
    from dlrm_scale.sharding.options import check_options

    cfg = config_from_args(args)
    check_interaction(cfg.model)
    check_options(cfg)
    origin = f"--config {args.config}" + "".join(f" --set {o}" for o in args.overrides)
    text = to_toml(cfg, header=f"dlrm-scale config {origin}")
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0
