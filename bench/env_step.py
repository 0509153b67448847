"""Env step cost against CartPole-v1; the batched LWMECPSEnv3 against sync vectorisation.

Prints one JSON object. Every figure is measured in this process, so ratios compare like
with like on the same machine; each timing is the best of `--repeats` runs.

    python bench/env_step.py [--steps 20000] [--repeats 5] [--num-envs 256]

It also times LWMECPSEnv3 per simulated request on `city-64` and `city-256` (the
simulator should scale linearly with the requests) and one decision of a station-shared
policy (`obs_format="graph"`) for all of `city-256`'s stations.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import gymnasium as gym
import numpy as np

import lwmecps_rllib  # noqa: F401  (registers the envs with gymnasium)


def time_single(env: gym.Env, steps: int, repeats: int, seed: int = 0) -> float:
    """Best microseconds per `env.step` (random actions, reset when an episode ends)."""
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(256)]
    env.reset(seed=seed)
    for a in actions[:16]:  # warm-up (compiled kernels, caches)
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    best = np.inf
    for _ in range(repeats):
        env.reset(seed=seed)
        t0 = time.perf_counter()
        for i in range(steps):
            _, _, term, trunc, _ = env.step(actions[i & 255])
            if term or trunc:
                env.reset()
        best = min(best, time.perf_counter() - t0)
    return best / steps * 1e6


def time_vector(venv: gym.vector.VectorEnv, steps: int, repeats: int, seed: int = 0) -> float:
    """Best env-steps per second of a vector env (autoreset inside)."""
    venv.action_space.seed(seed)
    actions = [venv.action_space.sample() for _ in range(16)]
    venv.reset(seed=seed)
    for a in actions[:4]:
        venv.step(a)
    best = np.inf
    for _ in range(repeats):
        venv.reset(seed=seed)
        t0 = time.perf_counter()
        for i in range(steps):
            venv.step(actions[i & 15])
        best = min(best, time.perf_counter() - t0)
    return venv.num_envs * steps / best


def time_per_request(scenario: str, steps: int, repeats: int, seed: int = 0) -> dict[str, float]:
    """LWMECPSEnv3 (`box`) on `scenario`: best microseconds per step and per simulated
    request (random actions; the requests of the timed steps counted from the env)."""
    env = gym.make("LWMECPSEnv3", scenario=scenario, obs_format="box")
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(64)]
    best, requests = np.inf, 0.0
    for _ in range(repeats):
        env.reset(seed=seed)
        total = 0.0
        t0 = time.perf_counter()
        for i in range(steps):
            _, _, term, trunc, _ = env.step(actions[i & 63])
            total += env.unwrapped.last.requests[0]
            if term or trunc:
                env.reset()
        elapsed = time.perf_counter() - t0
        if elapsed < best:
            best, requests = elapsed, total
    return {"us_per_step": round(best / steps * 1e6, 1),
            "requests_per_step": round(requests / steps, 1),
            "us_per_request": round(best / requests * 1e6, 4)}


def time_graph_decision(scenario: str, repeats: int, calls: int = 200) -> dict[str, float]:
    """One decision of a station-shared PPO policy (`obs_format="graph"`) for the whole
    cluster, on one CPU thread: the env's graph encoding of the last measurement plus the
    module's greedy action (untrained weights; the cost does not depend on them)."""
    import torch

    from lwmecps_rllib.algorithms.inference import greedy_actions
    from lwmecps_rllib.algorithms.ppo.module import PPOModule
    from lwmecps_rllib.envs.graph import graph_encode, graph_model_config

    torch.set_num_threads(1)
    env = gym.make("LWMECPSEnv3", scenario=scenario, obs_format="graph").unwrapped
    env.reset(seed=0)
    module = PPOModule(observation_space=env.observation_space, action_space=env.action_space,
                       model_config={"graph": graph_model_config(env.layout)})
    module.eval()

    def decide() -> np.ndarray:
        obs = graph_encode(env.spec_, env.layout, env.state, env.last)
        return greedy_actions(module, obs)

    decide()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            decide()
        best = min(best, time.perf_counter() - t0)
    return {"stations": env.spec_.n_deployments, "ms_per_decision": round(best / calls * 1e3, 3)}


def main() -> None:
    """Run and print JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--vector-steps", type=int, default=40)
    args = p.parse_args()

    cartpole = time_single(gym.make("CartPole-v1"), args.steps, args.repeats)
    single: dict[str, dict[str, float]] = {}
    for scenario in ("testbed-4bs", "city-64"):
        n = args.steps if scenario == "testbed-4bs" else max(200, args.steps // 20)
        for name in ("LWMECPSEnv3", "LWMECPSEnv2", "LWMECPSEnv"):
            for fmt in ("box", "dict"):
                us = time_single(gym.make(name, scenario=scenario, obs_format=fmt), n,
                                 args.repeats)
                single[f"{name}/{scenario}/{fmt}"] = {
                    "us_per_step": round(us, 2), "x_cartpole": round(us / cartpole, 2)}

    n = args.num_envs
    batched = time_vector(
        gym.make_vec("LWMECPSEnv3", num_envs=n, vectorization_mode="vector_entry_point"),
        args.vector_steps, args.repeats)
    sync = time_vector(
        gym.make_vec("LWMECPSEnv3", num_envs=n, vectorization_mode="sync", obs_format="box"),
        max(4, args.vector_steps // 4), args.repeats)
    head = single["LWMECPSEnv3/testbed-4bs/box"]["x_cartpole"]
    scaling = {sc: time_per_request(sc, max(100, args.steps // 40), args.repeats)
               for sc in ("city-64", "city-256")}
    per_request = (scaling["city-256"]["us_per_request"] / scaling["city-64"]["us_per_request"])
    decision = time_graph_decision("city-256", args.repeats)
    print(json.dumps({
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or
                    platform.machine()},
        "cartpole_us_per_step": round(cartpole, 2),
        "single_env": single,
        "vector": {
            "num_envs": n,
            "batched_env_steps_per_s": round(batched),
            "sync_env_steps_per_s": round(sync),
            "batched_over_sync": round(batched / sync, 1),
        },
        "scaling": {**scaling, "city256_over_city64_per_request": round(per_request, 3)},
        "graph_decision": {"city-256": decision},
        "targets": {
            "LWMECPSEnv3_testbed_box_x_cartpole": head,
            "LWMECPSEnv3_at_most_3x_cartpole": bool(head <= 3.0),
            "batched_at_least_5x_sync": bool(batched / sync >= 5.0),
            "city256_per_request_at_most_1_2x_city64": bool(per_request <= 1.2),
            "city256_decision_at_most_5ms": bool(decision["ms_per_decision"] <= 5.0),
        },
    }, indent=2))


if __name__ == "__main__":
    main()
