"""The controller's own CPU time per control period on a 64-station cluster.

Builds the emulated Kubernetes API (kmock, in a child process, so its CPU is not the
controller's) holding the nodes and the 64 server Deployments of the generated scenario
`city-64`, then runs the controller in live mode in this process with a model of that
scenario loaded in process (a PPO module, random weights) and the `hpa` fallback, with
metrics of fixed numbers. Each period's CPU time is `time.process_time()` around the
period's own work (read 64 Deployments, measure, the rule, the model's forward pass, the
check, apply, the log and the metrics); the API's answers are waited for, not counted.
Prints one JSON object: p50, p90 and max CPU ms per period and the wall time per period.

    python bench/controller.py [--periods 60] [--mode live|shadow]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import platform
import tempfile
import threading
from pathlib import Path

import numpy as np

SCENARIO = "city-64"
NS = "lwmecps-testapp"


def seed(kmock, scenario) -> None:
    """The scenario's nodes and one ready Deployment per station (2 replicas)."""
    for node in scenario.node_names:
        kmock.objects["v1/nodes", None, node] = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
            "status": {"capacity": {"cpu": "64"}, "allocatable": {"cpu": "64"}}}
    for st in scenario.stations:
        labels = {"app": st.deployment}
        kmock.objects["apps/v1/deployments", NS, st.deployment] = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": st.deployment, "namespace": NS, "generation": 1},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [{"name": "server", "image": "testapp"}]}}},
            "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
                       "observedGeneration": 1}}


async def _emulate(conn) -> None:
    """Serve the emulated API; ready Deployments follow their spec; until told to stop."""
    import kmock

    from lwmecps_rllib.scenarios import load_scenario

    sc = load_scenario(SCENARIO)
    async with kmock.KubernetesEmulator() as k, kmock.Server(k):
        seed(k, sc)
        conn.send(str(k.url).rstrip("/"))
        while not conn.poll():
            for st in sc.stations:
                obj = k.objects["apps/v1/deployments", NS, st.deployment]
                n = obj["spec"]["replicas"]
                if obj["status"]["readyReplicas"] != n:
                    obj.patch({"status": {"replicas": n, "readyReplicas": n,
                                          "updatedReplicas": n}})
            await asyncio.sleep(0.05)


def emulator(conn) -> None:
    """Child process entry."""
    asyncio.run(_emulate(conn))


class FixedMetrics:
    """Metrics of fixed numbers (the providers' HTTP is not the controller's work)."""

    def start(self) -> None:
        """Nothing to start."""

    def sample(self):
        """30 ms mean latency, 6400 requests, 10 failed."""
        from lwmecps_rllib.backends.metrics import MetricsSample

        return MetricsSample(average_latency_ms=30.0, requests=6400, failed=10)


def local_policy():
    """A PPO module of the scenario (random weights, seeded) in process."""
    import torch

    from lwmecps_rllib.algorithms import get_algorithm_class
    from lwmecps_rllib.control import LocalPolicy
    from lwmecps_rllib.envs import make_env
    from lwmecps_rllib.serving import PlacementPolicy

    torch.manual_seed(0)
    env = make_env("LWMECPSEnv3", {"scenario": SCENARIO, "obs_format": "box"})
    cfg = get_algorithm_class("ppo").get_default_config()
    spec = cfg.get_default_rl_module_spec()
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    spec.model_config = cfg._model_config
    return LocalPolicy(PlacementPolicy(spec.build(), "LWMECPSEnv3", SCENARIO, "bench"))


def main() -> None:
    """Run and print JSON."""
    from kubernetes import client

    from lwmecps_rllib.backends.config import KubernetesConfig
    from lwmecps_rllib.control import ControlOptions, build_controller

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--periods", type=int, default=60)
    p.add_argument("--mode", default="live", choices=("live", "shadow"))
    args = p.parse_args()
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=emulator, args=(child,), daemon=True)
    proc.start()
    try:
        url = parent.recv()
        cfg = client.Configuration()
        cfg.host = url
        with tempfile.TemporaryDirectory() as tmp:
            options = ControlOptions(model="in-process", scenario=SCENARIO, mode=args.mode,
                                     fallback="hpa", decision_log=str(Path(tmp) / "d.jsonl"))
            ctl = build_controller(options, KubernetesConfig(namespace=NS, min_replicas=0),
                                   threading.Event(), policy=local_policy(),
                                   api_client=client.ApiClient(cfg), metrics=FixedMetrics())
            ctl.run_period()  # warm-up: first connections, the rule's set-up
            records = [ctl.run_period() for _ in range(args.periods)]
            ctl.close()
    finally:
        parent.send("stop")
        proc.join(timeout=10)
    cpu = np.array([r["cpu_ms"] for r in records])
    sources = {s: sum(r["source"] == s for r in records) for s in ("policy", "fallback", "none")}
    print(json.dumps({
        "bench": "controller", "scenario": SCENARIO, "stations": len(records[0]["cluster"]),
        "mode": args.mode, "periods": args.periods, "sources": sources,
        "cpu_ms_per_period": {"p50": round(float(np.percentile(cpu, 50)), 2),
                              "p90": round(float(np.percentile(cpu, 90)), 2),
                              "max": round(float(cpu.max()), 2)},
        "target_cpu_ms": 50, "python": platform.python_version(),
        "machine": platform.machine()}, indent=2))


if __name__ == "__main__":
    main()
