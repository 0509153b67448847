"""Learning benchmark: each algorithm trains on trace A with a fixed env-step budget, then
runs greedily over the whole of trace B beside every heuristic and the oracle.

Also measures training throughput: our PPO on LWMECPSEnv3 against the same PPO
configuration on CartPole-v1, in the same process.

    python bench/learning.py [--algos ppo,dqn,qlearning] [--scenarios testbed-4bs-peak,testbed-4bs]
                             [--steps '{"ppo": 1000000, ...}' | N] [--seeds 0,1,2]

Per scenario: per seed, the trained policies and every baseline over trace B (mean
reward, latency, per-request p50/p95/p99, failed requests, pods, pod-hours, replica
changes, steps over the latency objective) and the share of the best heuristic's
distance to the oracle each policy closes; then the mean and the worst over the seeds.

Every algorithm trains with its recommended preset (`lwmecps_rllib.presets`): its
parameters, training-day augmentation and env-step budget.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from lwmecps_rllib.algorithms.inference import TrainedPolicy
from lwmecps_rllib.baselines import policies_for
from lwmecps_rllib.evaluate import evaluate
from lwmecps_rllib.presets import RECOMMENDED, recommended
from lwmecps_rllib.spec import Budget, EnvOptions, observation_options
from lwmecps_rllib.train import ensure_ray, train


def settings_for(algo_name: str, scenario: str,
                 overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The algorithm's recommended parameters on the scenario, then `--params` overrides."""
    return {**recommended(algo_name, scenario).params, **(overrides or {}).get(algo_name, {})}


def throughput(steps: int, seed: int, scenario: str) -> dict[str, float]:
    """Env steps/s of PPO (same config, 16 envs, one local runner) on LWMECPSEnv3 and CartPole.

    Both algorithms are built and warmed up first, then train in alternation (one
    iteration each, in turn) until each has sampled `steps` env steps, so drift in the
    machine's speed hits both alike. One torch thread, as `train` uses.
    """
    import torch

    from lwmecps_rllib.algorithms import build_config

    torch.set_num_threads(1)
    algos = {}
    training = recommended("ppo", scenario).training(seed).replace(resources={"num_envs": 16})
    for name in ("LWMECPSEnv3", "CartPole-v1"):
        cfg = build_config(training, "LWMECPSEnv3", EnvOptions(scenario=scenario))
        if name == "CartPole-v1":
            cfg.env = "CartPole-v1"
            cfg.env_config = {}
            cfg.env_runners(gym_env_vectorize_mode="sync")
        algos[name] = cfg.build_algo()
        algos[name].train()  # warm-up
    done = dict.fromkeys(algos, 0)
    spent = dict.fromkeys(algos, 0.0)
    pair_ratios = []
    last = {n: a.train()["env_runners"]["num_env_steps_sampled_lifetime"]
            for n, a in algos.items()}  # second warm-up, and the step counters
    while min(done.values()) < steps:
        rate = {}
        for name, algo in algos.items():
            t0 = time.perf_counter()
            life = algo.train()["env_runners"]["num_env_steps_sampled_lifetime"]
            took = time.perf_counter() - t0
            spent[name] += took
            done[name] += life - last[name]
            rate[name] = (life - last[name]) / took
            last[name] = life
        pair_ratios.append(rate["LWMECPSEnv3"] / rate["CartPole-v1"])
    for algo in algos.values():
        algo.stop()
    out = {name: done[name] / spent[name] for name in algos}
    out["ratio"] = out["LWMECPSEnv3"] / out["CartPole-v1"]
    # Each pair of iterations ran back to back: the median of their ratios is not
    # moved by a slow spell of the machine that hit one side of a few pairs.
    out["ratio_median_of_pairs"] = float(np.median(pair_ratios))
    out["pairs"] = len(pair_ratios)
    return {k: round(v, 3) for k, v in out.items()}


#: The least distance per step from the best heuristic to the oracle for `gap_closed`
#: to be reported: below it the ratio divides by noise (on `testbed-4bs` the oracle
#: leads `uniform` by 0.0000-0.0004).
MIN_GAP = 0.005

TABLE_COLUMNS = ("mean_reward", "mean_latency_ms", "p95_latency_ms", "request_p50_ms",
                 "request_p95_ms", "request_p99_ms", "failed_requests", "mean_pods",
                 "pod_hours", "replica_changes", "steps_over_slo_pct", "wall_s")


def run_seed(scenario: str, seed: int, algos: list[str], budgets: dict[str, int],
             overrides: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Train every algorithm with one seed, then run it over trace B beside the baselines."""
    trained, training = {}, {}
    for algo_name in algos:
        t0 = time.perf_counter()
        preset = recommended(algo_name, scenario)
        spec = preset.training(seed, **overrides.get(algo_name, {})).replace(
            budget=Budget(env_steps=budgets[algo_name]))
        options = preset.env_options(scenario)
        algo, history = train(spec, "LWMECPSEnv3", options)
        module = algo.learner_group._learner.module["default_policy"]
        trained[algo_name] = TrainedPolicy(module, algo_name,
                                           observation_options(options.to_env_config()))
        training[algo_name] = {
            "wall_s": round(time.perf_counter() - t0, 1),
            "env_steps": int(history[-1]["env/env_steps_lifetime"]),
            "iterations": len(history),
            "final_train_return": round(history[-1]["env/total_reward"], 2),
        }
        algo.stop()
        print(f"{scenario} seed {seed} {algo_name}: {training[algo_name]}", file=sys.stderr,
              flush=True)
    result = evaluate("LWMECPSEnv3", EnvOptions(scenario=scenario, trace="b"), names, seed,
                      extra=trained)
    table = {k: {c: r[c] for c in TABLE_COLUMNS} for k, r in result["results"].items()}
    verdict = {}
    if "oracle" in table:
        oracle = table["oracle"]["mean_reward"]
        heur = {k: v["mean_reward"] for k, v in table.items()
                if k not in trained and k != "oracle"}
        best = max(heur, key=heur.get) if heur else None
        for a in trained:
            r = table[a]["mean_reward"]
            verdict[a] = {
                "gap_to_oracle_pct": round(100 * (r - oracle) / abs(oracle), 2),
                "beats_every_heuristic": bool(heur) and all(r > h for h in heur.values()),
                "best_heuristic": best,
                # The share of the best heuristic's distance to the oracle that it closes
                # (None when that distance is below MIN_GAP per step: nothing to close).
                "gap_closed": (round((r - heur[best]) / (oracle - heur[best]), 3)
                               if best and oracle - heur[best] >= MIN_GAP else None),
            }
    return {"training": training, "trace_b": table, "verdict": verdict}


def summarize(per_seed: dict[int, dict[str, Any]], algos: list[str]) -> dict[str, Any]:
    """Per algorithm over the seeds: mean and worst reward and gap closed."""
    out = {}
    for a in algos:
        rewards = [run["trace_b"][a]["mean_reward"] for run in per_seed.values()]
        closed = [run["verdict"][a]["gap_closed"] for run in per_seed.values()
                  if run["verdict"].get(a, {}).get("gap_closed") is not None]
        out[a] = {"mean_reward": float(np.mean(rewards)), "worst_reward": float(min(rewards)),
                  "gap_closed_mean": float(np.mean(closed)) if closed else None,
                  "gap_closed_worst": float(min(closed)) if closed else None}
    return out


def main() -> None:
    """Run and print JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--algos", default="ppo,dqn,qlearning")
    p.add_argument("--scenarios", default="testbed-4bs-peak,testbed-4bs")
    p.add_argument("--steps", default=None,
                   help="env-step budget: one number for all, or JSON per algorithm "
                        "(default: each preset's)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    p.add_argument("--baselines", default="all", help="'all', 'none' or a comma list")
    p.add_argument("--throughput-steps", type=int, default=20_000)
    p.add_argument("--params", default="{}",
                   help='JSON overrides per algorithm, e.g. {"ppo": {"learning_rate": 1e-3}}')
    args = p.parse_args()
    algos, scenarios = args.algos.split(","), args.scenarios.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    overrides = json.loads(args.params)
    for name in overrides:
        if name not in RECOMMENDED:
            p.error(f"--params: unknown algorithm {name!r}; allowed: {sorted(RECOMMENDED)}")
    steps = json.loads(args.steps) if args.steps else {}
    budgets = {a: int(steps[a]) if isinstance(steps, dict) and a in steps
               else int(steps) if steps and not isinstance(steps, dict)
               else RECOMMENDED[a].env_steps for a in algos}
    ensure_ray()
    report: dict[str, Any] = {"budget_env_steps": budgets, "seeds": seeds,
                              "presets": {a: RECOMMENDED[a].to_dict() for a in algos},
                              "settings": {sc: {a: settings_for(a, sc, overrides)
                                                for a in algos}
                                           for sc in scenarios},
                              "runs": {}}
    names = (policies_for("LWMECPSEnv3") if args.baselines == "all"
             else [] if args.baselines == "none" else args.baselines.split(","))
    for scenario in scenarios:
        per_seed = {seed: run_seed(scenario, seed, algos, budgets, overrides, names)
                    for seed in seeds}
        report["runs"][scenario] = {"seeds": per_seed, "summary": summarize(per_seed, algos)}
        print(json.dumps({scenario: report["runs"][scenario]["summary"]}), file=sys.stderr,
              flush=True)
    if args.throughput_steps > 0:
        first = scenarios[0]
        report["throughput_env_steps_per_s"] = {
            "scenario": first, **throughput(args.throughput_steps, seeds[0], first)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
