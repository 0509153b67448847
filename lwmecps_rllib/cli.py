"""Command-line pieces shared by the commands: env and training flags into run specs.

The commands (`train`, `evaluate`, ...) only parse, build and call; what their flags
mean is defined here once, and turned into the checked :class:`EnvOptions` and
:class:`TrainingSpec` the library functions take.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lwmecps_rllib.backends.config import KubernetesConfig
from lwmecps_rllib.spec import Budget, EnvOptions, Resources, TrainingSpec


def load_backend_config(path: str | Path | None, dry_run: bool = False) -> KubernetesConfig:
    """A checked backend config from a YAML file (the defaults without one).

    `dry_run=True` (the commands' `--dry-run`) sets `dry_run` in it.

    Raises:
        ValueError: naming the file and the bad key.
    """
    import yaml

    data: Any = {}
    if path is not None:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a backend config must be a mapping")
    if dry_run:
        data["dry_run"] = True
    try:
        return KubernetesConfig.parse(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}" if path else str(exc)) from exc


def add_env_arguments(parser: argparse.ArgumentParser, *, augmentation: bool = False) -> None:
    """`--scenario`, `--backend`, `--backend-config`, `--dry-run` (and the augmentation)."""
    parser.add_argument("--scenario", default="testbed-4bs",
                        help="shipped scenario name or path to a scenario YAML")
    parser.add_argument("--backend", default="sim", choices=("sim", "k8s"),
                        help="sim (digital twin) or k8s (a real cluster, see --backend-config)")
    parser.add_argument("--backend-config", default=None,
                        help="YAML of the Kubernetes backend (e.g. "
                             "k8s/testbed/backend-config.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --backend k8s: log the patches instead of sending them")
    parser.add_argument("--history", type=int, default=None, metavar="K",
                        help="observe the users of the K slots before the last, per station")
    parser.add_argument("--history-windows", default=None, metavar="W,W",
                        help="observe the mean and max users per station over windows of "
                             "this many slots, e.g. 6,30 (1 and 5 minutes)")
    if augmentation:
        parser.add_argument("--obs-format", default=None, choices=("box", "graph"),
                            help="box (default through RLlib) or graph (LWMECPSEnv3: one row per "
                                 "station, one policy for any cluster size)")
        parser.add_argument("--max-stations", type=int, default=None, metavar="M",
                            help="with --obs-format graph: rows of the observation")
        parser.add_argument("--scenario-family", default=None, metavar="FAMILY",
                            help="train across generated clusters: family-edge or a family YAML "
                                 "(graph observation, simulator)")
        parser.add_argument("--reward-per-station", action="store_true", default=None,
                            help="train on each step's reward divided by the cluster's "
                                 "stations (clusters of a family weigh alike)")
        parser.add_argument("--shuffle-stations", action="store_true", default=None,
                            help="train on the day with the stations' users reordered per "
                                 "episode (simulator only)")
        parser.add_argument("--load-jitter", type=float, default=None, metavar="J",
                            help="train on copies of the day with each station's users "
                                 "scaled by a factor in [1-J, 1/(1-J)] (simulator only)")


def env_options_from_args(args: argparse.Namespace, trace: str = "a",
                          **defaults: Any) -> EnvOptions:
    """The checked env options the flags give (`defaults` fill flags left unset).

    Raises:
        ValueError: a backend config or --dry-run without `--backend k8s`, or a bad value.
    """
    fields: dict[str, Any] = {"scenario": args.scenario, "trace": trace,
                              "backend": args.backend}
    if args.backend == "k8s":
        fields["backend_config"] = load_backend_config(args.backend_config, args.dry_run)
    elif args.backend_config or args.dry_run:
        raise ValueError("--backend-config and --dry-run need --backend k8s")
    windows = getattr(args, "history_windows", None)
    if isinstance(windows, str):
        try:
            windows = [int(w) for w in windows.split(",") if w.strip()]
        except ValueError:
            raise ValueError(f"--history-windows must be integers separated by commas, "
                             f"got {args.history_windows!r}") from None
    for name in ("obs_format", "max_stations", "scenario_family", "reward_per_station",
                 "shuffle_stations", "load_jitter", "history", "history_windows"):
        value = windows if name == "history_windows" else getattr(args, name, None)
        if value is None:
            value = defaults.get(name)
        if value is not None:
            fields[name] = value
    return EnvOptions.parse(fields)


def parse_params(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values parsed as JSON when they can be (numbers, lists, bools)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param must be key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """`--algo`, `--param`, `--seed`, the resources and the budget."""
    parser.add_argument("--algo", default="ppo", help="algorithm name or alias")
    parser.add_argument("--preset", default=None,
                        help="start from the recommended settings of the algorithm on the "
                             "scenario ('recommended'; see python -m lwmecps_rllib.presets)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="hyper-parameter, e.g. learning_rate=3e-4 (repeatable; "
                             "overrides the preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=None, help="envs per env runner")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of the training process (default 1: the networks "
                             "are small; 0 keeps torch's default of one per core)")
    add_resource_arguments(parser)
    parser.add_argument("--iterations", type=int, default=None,
                        help="training iterations (default 20, or unbounded with "
                             "--max-env-steps / --episodes)")
    parser.add_argument("--max-env-steps", type=int, default=None, help="stop after N env steps")
    parser.add_argument("--episodes", type=int, default=None, help="stop after N episodes")


def add_resource_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                           defaults: str = "default") -> None:
    """`--env-runners`, `--cpus-per-env-runner`, `--learners`, `--cpus-per-learner` and
    `--gpus-per-learner` (:data:`RESOURCE_FLAGS`), unset (None) unless given.

    Args:
        parser: A parser or an argument group.
        defaults: How the help names where unset values come from (e.g. "default: the
            sweep file's, else").
    """
    parser.add_argument("--env-runners", type=int, default=None, metavar="N",
                        help=f"remote env runners sampling side by side ({defaults} 0: "
                             f"sample in the training process)")
    parser.add_argument("--cpus-per-env-runner", type=float, default=None, metavar="X",
                        help=f"CPUs reserved per remote env runner ({defaults} 1)")
    parser.add_argument("--learners", type=int, default=None, metavar="N",
                        help=f"remote learners splitting each batch, gradients averaged by "
                             f"torch DDP ({defaults} 0: learn in the training process)")
    parser.add_argument("--cpus-per-learner", type=float, default=None, metavar="X",
                        help=f"CPUs reserved per learner ({defaults} 1 without GPUs, 0 "
                             f"with)")
    parser.add_argument("--gpus-per-learner", type=float, default=None, metavar="X",
                        help=f"GPUs per learner ({defaults} 0)")


#: The :class:`Resources` fields `train` has a flag for (`--env-runners`, ...).
RESOURCE_FLAGS = ("env_runners", "cpus_per_env_runner", "learners", "cpus_per_learner",
                  "gpus_per_learner")


def resource_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Resources` fields the resource flags given set (unset ones left out)."""
    return {name: getattr(args, name) for name in RESOURCE_FLAGS
            if getattr(args, name, None) is not None}


def training_from_args(args: argparse.Namespace, params: dict[str, Any] | None = None
                       ) -> TrainingSpec:
    """The checked training spec the flags give (`params` under the `--param` ones).

    Raises:
        ValueError: naming the bad flag's field.
    """
    return TrainingSpec.parse({
        "algorithm": args.algo,
        "params": {**(params or {}), **parse_params(args.param)},
        "seed": args.seed,
        "resources": Resources.parse({"num_envs": args.num_envs,
                                      "torch_threads": args.torch_threads or None,
                                      **resource_flags(args)}),
        "budget": Budget.parse({"iterations": args.iterations, "env_steps": args.max_env_steps,
                                "episodes": args.episodes}),
    })


def run_specs_from_args(args: argparse.Namespace) -> tuple[EnvOptions, TrainingSpec]:
    """The training env's options and the training spec of `train`'s flags.

    With `--preset`, the preset's parameters, augmentation and budget come first; the
    flags given override them.
    """
    if not args.preset:
        return env_options_from_args(args, "a"), training_from_args(args)
    from lwmecps_rllib.presets import get_preset

    preset = get_preset(args.preset, args.algo, args.scenario)
    options = env_options_from_args(args, "a", **preset.env_fields())
    training = training_from_args(args, preset.params)
    if training.budget == Budget():
        training = training.replace(budget=preset.training().budget)
    return options, training
