"""Training an algorithm on an env: the loop, atomic checkpoints, the evaluation on trace B.

The command line is `python -m lwmecps_rllib.train` (:mod:`lwmecps_rllib.train.__main__`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray.rllib.algorithms.algorithm import Algorithm

from lwmecps_rllib import atomic
from lwmecps_rllib.algorithms import build_config, canonical_name
from lwmecps_rllib.algorithms.inference import TrainedPolicy
from lwmecps_rllib.algorithms.metrics import flat_metrics
from lwmecps_rllib.spec import (
    ENV_OPTIONS_FILE,
    Budget,
    EnvOptions,
    TrainingSpec,
    observation_options,
)


def ensure_ray(address: str | None = None) -> None:
    """Start (or connect to) Ray once.

    `address` (`auto`, `ray://host:10001`) or `$RAY_ADDRESS` (set inside Ray Jobs) joins
    that cluster; otherwise a new local Ray starts (never a stray `ray start` head found
    on the machine).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # A private local instance: no token needed (Ray 2.60 would otherwise turn on
        # token auth when ~/.ray/auth_token exists).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", include_dashboard=False, log_to_driver=False)


CHECKPOINT_MARKER = "rllib_checkpoint.json"


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is an algorithm checkpoint folder (RLlib's `rllib_checkpoint.json`)."""
    return (Path(path) / CHECKPOINT_MARKER).is_file()


def check_checkpoint_target(path: str | Path) -> Path:
    """`path` as a place :func:`save_atomic` may write: missing, empty, or a checkpoint.

    A checkpoint left half-replaced by a crash is restored first
    (:func:`lwmecps_rllib.atomic.recover`).

    Raises:
        FileExistsError: `path` is a file, or a folder with content that is not an
            algorithm checkpoint (a run folder, say): it is never replaced.
    """
    path = Path(path)
    atomic.recover(path)
    if not path.exists() or is_checkpoint(path):
        return path
    if path.is_dir() and not any(path.iterdir()):
        return path
    raise FileExistsError(f"{str(path)!r} exists and is not an algorithm checkpoint (no "
                          f"{CHECKPOINT_MARKER}); only a checkpoint is replaced: choose a "
                          f"new or empty folder, e.g. {str(path / 'checkpoint')!r}")


def save_atomic(algo: Algorithm, path: str | Path) -> Path:
    """Checkpoint `algo` to `path` atomically (:func:`lwmecps_rllib.atomic.folder`).

    The folder also records the env options that shape the observation
    (`env_options.json`), which serving and `evaluate --model` read back. `path` may be
    missing, an empty folder or an earlier checkpoint, which is replaced; anything else
    is refused before saving. A crash mid-save leaves the previous checkpoint (if any)
    intact, or restorable by the next save or load.

    Raises:
        FileExistsError: `path` holds something else than a checkpoint.
    """
    check_checkpoint_target(path)

    def fill(tmp: Path) -> None:
        algo.save_to_path(str(tmp))
        record = observation_options(dict(algo.config.env_config or {}))
        atomic.write_json(tmp / ENV_OPTIONS_FILE, record)

    return atomic.write_folder(path, fill)


def train(training: TrainingSpec, env: str = "LWMECPSEnv3", options: EnvOptions | None = None,
          on_iteration: Callable[[int, dict[str, float]], None] | None = None, *,
          resume_from: str | Path | None = None,
          history: list[dict[str, float]] | None = None,
          checkpoint_every: int | None = None,
          on_checkpoint: Callable[[Algorithm, list[dict[str, float]]], None] | None = None,
          address: str | None = None) -> tuple[Algorithm, list[dict[str, float]]]:
    """Build the spec's algorithm on `env` and train it until its budget is spent.

    Args:
        training: Algorithm, hyper-parameters, seed, resources (torch threads of this
            process, env runners, learners) and budget (iterations, env steps, episodes
            of the whole run: the first reached stops).
        env: Env name.
        options: The env's options (its trace is the training day, `a` by default).
        on_iteration: Called with (iteration, metrics) after each iteration.
        resume_from: A checkpoint of this run to continue from: its weights, optimizer
            and counters (iterations, env steps, episodes) are restored, and the budget
            counts them. DQN's replay buffer is not in a checkpoint: it refills.
        history: The metrics of the iterations before `resume_from` (those after the
            checkpoint's iteration are dropped); the new ones are appended.
        checkpoint_every: Call `on_checkpoint(algo, history)` every this many
            iterations (by the run's iteration count).
        on_checkpoint: What saves a checkpoint (e.g. the run folder's).
        address: The Ray cluster to join (`auto`, `HOST:PORT`, `ray://host:10001`);
            default `$RAY_ADDRESS` or a new local Ray (:func:`ensure_ray`).

    Returns:
        The trained algorithm and the per-iteration metrics (fixed names, see
        :func:`lwmecps_rllib.algorithms.metrics.flat_metrics`, plus `time/...`).

    Raises:
        ValueError: `checkpoint_every` below 1, or without `on_checkpoint`.
    """
    if checkpoint_every is not None and (checkpoint_every < 1 or on_checkpoint is None):
        raise ValueError(f"checkpoint_every must be an integer >= 1 with on_checkpoint, "
                         f"got {checkpoint_every!r}")
    threads = training.resources.torch_threads
    if threads is not None:
        torch.set_num_threads(threads)
    config = build_config(training, env, options)
    ensure_ray(address)
    algo = config.build_algo()
    if resume_from is not None:
        algo.restore_from_path(str(resume_from))
    history = [m for m in history or [] if m["training_iteration"] <= algo.iteration]
    t0 = time.perf_counter()
    while not budget_spent(training.budget, algo.iteration, history[-1] if history else None):
        t1 = time.perf_counter()
        m = flat_metrics(algo.train())
        steps = m["env/env_steps_lifetime"] - (history[-1]["env/env_steps_lifetime"]
                                               if history else 0.0)
        m["time/iteration_s"] = time.perf_counter() - t1
        m["time/total_s"] = time.perf_counter() - t0
        m["time/env_steps_per_s"] = steps / max(m["time/iteration_s"], 1e-9)
        m["training_iteration"] = float(algo.iteration)
        history.append(m)
        if on_iteration:
            on_iteration(algo.iteration, m)
        if checkpoint_every is not None and algo.iteration % checkpoint_every == 0:
            on_checkpoint(algo, history)
    return algo, history


def budget_spent(budget: Budget, iteration: int, last: dict[str, float] | None) -> bool:
    """Whether a run at `iteration`, whose last iteration's metrics are `last`, is done."""
    if iteration >= budget.max_iterations:
        return True
    if last is None:
        return False
    return ((budget.env_steps is not None and last["env/env_steps_lifetime"] >= budget.env_steps)
            or (budget.episodes is not None
                and last["env/episodes_lifetime"] >= budget.episodes))


def evaluate_checkpoint(checkpoint: str | Path, env: str, options: EnvOptions,
                        baselines: list[str] | None = None, seed: int = 0,
                        steps: int | None = None, name: str = "trained",
                        observation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint's greedy policy over the day of `options.trace`, beside baselines
    and the oracle (default: every baseline of the env).

    `observation`: the env options that shape what the policy observes, when the
    checkpoint does not record them (Tune's trial checkpoints).
    """
    from lwmecps_rllib.baselines import policies_for
    from lwmecps_rllib.evaluate import evaluate

    policy = TrainedPolicy.from_checkpoint(checkpoint, name=name)
    if observation:
        policy.env_overrides = dict(observation)
    names = policies_for(env) if baselines is None else baselines
    return evaluate(env, options, names, seed, steps, extra={name: policy})


def algorithm_label(algo_name: str) -> str:
    """A short label for tables (`ppo` for `lwmecps-ppo`)."""
    return canonical_name(algo_name).removeprefix("lwmecps-")
