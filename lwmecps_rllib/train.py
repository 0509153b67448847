"""Train an algorithm, checkpoint it, and compare it with the baselines on the unseen day.

    python -m lwmecps_rllib.train --algo ppo --env LWMECPSEnv3 --scenario testbed-4bs \\
        --iterations 20 --output runs/ppo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lwmecps_rllib import atomic
from lwmecps_rllib.algorithms import algorithm_names
from lwmecps_rllib.backends.kubernetes import add_backend_arguments, backend_config_from_args
from lwmecps_rllib.envs import ENV_NAMES
from lwmecps_rllib.evaluate import format_table
from lwmecps_rllib.training import algorithm_label, evaluate_checkpoint, save_atomic, train


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


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m lwmecps_rllib.train",
                                description="Train an algorithm on trace A, evaluate on trace B.")
    p.add_argument("--algo", default="ppo", help=f"one of {algorithm_names()}")
    p.add_argument("--env", default="LWMECPSEnv3", choices=ENV_NAMES)
    p.add_argument("--scenario", default="testbed-4bs")
    p.add_argument("--iterations", type=int, default=None,
                   help="training iterations (default 20, or unbounded with "
                        "--max-env-steps / --episodes)")
    p.add_argument("--max-env-steps", type=int, default=None, help="stop after N env steps")
    p.add_argument("--episodes", type=int, default=None, help="stop after N episodes")
    p.add_argument("--output", type=Path, default=Path("runs/train"))
    add_backend_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=int, default=None)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter, e.g. learning_rate=3e-4 (repeatable)")
    p.add_argument("--eval-steps", type=int, default=None,
                   help="limit the trace-B evaluation to N steps (default: the whole day)")
    p.add_argument("--no-eval", action="store_true", help="skip the trace-B evaluation")
    p.add_argument("--shuffle-stations", action="store_true",
                   help="train on the day with the stations' users reordered per episode "
                        "(simulator only; recommended for ppo and dqn on LWMECPSEnv3)")
    p.add_argument("--load-jitter", type=float, default=0.0, metavar="J",
                   help="train on copies of the day with each station's users scaled by a "
                        "factor in [1-J, 1/(1-J)] (simulator only; 0.2 recommended with "
                        "--shuffle-stations)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads of the training process (default 1: the networks "
                        "are small; 0 keeps torch's default of one per core)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        params = parse_params(args.param)
        label = algorithm_label(args.algo)

        def progress(i: int, m: dict[str, float]) -> None:
            print(f"iter {i:4d}  return {m['env/total_reward']:9.2f}  latency "
                  f"{m['env/latency']:7.1f} ms  pods {m['env/pod_count']:5.2f}  steps/s "
                  f"{m['time/env_steps_per_s']:7.0f}  env steps "
                  f"{int(m['env/env_steps_lifetime'])}", flush=True)

        iterations = args.iterations
        if iterations is None:
            bounded = args.max_env_steps is not None or args.episodes is not None
            iterations = 10**9 if bounded else 20
        algo, history = train(args.algo, args.env, args.scenario, iterations, params,
                              args.seed, args.backend, args.num_envs, on_iteration=progress,
                              max_env_steps=args.max_env_steps, max_episodes=args.episodes,
                              backend_config=backend_config_from_args(args),
                              torch_threads=args.torch_threads or None,
                              shuffle_stations=args.shuffle_stations,
                              load_jitter=args.load_jitter)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.output
    ckpt = save_atomic(algo, out / "checkpoint")
    algo.stop()
    atomic.write_json(out / "metrics.json", history)
    print(f"checkpoint: {ckpt}")
    if not args.no_eval:
        result = evaluate_checkpoint(ckpt, args.env, args.scenario, "b", seed=args.seed,
                                     steps=args.eval_steps, name=label)
        print(format_table(result))
        atomic.write_json(out / "evaluation.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
