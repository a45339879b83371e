"""``dlrm-scale``: one command line for data generation, preparation, planning, training and evaluation.

Each subcommand lives in the module that owns it, which provides ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules import torch/torchrec only inside ``run``, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help). Modules with a dataset level ("synth criteo", "prep criteo") say so below.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("data_prep.synth", "generate synthetic data in the raw Criteo layout"),
    "prep": ("data_prep.cli", "convert raw Criteo logs to Parquet shards + manifest.json"),
    "plan": ("dlrm_scale.sharding.cli", "show where TorchRec's planner puts each table, without any GPU"),
    "train": ("dlrm_scale.train.cli", "train a model (launch with torchrun/torchx for several ranks)"),
    "eval": ("dlrm_scale.train.eval_cli", "evaluate a checkpoint: AUC, logloss, NE, accuracy"),
    "config": ("dlrm_scale.config_cli", "print the resolved run configuration (every key and value) as TOML"),
    "export": ("dlrm_scale.serving.export", "turn a run's checkpoint into a self-contained TorchScript scoring model"),
    "predict": ("dlrm_scale.serving.predict", "score raw Criteo logs or prepared shards with an exported model"),
    "doctor": ("dlrm_scale.train.doctor_cli", "diagnose a run folder: why its AUC is 0.5 or its loss NaN"),
}
DATASET_LEVEL = {"synth": ["criteo"], "prep": ["criteo", "multihot"]}
DATASET_MODULES = {("prep", "multihot"): "data_prep.multihot_cli"}  # where a level is not the command's module


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_list(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list", help="list registered components or config presets", formatter_class=_HelpFormatter,
        description="List what can be named in a config: interaction modules (model.interaction.name) or presets.",
    )
    parser.add_argument("what", choices=["interactions", "presets"], help="what to list")
    parser.set_defaults(_run=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    if args.what == "presets":
        from dlrm_scale.config import PRESET_DIR, list_presets

        for name in list_presets():
            first = (PRESET_DIR / f"{name}.toml").read_text().splitlines()[0].lstrip("# ")
            print(f"{name:<18} {first}")
        return 0
    from dlrm_scale.models.interactions import INTERACTIONS, load_builtin

    load_builtin()
    width = max(len(n) for n in INTERACTIONS.names())
    for entry in INTERACTIONS.entries():
        print(f"{entry.name:<{width}}  {entry.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlrm-scale",
        formatter_class=_HelpFormatter,
        description=(
            "Train DLRM-style CTR models on Criteo-scale data with TorchRec-sharded embedding tables.\n\n"
            "Typical flow:\n"
            "  dlrm-scale synth criteo --rows 200000 --days 3 --out raw/\n"
            "  dlrm-scale prep criteo --input raw/day_* --out data/ --dataset terabyte --preset tiny_cpu\n"
            "  torchrun --nproc_per_node=2 -m dlrm_scale.cli train --config tiny_cpu --set data.path=data/\n"
            "  dlrm-scale eval --run-dir runs/latest --split test\n"
            "Run `dlrm-scale <command> --help` for each command's options."
        ),
    )
    from dlrm_scale import __version__

    parser.add_argument("--version", action="version", version=f"dlrm-scale {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        if name in DATASET_LEVEL:
            outer = subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
            inner = outer.add_subparsers(dest="dataset", metavar="DATASET", required=True)
            for dataset in DATASET_LEVEL[name]:
                own_module = DATASET_MODULES.get((name, dataset))
                module = importlib.import_module(own_module or module_name)
                sub_help = module.__doc__.splitlines()[0] if own_module else f"{help_text} ({dataset})"
                sub = inner.add_parser(dataset, help=sub_help, formatter_class=_HelpFormatter,
                                       description=module.__doc__)
                module.add_arguments(sub)
                sub.set_defaults(_run=module.run)
        else:
            sub = subparsers.add_parser(name, help=help_text, description=module.__doc__,
                                        formatter_class=_HelpFormatter)
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    _add_list(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command. A user error (a bad config value, data that does not match the config, an unknown
    interaction: the project's own ValueError / KeyError subclasses) is one line on stderr and exit status 2;
    anything else keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, KeyError) as exc:
        if type(exc).__module__.partition(".")[0] not in ("dlrm_scale", "data_prep"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        # one write, so that the lines of several ranks sharing a stderr never interleave
        sys.stderr.write(f"dlrm-scale {args.command}: error: {message}\n")
        sys.stderr.flush()
        return 2


if __name__ == "__main__":
    sys.exit(main())
