"""Sweep hyper-parameters with Ray Tune, keep the best model.

    python -m lwmecps_rllib.tune                                  # the default sweep, local Ray
    python -m lwmecps_rllib.tune --config tune_configs/dqn.yaml   # another sweep
    python -m lwmecps_rllib.tune --config ... --address auto      # on a running Ray cluster
    python -m lwmecps_rllib.tune --config ... --resume            # continue an interrupted one
    python -m lwmecps_rllib.tune --config ... --env-runners 4     # each trial samples on 4 runners

Each run leaves `STORAGE/NAME/` with Tune's files (per trial `progress.csv`,
`result.json`, TensorBoard events, checkpoints), W&B runs (offline unless an API key is
configured), `sweep.yaml` and `summary.json`; the best checkpoint is evaluated on trace B
and registered as a `candidate` in the model registry.

Exit codes: 0 done, 2 bad input (the message names the key), 130 interrupted (resume it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lwmecps_rllib.cli import add_resource_arguments, resource_flags
from lwmecps_rllib.model_registry import RegistryError
from lwmecps_rllib.tune.report import format_summary
from lwmecps_rllib.tune.run import SweepInterruptedError, run_sweep
from lwmecps_rllib.tune.schema import SweepConfig, SweepError, load_sweep, override_sweep


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m lwmecps_rllib.tune",
                                description="Run a Ray Tune sweep of an LWMECPS algorithm.")
    p.add_argument("--config", type=Path, default=None,
                   help="sweep file (default: the built-in default sweep, "
                        "tune_configs/default.yaml)")
    p.add_argument("--name", default=None, help="sweep name (default: the file's)")
    p.add_argument("--storage-path", type=Path, default=Path("runs/tune"),
                   help="folder of sweeps (default runs/tune)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (auto, ray://host:10001); default a local Ray")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep in STORAGE/NAME")
    p.add_argument("--registry", default=None,
                   help="model registry: SQLite file or postgresql:// URL (default "
                        "$LWMECPS_REGISTRY or runs/models/registry.sqlite)")
    p.add_argument("--plot", type=Path, default=None, help="write learning curves to PNG")
    p.add_argument("--num-samples", type=int, default=None, help="override search.num_samples")
    p.add_argument("--no-register", action="store_true", help="do not register the best model")
    add_resource_arguments(p.add_argument_group(
        "each trial's resources (override the file's `resources:`)"),
        defaults="default: the sweep file's, else")
    return p


def build_sweep(args: argparse.Namespace) -> SweepConfig:
    """The sweep file (or the default sweep) with the command line's overrides, checked.

    Raises:
        SweepError: naming the bad key (an override is checked like the file's value), or
            an override given with `--resume` (which runs the recorded sweep).
    """
    if args.resume:
        given = [flag for flag, value in (("--num-samples", args.num_samples),
                                          ("--no-register", args.no_register or None))
                 if value is not None]
        given += [f"--{name.replace('_', '-')}" for name in resource_flags(args)]
        if given:
            raise SweepError(f"{given[0]}: --resume continues the sweep as its sweep.yaml "
                             f"records it; start a new sweep to change it")
    cfg = load_sweep(args.config) if args.config else SweepConfig()
    return override_sweep(cfg, name=args.name, num_samples=args.num_samples,
                          register=False if args.no_register else None,
                          resources=resource_flags(args))


def main(argv: list[str] | None = None) -> int:
    """Parse, build the sweep, run it and print its summary.

    Returns:
        The exit code: 0 done, 2 bad input, 130 interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        cfg = build_sweep(args)
        summary = run_sweep(cfg, args.storage_path, resume=args.resume, address=args.address,
                            registry_path=args.registry, plot=args.plot)
    except SweepInterruptedError as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except (SweepError, RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"sweep folder: {summary['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
