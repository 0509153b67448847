"""Train an algorithm, checkpoint it, and compare it with the baselines on the unseen day.

    python -m lwmecps_rllib.train --algo ppo --env LWMECPSEnv3 --scenario testbed-4bs \\
        --iterations 20 --output runs/ppo
    python -m lwmecps_rllib.train --algo ppo --scenario testbed-4bs-peak --preset recommended
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm

from lwmecps_rllib import atomic
from lwmecps_rllib.algorithms import algorithm_names
from lwmecps_rllib.cli import (
    RESOURCE_FLAGS,
    add_env_arguments,
    add_training_arguments,
    resource_flags,
    run_specs_from_args,
)
from lwmecps_rllib.envs.names import ENV_NAMES
from lwmecps_rllib.evaluate import format_table
from lwmecps_rllib.spec import Budget, EnvOptions, TrainingSpec
from lwmecps_rllib.train import (
    algorithm_label,
    check_checkpoint_target,
    evaluate_checkpoint,
    is_checkpoint,
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
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="checkpoint (and write metrics.json) every N iterations, so an "
                        "interrupted run loses at most N (default: at the end only)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last checkpoint: its "
                        "recorded settings, iteration count and metrics; budget and "
                        "resource flags given replace the recorded ones (the budget is "
                        "the whole run's)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (auto, HOST:PORT, ray://host:10001); default "
                        "$RAY_ADDRESS (set inside Ray jobs) or a new local Ray")
    p.add_argument("--eval-steps", type=int, default=None,
                   help="limit the trace-B evaluation to N steps (default: the whole day)")
    p.add_argument("--no-eval", action="store_true", help="skip the trace-B evaluation")
    p.epilog = f"algorithms: {', '.join(algorithm_names())}"
    return p


#: The file of a run folder that records what it trains (what `--resume` continues).
RUN_FILE = "run.json"
#: Flags `--resume` takes beside the recorded run (the others would change the run).
RESUME_FLAGS = frozenset({"output", "resume", "checkpoint_every", "eval_steps", "no_eval",
                          "address", "iterations", "max_env_steps", "episodes", "torch_threads",
                          *RESOURCE_FLAGS})


def run_record(env: str, options: EnvOptions, training: TrainingSpec) -> dict[str, Any]:
    """What a run trains, as `run.json` holds it."""
    return {"env": env, "options": options.to_env_config(),
            "training": training.model_dump(mode="json")}


def records_the_run(run: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether the flags give the run recorded in `run` (its `run.json`): the same env,
    env options and training, apart from the budget and the resources."""

    def essence(training: TrainingSpec) -> dict[str, Any]:
        return training.model_dump(mode="json", exclude={"budget", "resources"})

    try:
        options, training = run_specs_from_args(args)
        recorded = TrainingSpec.parse(run["training"])
    except (KeyError, TypeError, ValueError):
        return False
    given = json.loads(json.dumps(options.to_env_config(), default=str))
    return (args.env == run.get("env") and given == run.get("options")
            and essence(training) == essence(recorded))


def resumed_specs(args: argparse.Namespace, parser: argparse.ArgumentParser
                  ) -> tuple[str, EnvOptions, TrainingSpec]:
    """The recorded run of `--output`, with the budget and resource flags given over it.

    Raises:
        ValueError: nothing to resume in the folder, or a flag that would change the run.
    """
    out = args.output
    if not (out / RUN_FILE).is_file() or not is_checkpoint(out / "checkpoint"):
        raise ValueError(f"--resume: {str(out)!r} holds no run to continue (no {RUN_FILE} "
                         f"and checkpoint; --checkpoint-every N makes them as it trains)")
    run = json.loads((out / RUN_FILE).read_text())
    changed = sorted(a.option_strings[0] for a in parser._actions if a.dest not in
                     RESUME_FLAGS | {"help"} and getattr(args, a.dest) != a.default)
    # The command that started the run, given again with --resume, continues it.
    if changed and not records_the_run(run, args):
        raise ValueError(f"{changed[0]}: --resume continues the recorded run; only the "
                         f"budget, resource, checkpoint and evaluation flags may be given, "
                         f"or the flags the run was started with")
    training = TrainingSpec.parse(run["training"])
    budget = {k: v for k, v in (("iterations", args.iterations),
                                ("env_steps", args.max_env_steps),
                                ("episodes", args.episodes)) if v is not None}
    resources = training.resources.replace(torch_threads=args.torch_threads or None,
                                           **resource_flags(args))
    training = training.replace(budget=Budget.parse(budget) if budget else training.budget,
                                resources=resources)
    return run["env"], EnvOptions.parse(run["options"]), training


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


def save_run(out: Path, algo: Algorithm, history: list[dict[str, float]],
             record: dict[str, Any]) -> Path:
    """Write the run's record and metrics, then its checkpoint (a crash between leaves
    metrics of iterations past the checkpoint, which `--resume` drops). The evaluation
    of an earlier checkpoint is removed: it is not this one's."""
    (out / "evaluation.json").unlink(missing_ok=True)
    atomic.write_json(out / RUN_FILE, record)
    atomic.write_json(out / "metrics.json", history)
    return save_atomic(algo, out / "checkpoint")


def progress(i: int, m: dict[str, float]) -> None:
    """One line per iteration."""
    print(f"iter {i:4d}  return {m['env/total_reward']:9.2f}  latency "
          f"{m['env/latency']:7.1f} ms  pods {m['env/pod_count']:5.2f}  steps/s "
          f"{m['time/env_steps_per_s']:7.0f}  env steps "
          f"{int(m['env/env_steps_lifetime'])}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = args.output
    try:
        if args.resume:
            if args.overwrite:
                raise ValueError("--resume continues the run in --output; --overwrite "
                                 "would replace it (give one)")
            env, options, training = resumed_specs(args, parser)
            history = json.loads((out / "metrics.json").read_text())
        else:
            check_output(out, args.overwrite)
            options, training = run_specs_from_args(args)
            env, history = args.env, []
        if args.checkpoint_every is not None and args.checkpoint_every < 1:
            raise ValueError(f"--checkpoint-every must be an integer >= 1, got "
                             f"{args.checkpoint_every}")
        label = algorithm_label(training.algorithm)
        record = run_record(env, options, training)
        algo, history = train(
            training, env, options, on_iteration=progress, history=history,
            resume_from=out / "checkpoint" if args.resume else None,
            checkpoint_every=args.checkpoint_every,
            on_checkpoint=lambda a, h: save_run(out, a, h, record), address=args.address)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ckpt = save_run(out, algo, history, record)
    algo.stop()
    print(f"checkpoint: {ckpt}")
    if not args.no_eval:
        result = evaluate_checkpoint(ckpt, env, options.evaluation("b"),
                                     seed=training.seed, steps=args.eval_steps, name=label)
        print(format_table(result))
        atomic.write_json(out / "evaluation.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
