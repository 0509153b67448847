"""Load on the placement endpoint against a trivial Serve deployment, same run, same machine.

Starts a local Ray and Serve, deploys the placement app (a small PPO checkpoint trained
here unless `--model` names one) and a trivial deployment that answers `{"ok": true}`,
then drives both over HTTP at concurrency 1, 8 and 32 (aiohttp, keep-alive) for
`--seconds` each, alternating them; the placement app both one cluster per request
(`/v1/placement`, batched inside the replica with `@serve.batch`) and `--batch-clusters`
clusters per request (`/v1/placement:batch`). Prints one JSON object: p50/p99 latency (ms),
requests/s and errors per target and concurrency, and the ratios the targets are about.

    python bench/serve_load.py [--seconds 8] [--model CHECKPOINT_OR_REGISTRY_REF]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    """A free TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bodies(n: int) -> list[bytes]:
    """n request bodies from states of trace B."""
    from lwmecps_rllib.envs import make_env
    from lwmecps_rllib.serving import request_from_env

    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs", "trace": "b"})
    env.reset(seed=0)
    env.action_space.seed(0)
    out = []
    for _ in range(n):
        out.append(json.dumps(request_from_env(env)).encode())
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    return out


async def drive(url: str, payloads: list[bytes], concurrency: int, seconds: float) -> dict:
    """`concurrency` workers posting for `seconds`; latency percentiles, rate, errors."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"content-type": "application/json"}
    stop_at = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop_at:
                body = payloads[i % len(payloads)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1e3)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies)
    return {"requests": len(lat), "errors": int(errors), "rps": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3)}


def train_model(folder: Path) -> str:
    """A small PPO checkpoint (2 iterations) to serve."""
    from lwmecps_rllib.spec import TrainingSpec
    from lwmecps_rllib.train import save_atomic, train

    algo, _ = train(TrainingSpec(algorithm="ppo", params={
        "train_batch_size_per_learner": 512, "minibatch_size": 128, "num_epochs": 1},
        resources={"num_envs": 4}, budget={"iterations": 2}))
    path = save_atomic(algo, folder / "checkpoint")
    algo.stop()
    return str(path)


def main() -> None:
    """Run the benchmark and print JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--model", default=None, help="checkpoint folder or registry ref")
    p.add_argument("--registry", default=None)
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--batch-clusters", type=int, default=16,
                   help="clusters per /v1/placement:batch request")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve
    from starlette.requests import Request

    from lwmecps_rllib.serving import app_builder

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    model = args.model or train_model(tmp)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.5})
    class Trivial:
        async def __call__(self, request: Request) -> dict:
            await request.body()
            return {"ok": True}

    serve.run(Trivial.bind(), name="trivial", route_prefix="/trivial")
    serve.run(app_builder({"model": model, "registry": args.registry}), name="lwmecps",
              route_prefix="/")
    payloads = bodies(64)
    k = args.batch_clusters
    batched = [b'{"clusters": [' + b",".join(payloads[i:i + k]) + b"]}"
               for i in range(0, len(payloads) - k + 1, k)]
    targets = {"trivial": (f"http://127.0.0.1:{port}/trivial", payloads, 1),
               "placement": (f"http://127.0.0.1:{port}/v1/placement", payloads, 1),
               "placement_batch": (f"http://127.0.0.1:{port}/v1/placement:batch", batched, k)}
    for url, data, _ in targets.values():  # warm-up
        asyncio.run(drive(url, data, 4, 1.5))
    results: dict[str, dict[str, dict]] = {name: {} for name in targets}
    for c in (int(x) for x in args.concurrency.split(",")):
        for name, (url, data, per_request) in targets.items():
            r = asyncio.run(drive(url, data, c, args.seconds))
            r["decisions_per_s"] = round(r["rps"] * per_request, 1)
            results[name][str(c)] = r
            print(json.dumps({name: {c: r}}), file=sys.stderr, flush=True)
    ray.shutdown()  # ends Serve with it (serve.shutdown() logs a raylet warning to stdout)
    ours, ref, bat = results["placement"], results["trivial"], results["placement_batch"]
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds_per_point": args.seconds,
        "clusters_per_batch_request": k,
        "results": results,
        "ratios": {
            "p50_c1_placement_over_trivial": round(ours["1"]["p50_ms"] / ref["1"]["p50_ms"], 3)
            if "1" in ours else None,
            "rps_c32_placement_over_trivial": round(ours["32"]["rps"] / ref["32"]["rps"], 3)
            if "32" in ours else None,
        },
        "targets": {"p50_c1_ratio_max": 1.5, "decisions_per_s_c32_min": 300,
                    "errors": 0},
        "met": {
            "p50_c1": "1" in ours and ours["1"]["p50_ms"] <= 1.5 * ref["1"]["p50_ms"],
            "decisions_per_s_c32": "32" in bat and max(
                bat["32"]["decisions_per_s"], ours["32"]["decisions_per_s"]) >= 300,
            "errors": all(v["errors"] == 0 for r in (ours, bat) for v in r.values()),
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
