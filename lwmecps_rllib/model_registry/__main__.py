"""The model registry from the command line.

    python -m lwmecps_rllib.model_registry list [--stage production] [--env LWMECPSEnv3] \\
        [--scenario testbed-4bs]
    python -m lwmecps_rllib.model_registry show MODEL_ID|STAGE [--env ENV] [--scenario SCENARIO]
    python -m lwmecps_rllib.model_registry promote MODEL_ID [--rollout DASHBOARD_URL]
    python -m lwmecps_rllib.model_registry archive MODEL_ID
    python -m lwmecps_rllib.model_registry register CHECKPOINT --algo ppo --env LWMECPSEnv3 \\
        --scenario testbed-4bs

`--registry LOCATION` (or `$LWMECPS_REGISTRY`) picks the registry: an SQLite file, or a
`postgresql://` URL with `--artifacts DIR` (or `$LWMECPS_REGISTRY_ARTIFACTS`) naming the
folder of its checkpoints. `promote --rollout URL` then rolls the production model out
to the running Serve app through that Ray dashboard
(:func:`lwmecps_rllib.serving.rollout.roll_out`).
"""

from __future__ import annotations

import argparse
import json
import sys

from lwmecps_rllib.model_registry import STAGES, ModelRegistry, RegistryError


def format_models(registry: ModelRegistry, stage: str | None = None,
                  env: str | None = None, scenario: str | None = None) -> str:
    """A table of models with the state of each checkpoint."""
    rows = [("id", "stage", "algorithm", "env", "scenario", "stations", "reward", "created",
             "checkpoint")]
    for r in registry.list(stage=stage, env=env, scenario=scenario):
        reward = r.metrics.get("eval/total_reward", r.metrics.get("env/total_reward"))
        size = ("{}-{}".format(*r.config["stations"]) if r.config.get("size_general")
                else "its own")
        rows.append((r.id, r.stage, r.algorithm, r.env, r.scenario, size,
                     "-" if reward is None else f"{float(reward):.3f}", r.created_at[:19],
                     registry.verify(r)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                     for row in rows)


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m lwmecps_rllib.model_registry",
                                description="List, show, promote and archive trained models.")
    p.add_argument("--registry", default=None,
                   help="SQLite file or postgresql:// URL (default $LWMECPS_REGISTRY or "
                        "runs/models/registry.sqlite)")
    p.add_argument("--artifacts", default=None,
                   help="folder of the checkpoints (default: checkpoints/ beside an SQLite "
                        "file; $LWMECPS_REGISTRY_ARTIFACTS for PostgreSQL)")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="models, newest first")
    ls.add_argument("--stage", choices=STAGES)
    ls.add_argument("--env")
    ls.add_argument("--scenario")
    show = sub.add_parser("show", help="one model as JSON")
    show.add_argument("ref", help="model id or stage")
    show.add_argument("--env", help="scope of a stage: the model's env")
    show.add_argument("--scenario", help="scope of a stage: the model's scenario")
    for name in ("promote", "archive"):
        sp = sub.add_parser(name, help=f"{name} a model")
        sp.add_argument("model_id")
    promote = sub.choices["promote"]
    promote.add_argument("--rollout", metavar="DASHBOARD_URL", default=None,
                         help="then roll `production` out to the running Serve app through "
                              "this Ray dashboard (http://127.0.0.1:8265)")
    promote.add_argument("--app", default="lwmecps", help="Serve application (lwmecps)")
    reg = sub.add_parser("register", help="register a checkpoint as a candidate")
    reg.add_argument("checkpoint")
    reg.add_argument("--algo", required=True)
    reg.add_argument("--env", required=True)
    reg.add_argument("--scenario", required=True)
    reg.add_argument("--stations", type=_station_range, default=None, metavar="LEAST-MOST",
                     help="size-general models: the station counts it supports (default "
                          "the range it was trained on), e.g. 4-64")
    return p


def _station_range(text: str) -> tuple[int, int]:
    """`LEAST-MOST` (or one count) as a pair of ints."""
    parts = text.split("-")
    try:
        least, most = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, -1)
    except ValueError:
        least, most = 0, -1
    if not 1 <= least <= most:
        raise argparse.ArgumentTypeError(
            f"--stations must be LEAST-MOST with 1 <= LEAST <= MOST, e.g. 4-64, got {text!r}")
    return least, most


def _roll_out(dashboard: str, model_id: str, app: str) -> int:
    """Roll the production model out to a running Serve app; the exit code."""
    from lwmecps_rllib.serving.rollout import RolloutError, roll_out

    try:
        user_config = roll_out(dashboard, model_id, app=app)
    except RolloutError as exc:
        print(f"error: {model_id} is production but was not rolled out: {exc}",
              file=sys.stderr)
        return 3
    print(f"rolled out to {app} at {dashboard}: user_config {json.dumps(user_config)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        registry = ModelRegistry(args.registry, artifacts=args.artifacts)
        if args.command == "list":
            print(format_models(registry, args.stage, args.env, args.scenario))
        elif args.command == "show":
            record = registry.get(args.ref, env=args.env, scenario=args.scenario)
            print(json.dumps({**record.to_dict(), "checkpoint_status": registry.verify(record)},
                             indent=2))
        elif args.command == "promote":
            print(f"{registry.promote(args.model_id).id}: production")
            if args.rollout:
                return _roll_out(args.rollout, args.model_id, args.app)
        elif args.command == "archive":
            print(f"{registry.archive(args.model_id).id}: archived")
        elif args.command == "register":
            from lwmecps_rllib.algorithms import canonical_name

            record = registry.register(args.checkpoint, algorithm=canonical_name(args.algo),
                                       env=args.env, scenario=args.scenario,
                                       stations=args.stations)
            size = (f" (size-general: {record.config['stations'][0]}-"
                    f"{record.config['stations'][1]} stations)"
                    if record.config.get("size_general") else "")
            print(f"{record.id}: candidate{size}")
    except (RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
