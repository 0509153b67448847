"""Run policies over a whole day of a trace and compare them.

    python -m lwmecps_rllib.evaluate --env LWMECPSEnv3 --scenario testbed-4bs --trace b \\
        --policy all --output results.json --plot day.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lwmecps_rllib import atomic
from lwmecps_rllib.baselines import Policy, make_baseline, policies_for
from lwmecps_rllib.cli import add_env_arguments, env_options_from_args
from lwmecps_rllib.envs.names import ENV_NAMES
from lwmecps_rllib.rollout import run_policy
from lwmecps_rllib.scenarios import load_scenario
from lwmecps_rllib.spec import EnvOptions

COLUMNS = ("mean_reward", "mean_latency_ms", "p95_latency_ms", "failed_requests", "mean_pods")


def parse_policies(spec: str, env_name: str) -> list[str]:
    """`all`, `none` or a comma-separated list of baseline names, checked against the env."""
    allowed = policies_for(env_name)
    if spec == "all":
        return allowed
    if spec == "none":
        return []
    names = [p.strip() for p in spec.split(",") if p.strip()]
    for name in names:
        if name not in allowed:
            raise ValueError(f"--policy {name!r} is not available for {env_name}; allowed: "
                             f"'all', 'none' or {allowed}")
    return names


def model_policies(refs: list[str], env_name: str, options: EnvOptions,
                   registry: str | Path | None = None) -> dict[str, Policy]:
    """Trained policies by reference: a checkpoint folder, or a registry model id or stage.

    Each acts greedily on the env's box observation; a registry model must have been
    trained on `env_name`, and any model must take the scenario's observations.

    Returns:
        Policies by name (the model id, or `checkpoint:<folder>`).

    Raises:
        ValueError: naming the reference that does not resolve or does not fit.
    """
    from lwmecps_rllib.algorithms.inference import (
        TrainedPolicy,
        fit_graph_module,
        greedy_actions,
    )
    from lwmecps_rllib.envs.registration import env_class, env_options
    from lwmecps_rllib.model_registry import resolve

    cls = env_class(env_name)
    out: dict[str, Policy] = {}
    for ref in refs:
        path, record = resolve(ref, registry, env=env_name, scenario=options.scenario_name)
        name = f"checkpoint:{path.name}" if record is None else record.id
        if record is not None and record.env != env_name:
            raise ValueError(f"--model {ref!r} ({record.id}) was trained on {record.env}, "
                             f"not {env_name}; pass --env {record.env}")
        try:
            policy = TrainedPolicy.from_checkpoint(path, name=name)
            opts = env_options(env_name, options.replace(**policy.env_overrides))
            spec = cls.build_spec(load_scenario(opts.scenario), opts)
            size = (fit_graph_module(policy.module, spec, policy.env_overrides)
                    if policy.size_general else cls.box_layout(spec, opts).size)
            greedy_actions(policy.module, np.zeros((1, size), np.float32))
        except (FileNotFoundError, RuntimeError) as exc:
            raise ValueError(f"--model {ref!r} does not take {env_name} observations of "
                             f"{options.scenario_name}: {exc}") from exc
        out[name] = policy
    return out


def evaluate(env_name: str, options: EnvOptions, policies: list[str], seed: int = 0,
             steps: int | None = None, extra: dict[str, Policy] | None = None
             ) -> dict[str, Any]:
    """Run baselines (and `extra` policies, e.g. trained ones) over the day; a result table.

    Args:
        env_name: Env name.
        options: The env's options; `trace` is the day run.
        policies: Baseline names.
        seed: Seed.
        steps: Limit each run to N steps.
        extra: More policies by name.
    """
    if env_name not in ENV_NAMES:
        raise ValueError(f"env must be one of {list(ENV_NAMES)}, got {env_name!r}")
    runs = {}
    for name in policies:
        runs[name] = run_policy(env_name, options, make_baseline(name, env_name), seed, steps)
    for name, pol in (extra or {}).items():
        runs[name] = run_policy(env_name, options, pol, seed, steps)
    sc = load_scenario(options.scenario)
    return {"env": env_name, "scenario": sc.name, "trace": options.trace, "seed": seed,
            "steps": next(iter(runs.values()))["steps"] if runs else 0, "results": runs}


def format_table(result: dict[str, Any]) -> str:
    """The result as a fixed-width text table."""
    head = (f"{'policy':<20}{'mean reward':>13}{'latency ms':>12}{'req p99 ms':>12}"
            f"{'failed':>9}{'pods':>8}{'wall s':>9}")
    lines = [f"{result['env']} on {result['scenario']}, trace {result['trace']}, "
             f"{result['steps']} steps", head, "-" * len(head)]
    for name, r in result["results"].items():
        p99 = r.get("request_p99_ms")
        lines.append(f"{name:<20}{r['mean_reward']:>13.2f}{r['mean_latency_ms']:>12.1f}"
                     f"{'-' if p99 is None else f'{p99:.0f}':>12}{r['failed_requests']:>9d}"
                     f"{r['mean_pods']:>8.2f}{r['wall_s']:>9.2f}")
    return "\n".join(lines)


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    padded = np.pad(x, (k // 2, k - 1 - k // 2), mode="edge")
    return np.convolve(padded, np.ones(k) / k, mode="valid")


def plot_day(result: dict[str, Any], path: Path, slot_s: float, slots_per_step: int) -> None:
    """Latency and replicas over the day per policy, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for name, r in result["results"].items():
        lat = np.asarray(r["series"]["latency"])
        pods = np.asarray(r["series"]["pods"])
        hours = np.arange(len(lat)) * slot_s * slots_per_step / 3600.0
        k = max(1, len(lat) // 200)
        ax1.plot(hours, _smooth(lat, k), label=name, lw=1)
        ax2.plot(hours, _smooth(pods, k), label=name, lw=1)
    ax1.set_ylabel("mean latency (ms)")
    ax2.set_ylabel("replicas")
    ax2.set_xlabel("hour of day")
    ax1.legend(ncol=3, fontsize=8)
    ax1.set_title(f"{result['env']} on {result['scenario']}, trace {result['trace']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m lwmecps_rllib.evaluate",
                                description="Compare policies over a whole day of a trace.")
    p.add_argument("--env", default="LWMECPSEnv3", choices=ENV_NAMES)
    p.add_argument("--trace", default="b", help="trace name (a: training day, b: unseen day)")
    p.add_argument("--policy", default="all",
                   help="baselines: 'all', 'none' or a comma-separated list")
    p.add_argument("--model", action="append", default=[], metavar="REF",
                   help="a trained model beside them: a checkpoint folder, a registry model "
                        "id, or a stage (production, candidate); repeatable")
    p.add_argument("--registry", default=None,
                   help="model registry file (default $LWMECPS_REGISTRY or "
                        "runs/models/registry.sqlite)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="limit the run to N steps")
    add_env_arguments(p)
    p.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--plot", type=Path, default=None, help="draw latency/replicas to a PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        policies = parse_policies(args.policy, args.env)
        if args.steps is not None and args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        options = env_options_from_args(args, args.trace)
        models = model_policies(args.model, args.env, options, args.registry)
        result = evaluate(args.env, options, policies, args.seed, args.steps, extra=models)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.output:
        atomic.write_json(args.output, result)
        print(f"wrote {args.output}")
    if args.plot:
        sc = load_scenario(args.scenario)
        plot_day(result, args.plot, sc.slot_s, sc.slots_per_step)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
