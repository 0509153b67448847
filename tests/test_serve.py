"""The Serve app on a local Ray, queried over HTTP: decisions equal the checkpoint's greedy
actions, bad input is a 4xx naming the field (fuzzed), models roll out without dropped
requests, and `serve deploy` of serve/config.yaml works on a real Ray head."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from conftest import free_port, stop_process_group
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwmecps_rllib.algorithms.inference import greedy_actions, load_module
from lwmecps_rllib.envs import make_env
from lwmecps_rllib.model_registry import ModelRegistry
from lwmecps_rllib.serving import request_from_env
from lwmecps_rllib.spec import TrainingSpec
from lwmecps_rllib.train import save_atomic, train

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
TINY = {"train_batch_size_per_learner": 256, "minibatch_size": 128, "num_epochs": 1}


@pytest.fixture(scope="module")
def models(ray_session, tmp_path_factory):
    """Two trained checkpoints registered in a fresh registry."""
    root = tmp_path_factory.mktemp("serve")
    reg = ModelRegistry(root / "registry.sqlite")
    ids = []
    for i, seed in enumerate((0, 1)):
        algo, _ = train(TrainingSpec(algorithm="ppo", params=TINY, seed=seed,
                                     model={"hidden": [32, 32]}, resources={"num_envs": 4},
                                     budget={"iterations": 2}))
        ck = save_atomic(algo, root / f"ck{i}")
        algo.stop()
        ids.append(reg.register(ck, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                                scenario="testbed-4bs").id)
    reg.promote(ids[0])
    return reg, ids


def app_config(reg: ModelRegistry, user_config: dict | None = None, name: str = "lwmecps",
               route_prefix: str = "/", **options) -> dict:
    """One application of a Serve config file (as in serve/config.yaml) on `reg`."""
    deployment = {"name": "PlacementService", "ray_actor_options": {"num_cpus": 1}, **options}
    if user_config is not None:
        deployment["user_config"] = user_config
    return {"name": name, "route_prefix": route_prefix,
            "import_path": "lwmecps_rllib.serving:app_builder",
            "args": {"model": "production", "registry": str(reg.path)},
            "deployments": [deployment]}


def deploy(*apps: dict) -> None:
    """Apply a Serve config holding `apps` to the running Serve instance, as `serve deploy`
    and KubeRay do: a change of user_config alone is rolled out in place (`reconfigure`
    on the running replicas). Returns once the controller accepted it."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(
        {"applications": list(apps)}))


def wait_until(check, what: str, timeout: float = 120.0):
    """Poll `check()` until it returns a true value (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            got = check()
            if got:
                return got
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def server(models):
    from ray import serve

    reg, _ids = models
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy(app_config(reg))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    wait_until(lambda: client.get("/healthz").status_code == 200, "the app to answer")
    yield client
    client.close()
    serve.shutdown()


def rolled_out(server: httpx.Client, before: dict) -> dict:
    """`GET /v1/model` once one more rollout than in `before` was done (ok or failed)."""
    total = sum(before["rollouts"].values())
    return wait_until(lambda: (m := server.get("/v1/model").json())
                      and sum(m["rollouts"].values()) > total and m, "the rollout")


def states(n: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Request bodies and the env's own observations for n states of trace B."""
    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs", "trace": "b"})
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    bodies, observations = [], []
    for _ in range(n):
        bodies.append(request_from_env(env))
        observations.append(obs)
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()
    return bodies, np.stack(observations)


def test_decisions_are_the_checkpoints_greedy_actions(server, models):
    reg, ids = models
    bodies, obs = states(40)
    expected = greedy_actions(load_module(reg.checkpoint_path(ids[0])), obs)
    for body, act in zip(bodies, expected, strict=True):
        r = server.post("/v1/placement", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_id"] == ids[0] and out["env"] == "LWMECPSEnv3"
        assert [d["replicas"] for d in out["decisions"]] == act.tolist()
        assert out["decision_time_ms"] > 0
    r = server.post("/v1/placement:batch", json={"clusters": bodies})
    assert r.status_code == 200, r.text
    got = [[d["replicas"] for d in res["decisions"]] for res in r.json()["results"]]
    assert got == expected.tolist()


def test_model_health_and_openapi(server, models):
    reg, ids = models
    m = server.get("/v1/model").json()
    assert m["model_id"] == ids[0] and m["algorithm"] == "lwmecps-ppo"
    assert m["scenario"] == "testbed-4bs" and m["stage"] == "production"
    assert m["reference"] == "production", m
    assert m["last_rollout"]["state"] == "ok" and m["last_rollout"]["model_id"] == ids[0]
    assert Path(m["checkpoint"]) == reg.checkpoint_path(ids[0])
    assert server.get("/healthz").json() == {"status": "ok", "model_id": ids[0]}
    spec = server.get("/openapi.json").json()
    assert {"/v1/placement", "/v1/placement:batch", "/v1/model", "/healthz"} <= set(spec["paths"])
    assert "PlacementRequest" in json.dumps(spec["components"])


def good_body() -> dict:
    return states(1, seed=5)[0][0]


def _set(path: str, value):
    def mutate(b: dict) -> None:
        cur = b
        keys = path.split(".")
        for k in keys[:-1]:
            cur = cur[int(k)] if k.isdigit() else cur[k]
        last = keys[-1]
        if value is KeyError:
            del cur[last]
        elif last.isdigit():
            cur[int(last)] = value
        else:
            cur[last] = value
    return mutate


@pytest.mark.parametrize(("mutate", "status", "field"), [
    (_set("nodes", KeyError), 422, "nodes"),
    (_set("users", KeyError), 422, "users"),
    (_set("nodes.0.name", KeyError), 422, "nodes[0].name"),
    (_set("nodes.0.capacity.cpu", "four"), 422, "nodes[0].capacity.cpu"),
    (_set("deployments.1.replicas", 1.5), 422, "deployments[1].replicas"),
    (_set("nodes.0.capacity.cpu", float("nan")), 422, "nodes[0].capacity.cpu"),
    (_set("nodes.2.avg_latency_ms", float("inf")), 422, "nodes[2].avg_latency_ms"),
    (_set("nodes.1.capacity.ram_mb", -5), 422, "nodes[1].capacity.ram_mb"),
    (_set("nodes.3.name", "edge-99"), 422, "nodes[3].name"),
    (lambda b: b["nodes"].pop(), 422, "nodes"),
    (_set("deployments.0.replicas", -1), 422, "deployments[0].replicas"),
    (_set("time_of_day_s", 90000), 422, "time_of_day_s"),
    (_set("extra", 1), 422, "extra"),
])
def test_bad_input_is_a_4xx_naming_the_field(server, mutate, status, field):
    body = good_body()
    mutate(body)
    r = server.post("/v1/placement", content=json.dumps(body),
                    headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["detail"][0]["field"] == field, err
    assert err["error"].startswith(field)
    assert server.get("/healthz").status_code == 200


def test_malformed_and_oversize_bodies(server):
    r = server.post("/v1/placement", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    r = server.post("/v1/placement", content=b"[" + b"1," * 600_000 + b"1]",
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]

    def chunks():
        for _ in range(40):
            yield b" " * 65536

    r = server.post("/v1/placement", content=chunks(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = server.post("/v1/placement:batch", json={"clusters": []})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "clusters"
    assert server.get("/healthz").status_code == 200


def send_chunked(base_url: str, chunk: int, limit: int, timeout: float = 30.0
                 ) -> tuple[int, int, bytes]:
    """POST a chunked body (no Content-Length) one chunk at a time, pulling the next chunk
    only while no answer came and at most `limit` bytes were sent; then wait for the
    answer without ending the body. Returns (status, bytes sent, response head)."""
    import select
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    sent = 0
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(b"POST /v1/placement HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        while sent <= limit and not select.select([sock], [], [], 0)[0]:
            sock.sendall(b"%x\r\n" % chunk + b" " * chunk + b"\r\n")
            sent += chunk
        head = b""
        while b"\r\n" not in head:
            data = sock.recv(4096)  # times out (socket timeout) if no answer comes
            if not data:
                break
            head += data
    return int(head.split(b" ")[1]), sent, head


def test_a_chunked_oversize_body_is_refused_before_it_ends(server):
    chunk, limit = 65536, 1 << 20
    status, sent, head = send_chunked(str(server.base_url), chunk, limit)
    assert status == 413, head
    assert sent <= limit + chunk
    assert server.get("/healthz").status_code == 200


def test_a_flood_is_shed_with_fast_503s_and_serving_goes_on(server, models):
    """A deployment with room for 1 request in flight and 1 queued: 16 slow requests at
    once get 503s at once; afterwards the app answers as before."""
    import asyncio

    reg, _ids = models
    current = server.get("/v1/model").json()["last_rollout"]["reference"]
    main = app_config(reg, {"model": current})
    deploy(main, app_config(reg, name="flood", route_prefix="/flood", max_ongoing_requests=1,
                            max_queued_requests=1, ray_actor_options={"num_cpus": 0}))
    wait_until(lambda: server.get("/flood/healthz").status_code == 200, "the flood app")
    body = {"clusters": [good_body()] * 1024}

    async def one(client: httpx.AsyncClient) -> tuple[int, float]:
        t0 = time.monotonic()
        r = await client.post("/flood/v1/placement:batch", json=body)
        return r.status_code, time.monotonic() - t0

    async def flood_it() -> list[tuple[int, float]]:
        async with httpx.AsyncClient(base_url=str(server.base_url), timeout=60) as client:
            return await asyncio.gather(*(one(client) for _ in range(16)))

    try:
        results = asyncio.run(flood_it())
        codes = [c for c, _ in results]
        assert set(codes) <= {200, 503} and codes.count(200) >= 1, codes
        assert codes.count(503) >= 8, codes
        slowest_ok = max(t for c, t in results if c == 200)
        assert all(t < slowest_ok for c, t in results if c == 503), results
        after = server.post("/flood/v1/placement", json=good_body())
        assert after.status_code == 200, after.text
    finally:
        deploy(main)
    assert server.get("/healthz").status_code == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_bodies_never_get_a_5xx(server, data):
    body = good_body()
    how = data.draw(st.sampled_from(["replace", "set", "delete", "random"]))
    if how == "random":
        body = data.draw(json_values)
    else:
        # Walk to a random place of a valid body and break it there.
        cur = body
        while True:
            keys = list(cur.keys()) if isinstance(cur, dict) else list(range(len(cur)))
            if not keys:
                break
            k = data.draw(st.sampled_from(keys))
            child = cur[k]
            if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
                cur = child
                continue
            if how == "delete":
                del cur[k]
            else:
                cur[k] = data.draw(json_values)
            break
    content = json.dumps(body, allow_nan=True)
    r = server.post("/v1/placement", content=content,
                    headers={"content-type": "application/json"})
    assert r.status_code < 500, (content, r.text)
    if r.status_code != 200:
        assert 400 <= r.status_code < 500 and r.json()["detail"][0]["field"]


def test_rollout_without_dropped_requests(server, models):
    reg, ids = models
    body = good_body()
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(server.base_url), timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/placement", json=body)
                seen.append((r.status_code, r.json().get("model_id", "")))

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    deploy(app_config(reg, {"model": ids[1]}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(m == ids[1] for _, m in seen[-5:]):
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert seen and all(code == 200 for code, _ in seen), [c for c, _ in seen if c != 200][:5]
    models_seen = [m for _, m in seen]
    assert models_seen[0] == ids[0] and models_seen[-1] == ids[1]
    assert server.get("/v1/model").json()["model_id"] == ids[1]


def bad_models(reg: ModelRegistry, ids: list[str], folder: Path) -> dict[str, str]:
    """References that cannot be rolled out: an unknown id, a registered model whose
    checkpoint changed, a checkpoint folder that holds no model, and a model of another
    scenario (one the module could take: same cluster, same observation size)."""
    import shutil

    source = reg.checkpoint_path(ids[1])
    corrupt = reg.register(source, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                           scenario="testbed-4bs")
    for f in Path(corrupt.checkpoint).rglob("module_state*"):
        f.write_bytes(b"not a model")
    garbage = folder / "garbage"
    shutil.copytree(source, garbage)
    for f in garbage.rglob("module_state*"):
        f.write_bytes(b"not a model")
    other = reg.register(source, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                         scenario="testbed-4bs-peak")
    return {"missing id": "ppo-20000101-000000-000000", "corrupt checkpoint": corrupt.id,
            "not a model": str(garbage), "wrong scenario": other.id}


def test_failed_rollouts_keep_serving_the_old_model(server, models, tmp_path):
    reg, ids = models
    before = server.get("/v1/model").json()
    old = before["model_id"]
    body = good_body()
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(server.base_url), timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/placement", json=body)
                    seen.append((r.status_code, r.json().get("model_id", "")))
                except httpx.HTTPError as exc:
                    seen.append((0, repr(exc)))

    workers = [threading.Thread(target=hammer) for _ in range(2)]
    for w in workers:
        w.start()
    reports = {}
    try:
        m = before
        for what, ref in bad_models(reg, ids, tmp_path).items():
            deploy(app_config(reg, {"model": ref}))
            m = rolled_out(server, m)
            assert m["model_id"] == old, (what, m)
            reports[what] = m["last_rollout"]
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert seen and all(s == (200, old) for s in seen), [s for s in seen if s != (200, old)][:5]
    for what, report in reports.items():
        assert report["state"] == "failed" and report["error"], (what, report)
    assert "checksum" in reports["corrupt checkpoint"]["error"]
    assert "testbed-4bs-peak" in reports["wrong scenario"]["error"]
    m = server.get("/v1/model").json()
    assert m["rollouts"]["failed"] == before["rollouts"]["failed"] + 4


def serve_config(folder: Path, reg: ModelRegistry, model_id: str,
                 num_cpus: float | None = None) -> tuple[Path, int]:
    """serve/config.yaml on a free port, serving `model_id` of `reg`; (path, port)."""
    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"]["registry"] = str(reg.path)
    app["deployments"][0]["user_config"]["model"] = model_id
    if num_cpus is not None:
        app["deployments"][0]["ray_actor_options"]["num_cpus"] = num_cpus
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def answer(port: int, body: dict) -> dict | None:
    """The app's answer to `body` when it is a 200, else None."""
    r = httpx.post(f"http://127.0.0.1:{port}/v1/placement", json=body, timeout=10)
    return r.json() if r.status_code == 200 else None


def test_serve_deploy_and_promote_rollout_on_a_real_head(ray_head, models, tmp_path):
    """`serve deploy` of the config file serving `production`, then `models promote ID
    --rollout DASHBOARD`: the running app resolves the stage anew to the promoted id."""
    import shutil

    from lwmecps_rllib.model_registry import __main__ as registry_cli

    reg, ids = models
    # A copy of the whole registry (the file and its checkpoints), promoted on its own.
    shutil.copy(reg.path, tmp_path / "registry.sqlite")
    shutil.copytree(reg.root, tmp_path / reg.root.name)
    reg = ModelRegistry(tmp_path / "registry.sqlite")
    reg.promote(ids[0])
    path, port = serve_config(tmp_path, reg, "production", num_cpus=0.5)
    env = {"RAY_AUTH_MODE": "disabled", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    serve_cli = str(Path(sys.executable).parent / "serve")
    out = subprocess.run([serve_cli, "deploy", str(path), "--address", ray_head],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        body = good_body()
        first = wait_until(lambda: answer(port, body), "the deployed app", timeout=120)
        assert first["model_id"] == ids[0]
        assert not math.isnan(first["decision_time_ms"])
        assert registry_cli.main(["--registry", str(reg.path), "promote", ids[1],
                                  "--rollout", ray_head]) == 0
        wait_until(lambda: (a := answer(port, body)) and a["model_id"] == ids[1],
                   "the promoted model to answer", timeout=120)
        m = httpx.get(f"http://127.0.0.1:{port}/v1/model", timeout=10).json()
        assert m["reference"] == "production" and m["model_id"] == ids[1]
        assert m["last_rollout"] == {**m["last_rollout"], "state": "ok", "model_id": ids[1]}
        assert registry_cli.main(["--registry", str(reg.path), "promote", ids[0],
                                  "--rollout", ray_head, "--app", "nope"]) == 3
    finally:
        subprocess.run([serve_cli, "shutdown", "--address", ray_head, "-y"], env=env,
                       capture_output=True, timeout=120)


def test_serve_run_of_the_config_file(models, tmp_path):
    """`serve run serve/config.yaml` (its own local Ray), queried, then stopped with
    SIGTERM to its process group (`serve run` in the background ignores SIGINT)."""
    import os

    reg, ids = models
    path, port = serve_config(tmp_path, reg, ids[1])
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "serve"), "run", str(path)],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=tmp_path)
    try:
        body = good_body()
        deadline = time.monotonic() + 150
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/placement", json=body, timeout=10)
                if r.status_code == 200:
                    answer = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-3000:]
        assert answer["model_id"] == ids[1]
    finally:
        stop_process_group(proc)
        log.close()
