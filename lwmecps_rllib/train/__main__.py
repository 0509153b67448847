"""Train an algorithm, checkpoint it, and compare it with the baselines on the unseen day.

    python -m lwmecps_rllib.train --algo ppo --env LWMECPSEnv3 --scenario testbed-4bs \\
        --iterations 20 --output runs/ppo
    python -m lwmecps_rllib.train --algo ppo --scenario testbed-4bs-peak --preset recommended
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lwmecps_rllib import atomic
from lwmecps_rllib.algorithms import algorithm_names
from lwmecps_rllib.cli import add_env_arguments, add_training_arguments, run_specs_from_args
from lwmecps_rllib.envs.names import ENV_NAMES
from lwmecps_rllib.evaluate import format_table
from lwmecps_rllib.train import (
    algorithm_label,
    check_checkpoint_target,
    evaluate_checkpoint,
    save_atomic,
    train,
)


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m lwmecps_rllib.train",
                                description="Train an algorithm on trace A, evaluate on trace B.")
    p.add_argument("--env", default="LWMECPSEnv3", choices=ENV_NAMES)
    add_env_arguments(p, augmentation=True)
    add_training_arguments(p)
    p.set_defaults(algo="ppo")
    p.add_argument("--output", type=Path, default=Path("runs/train"),
                   help="run folder (checkpoint/, metrics.json, evaluation.json); an "
                        "existing non-empty one is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in an existing --output folder (its checkpoint, "
                        "metrics.json and evaluation.json; other files are kept)")
    p.add_argument("--eval-steps", type=int, default=None,
                   help="limit the trace-B evaluation to N steps (default: the whole day)")
    p.add_argument("--no-eval", action="store_true", help="skip the trace-B evaluation")
    p.epilog = f"algorithms: {', '.join(algorithm_names())}"
    return p


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that would lose something, before any training.

    Args:
        out: The run folder.
        overwrite: Replace the run already in `out`.

    Raises:
        ValueError: `out` is a file; `out` holds anything and `overwrite` is False; or
            its `checkpoint` is not an algorithm checkpoint (never replaced).
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {str(out)!r} is a file, not a folder")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--output {str(out)!r} already holds a run; pass --overwrite to "
                         f"replace it or choose another --output")
    try:
        check_checkpoint_target(out / "checkpoint")
    except FileExistsError as exc:
        raise ValueError(f"--output: {exc}") from None


def progress(i: int, m: dict[str, float]) -> None:
    """One line per iteration."""
    print(f"iter {i:4d}  return {m['env/total_reward']:9.2f}  latency "
          f"{m['env/latency']:7.1f} ms  pods {m['env/pod_count']:5.2f}  steps/s "
          f"{m['time/env_steps_per_s']:7.0f}  env steps "
          f"{int(m['env/env_steps_lifetime'])}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        check_output(args.output, args.overwrite)
        options, training = run_specs_from_args(args)
        label = algorithm_label(training.algorithm)
        algo, history = train(training, args.env, options, on_iteration=progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.output
    ckpt = save_atomic(algo, out / "checkpoint")
    algo.stop()
    # An overwritten run's evaluation is not this checkpoint's.
    (out / "evaluation.json").unlink(missing_ok=True)
    atomic.write_json(out / "metrics.json", history)
    print(f"checkpoint: {ckpt}")
    if not args.no_eval:
        result = evaluate_checkpoint(ckpt, args.env, options.evaluation("b"),
                                     seed=training.seed, steps=args.eval_steps, name=label)
        print(format_table(result))
        atomic.write_json(out / "evaluation.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
