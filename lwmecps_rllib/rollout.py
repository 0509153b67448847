"""Running one policy over a whole day of a trace: the loop every comparison uses.

A policy reads the env's public :class:`~lwmecps_rllib.cluster.view.ClusterView`;
this module sits below the baselines (which tune themselves with it) and `evaluate`
(which compares them).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lwmecps_rllib.envs.base import LATENCY_BINS
from lwmecps_rllib.envs.registration import make_env
from lwmecps_rllib.scenarios import Scenario, load_scenario
from lwmecps_rllib.spec import EnvOptions


def day_scenario(scenario: str | Scenario, steps: int | None = None) -> Scenario:
    """The scenario as one episode over the whole day (or `steps` steps), never terminated."""
    sc = load_scenario(scenario)
    n = steps or sc.n_slots // sc.slots_per_step
    return sc.replace(episode_length=n, termination_reward=None)


def run_policy(env_name: str, options: EnvOptions, policy: Any, seed: int = 0,
               steps: int | None = None, start_slot: int = 0) -> dict[str, Any]:
    """One policy over the day of `options.trace` from `start_slot`; summary and series.

    Args:
        env_name: Env name.
        options: The env's options (scenario, trace, backend ...); the scenario is run
            as one episode over the day.
        policy: What acts (`reset(view, seed)`, `act(view, obs)`); its `env_overrides`
            (if any) change the env's options (a trained policy's observation).
        seed: Seed of the env (and the policy).
        steps: Limit the run to N steps.
        start_slot: Slot of the trace to start at.

    Returns:
        A dict with `mean_reward` (per step), `mean_latency_ms` (over successful
        requests), `p95_latency_ms` (95th percentile of the steps' mean latency),
        `failed_requests`, `mean_pods`, `pod_hours`, `replica_changes` (replicas added
        or removed, or deployments moved, summed over the steps), `slo_latency_ms` and
        `steps_over_slo_pct` (steps whose mean latency exceeds it, see
        :func:`slo_latency_ms`), `request_p50_ms`, `request_p95_ms`, `request_p99_ms`
        (per successful request, on the simulator; :func:`request_percentiles`), `steps`,
        `wall_s` and `series` (per step `reward`, `latency`, `pods`).
    """
    sc = day_scenario(options.scenario, steps)
    # A trained policy observes what it was trained with (e.g. the users' history).
    record = options.backend == "sim"  # per-request latencies: the simulator knows them
    env = make_env(env_name, options.replace(scenario=sc, record_latency=record,
                                             **getattr(policy, "env_overrides", {})))
    u = env.unwrapped
    policy.reset(u.cluster_view(), seed)  # before the env touches a cluster: it may refuse
    obs, _ = env.reset(seed=seed, options={"start_slot": start_slot})
    n = sc.episode_length
    reward = np.zeros(n)
    latency = np.zeros(n)
    pods = np.zeros(n)
    ok = lat_sum = failed = changes = 0.0
    per_request = np.zeros(LATENCY_BINS) if record else None
    view = u.cluster_view()
    before = _decision(view)
    t0 = time.perf_counter()
    for i in range(n):
        obs, r, terminated, truncated, info = env.step(policy.act(view, obs))
        view = u.cluster_view()  # what the policy sees next, and what runs now
        after = _decision(view)
        changes += float(np.abs(after - before).sum()) if view.replicas_env else float(
            np.count_nonzero(after != before))
        before = after
        reward[i] = r
        latency[i] = info["latency"]
        pods[i] = info["pod_count"]
        good = info["requests"] - info["failed_requests"]
        ok += good
        lat_sum += info["latency"] * good
        failed += info["failed_requests"]
        if per_request is not None:
            per_request += info["latency_hist"]
        if terminated or truncated:
            reward, latency, pods = reward[: i + 1], latency[: i + 1], pods[: i + 1]
            break
    wall = time.perf_counter() - t0
    env.close()
    served = latency[latency > 0]
    slo_ms = slo_latency_ms(sc)
    return {
        "policy": policy.name,
        "mean_reward": float(reward.mean()),
        "mean_latency_ms": float(lat_sum / ok) if ok else 0.0,
        "p95_latency_ms": float(np.percentile(served, 95)) if served.size else 0.0,
        "failed_requests": int(failed),
        "mean_pods": float(pods.mean()),
        "pod_hours": float(pods.sum() * sc.slots_per_step * sc.slot_s / 3600.0),
        "replica_changes": int(changes),
        "slo_latency_ms": slo_ms,
        "steps_over_slo_pct": float(100.0 * np.mean(latency > slo_ms)) if n else 0.0,
        **request_percentiles(per_request),
        "steps": len(reward),
        "wall_s": round(wall, 3),
        "series": {"reward": reward.tolist(), "latency": latency.tolist(), "pods": pods.tolist()},
    }


def _decision(view: Any) -> np.ndarray:
    """(D,) what the deployments run now: replicas (pinned) or nodes."""
    return (view.replicas if view.replicas_env else view.nodes).astype(np.int64)


def slo_latency_ms(scenario: Scenario) -> float:
    """The latency objective of a step: twice the network floor, the mean delay from a
    station to its own node (what a request served at home without throttling takes)."""
    delay = np.asarray(scenario.delay_ms, dtype=np.float64)
    return float(2.0 * delay[np.arange(scenario.n_stations), scenario.home_nodes].mean())


def request_percentiles(hist: np.ndarray | None) -> dict[str, float | None]:
    """p50, p95 and p99 of the successful requests' latency from 1-ms bins: the lower
    edge of the bin the percentile falls in (so within 1 ms below the exact value); None
    without a histogram or requests."""
    keys = ("request_p50_ms", "request_p95_ms", "request_p99_ms")
    if hist is None or hist.sum() == 0:
        return dict.fromkeys(keys)
    cum = np.cumsum(hist) / hist.sum()
    return {k: float(np.searchsorted(cum, q)) for k, q in zip(keys, (0.5, 0.95, 0.99),
                                                              strict=True)}
