"""Training an algorithm on an env: the loop, atomic checkpoints, and the evaluation on trace B."""

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
from lwmecps_rllib.algorithms.inference import TrainedPolicy, load_module
from lwmecps_rllib.algorithms.metrics import flat_metrics


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


def save_atomic(algo: Algorithm, path: str | Path) -> Path:
    """Checkpoint `algo` to `path` atomically (:func:`lwmecps_rllib.atomic.folder`).

    A crash mid-save leaves the previous checkpoint (if any) intact.
    """
    return atomic.write_folder(path, lambda tmp: algo.save_to_path(str(tmp)))


def train(algo_name: str, env: str = "LWMECPSEnv3", scenario: Any = "testbed-4bs",
          iterations: int = 10, params: dict[str, Any] | None = None, seed: int = 0,
          backend: Any = "sim", num_envs: int | None = None, model: dict[str, Any] | None = None,
          on_iteration: Callable[[int, dict[str, float]], None] | None = None,
          max_env_steps: int | None = None,
          max_episodes: int | None = None,
          backend_config: dict[str, Any] | None = None,
          torch_threads: int | None = 1,
          shuffle_stations: bool = False,
          load_jitter: float = 0.0) -> tuple[Algorithm, list[dict[str, float]]]:
    """Build `algo_name` on `env` (trace A) and train it.

    Args:
        algo_name: Registered algorithm name or alias.
        env: Env name.
        scenario: Scenario name, path or object.
        iterations: Training iterations (an upper bound when `max_env_steps` is given).
        params: Hyper-parameters (`learning_rate`, `discount_factor`, `epsilon`, ...).
        seed: Seed.
        backend: Env backend.
        num_envs: Envs per env runner.
        model: `model_config` overrides.
        on_iteration: Called with (iteration, metrics) after each iteration.
        max_env_steps: Stop once this many env steps were sampled.
        max_episodes: Stop once this many episodes ended.
        backend_config: Kubernetes backend settings for `backend="k8s"`.
        torch_threads: Torch intra-op threads of this process, where the env runner and
            the learner run (`num_env_runners=0`); None keeps torch's default (one per
            core). The networks are small: on 2 cores one thread trains about 20%
            faster, and two trainings side by side each run about 7x faster than with
            two threads each (`docs/benchmarks.md`).
        shuffle_stations: Train on the day with the stations' user columns reordered per
            episode (simulator only; see `LWMECPSEnv3`).
        load_jitter: Train on copies of the day with each station's users scaled by a
            factor in [1 - j, 1 / (1 - j)] (simulator only; see `LWMECPSEnv3`).

    Returns:
        The trained algorithm and the per-iteration metrics (fixed names, see
        :func:`lwmecps_rllib.algorithms.metrics.flat_metrics`, plus `time/...`).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if torch_threads is not None:
        if not isinstance(torch_threads, int) or torch_threads < 1:
            raise ValueError(
                f"torch_threads must be an integer >= 1 or None, got {torch_threads!r}")
        torch.set_num_threads(torch_threads)
    config = build_config(algo_name, env, scenario, "a", params, seed, num_envs, backend, model,
                          backend_config, shuffle_stations, load_jitter)
    ensure_ray()
    algo = config.build_algo()
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for i in range(iterations):
        t1 = time.perf_counter()
        result = algo.train()
        m = flat_metrics(result)
        steps = m["env/env_steps_lifetime"] - (history[-1]["env/env_steps_lifetime"]
                                               if history else 0.0)
        m["time/iteration_s"] = time.perf_counter() - t1
        m["time/total_s"] = time.perf_counter() - t0
        m["time/env_steps_per_s"] = steps / max(m["time/iteration_s"], 1e-9)
        m["training_iteration"] = float(i + 1)
        history.append(m)
        if on_iteration:
            on_iteration(i + 1, m)
        if max_env_steps is not None and m["env/env_steps_lifetime"] >= max_env_steps:
            break
        if max_episodes is not None and m["env/episodes_lifetime"] >= max_episodes:
            break
    return algo, history


def evaluate_checkpoint(checkpoint: str | Path, env: str, scenario: Any, trace: str = "b",
                        baselines: list[str] | None = None, seed: int = 0,
                        steps: int | None = None, name: str = "trained") -> dict[str, Any]:
    """The checkpoint's greedy policy over the day of `trace`, beside baselines and the oracle."""
    from lwmecps_rllib.baselines import policies_for
    from lwmecps_rllib.evaluate import evaluate

    policy = TrainedPolicy(load_module(checkpoint), name=name)
    names = policies_for(env) if baselines is None else baselines
    return evaluate(env, scenario, trace, names, seed, steps, extra={name: policy})


def algorithm_label(algo_name: str) -> str:
    """A short label for tables (`ppo` for `lwmecps-ppo`)."""
    return canonical_name(algo_name).removeprefix("lwmecps-")
