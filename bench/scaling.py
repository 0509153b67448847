"""Scaling one training out: sampling with 0, 1 and 2 env runners, PPO's update with 1 and
2 learners, all measured in one run on a local Ray.

Prints one JSON object. Sampling: PPO's module acting in LWMECPSEnv3 (`--scenario`,
the batched env, 16 envs per runner), env-steps/s of the sampling phase alone (each
runner samples `--steps` env steps, the runners side by side). Update: one PPO update
(`--epochs` passes over a batch of `--batch` env steps, global minibatch 256) by a
local learner and by 1 and 2 remote learners (torch DDP over gloo; each of 2 learners
takes half the batch and minibatches of 128). Every timing is the median of
`--repeats`, after one warm-up.

    python bench/scaling.py [--steps 8192] [--batch 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from lwmecps_rllib.algorithms import build_config
from lwmecps_rllib.spec import EnvOptions, Resources, TrainingSpec


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall seconds of `fn()` over `repeats` calls after one warm-up; its last
    result."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def build(scenario: str, params: dict[str, Any], **resources: Any) -> Any:
    """A PPO algorithm on `scenario` with `resources` (1 CPU per runner and learner)."""
    spec = TrainingSpec(algorithm="ppo", params=params, resources=Resources(**resources))
    return build_config(spec, "LWMECPSEnv3", EnvOptions(scenario=scenario)).build_algo()


def sampling_rate(scenario: str, runners: int, steps: int, repeats: int) -> dict[str, float]:
    """Env-steps/s of `runners` remote env runners (0: the training process's own)."""
    algo = build(scenario, {}, env_runners=runners)
    group = algo.env_runner_group
    try:
        if runners == 0:
            def sample() -> int:
                return sum(len(e) for e in group.local_env_runner.sample(num_timesteps=steps))
        else:
            def sample() -> int:
                parts = group.foreach_env_runner(
                    lambda r: sum(len(e) for e in r.sample(num_timesteps=steps)),
                    local_env_runner=False)
                return sum(parts)
        seconds, sampled = median_time(sample, repeats)
    finally:
        algo.stop()
    return {"env_runners": runners, "env_steps": sampled, "seconds": seconds,
            "env_steps_per_s": sampled / seconds}


def sample_batch(scenario: str, batch: int) -> list[Any]:
    """`batch` env steps of episodes (PPO's untrained module), the updates' one batch."""
    algo = build(scenario, {})
    try:
        return algo.env_runner_group.local_env_runner.sample(num_timesteps=batch)
    finally:
        algo.stop()


def update_time(scenario: str, learners: int, episodes: list[Any], epochs: int,
                repeats: int) -> dict[str, float]:
    """Seconds of one PPO update on `episodes` by `learners` remote learners (0: the
    training process's own learner)."""
    per = max(learners, 1)
    batch = sum(len(e) for e in episodes)
    params = {"train_batch_size_per_learner": batch // per, "minibatch_size": 256 // per,
              "num_epochs": epochs}
    algo = build(scenario, params, learners=learners)
    # A local learner's connectors extend the episodes in place: each update gets a copy.
    copies = [copy.deepcopy(episodes) for _ in range(repeats + 1)]
    try:
        def update() -> None:
            algo.learner_group.update(episodes=copies.pop(), num_epochs=epochs,
                                      minibatch_size=256 // per, shuffle_batch_per_epoch=True)

        seconds, _ = median_time(update, repeats)
    finally:
        algo.stop()
    return {"learners": learners, "env_steps": batch, "seconds": seconds}


def main() -> None:
    """Run every measurement and print the JSON."""
    import ray

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="testbed-4bs-peak")
    p.add_argument("--steps", type=int, default=8192, help="env steps per runner and sample")
    p.add_argument("--batch", type=int, default=4096, help="env steps per update")
    p.add_argument("--epochs", type=int, default=4, help="passes over the batch per update")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    torch.set_num_threads(1)  # as `train` runs the training process (remote actors: 1 CPU)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False)
    try:
        sampling = [sampling_rate(args.scenario, n, args.steps, args.repeats) for n in (0, 1, 2)]
        episodes = sample_batch(args.scenario, args.batch)
        updates = [update_time(args.scenario, n, episodes, args.epochs, args.repeats)
                   for n in (0, 1, 2)]
    finally:
        ray.shutdown()
    rate = {s["env_runners"]: s["env_steps_per_s"] for s in sampling}
    upd = {u["learners"]: u["seconds"] for u in updates}
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_after": os.getloadavg()},
        "settings": vars(args),
        "sampling": sampling,
        "update": updates,
        "ratios": {"one_remote_vs_in_process": rate[1] / rate[0],
                   "two_runners_vs_one": rate[2] / rate[1],
                   "update_two_learners_vs_one": upd[2] / upd[1],
                   "update_one_remote_learner_vs_local": upd[1] / upd[0]},
    }, indent=2))


if __name__ == "__main__":
    main()
