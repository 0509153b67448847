"""The Kubernetes backend with the real client over HTTP against an emulated API server
(kmock): patches sent, rollout waits, retries, guard rails, dry-run, and whole episodes of
the unchanged envs. A test marked `k8s` runs an episode on a real cluster (KUBECONFIG)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import time

import numpy as np
import pytest

from lwmecps_rllib.backends.kubernetes import (
    GuardRailError,
    KubernetesBackend,
    KubernetesConfig,
    measurement_from_sample,
)
from lwmecps_rllib.backends.metrics import MetricsError, MetricsSample
from lwmecps_rllib.envs import LWMECPSEnv2, LWMECPSEnv3
from lwmecps_rllib.scenarios import load_scenario

NS = "lwmecps-testapp"
SC = load_scenario("testbed-4bs")
DEPS = list(SC.deployment_names)
NODES = list(SC.node_names)


def api_client(url):
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = str(url).rstrip("/")
    return client.ApiClient(cfg)


def seed_cluster(kmock, replicas: int = 1) -> None:
    for node in NODES:
        kmock.objects["v1/nodes", None, node] = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
            "status": {"capacity": {"cpu": "8", "memory": "16Gi"},
                       "allocatable": {"cpu": "8", "memory": "15Gi"}}}
    for i, dep in enumerate(DEPS):
        labels = {"app": dep}
        kmock.objects["apps/v1/deployments", NS, dep] = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": dep, "namespace": NS, "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "nodeSelector": {"kubernetes.io/hostname": NODES[i]},
                         "containers": [{"name": "server", "image": "testapp"}]}}},
            "status": {"replicas": replicas, "readyReplicas": replicas,
                       "updatedReplicas": replicas, "observedGeneration": 1}}


def pod(dep: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{dep}-0", "namespace": NS, "labels": {"app": dep}},
            "spec": {"nodeName": node, "containers": [{"name": "server", "image": "testapp"}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


async def controller(kmock, skip: set[str] = frozenset(), period: float = 0.02) -> None:
    """What the Deployment controller and the scheduler would do: every replica ready,
    and the (first) pod on the node the deployment's nodeSelector names."""
    while True:
        for dep in DEPS:
            if dep in skip:
                continue
            obj = kmock.objects["apps/v1/deployments", NS, dep]
            n = obj["spec"]["replicas"]
            st = obj.get("status", {})
            if st.get("readyReplicas") != n or st.get("replicas") != n:
                obj.patch({"status": {"replicas": n, "readyReplicas": n,
                                      "updatedReplicas": n, "observedGeneration": 1}})
            node = obj["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"]
            key = ("v1/pods", NS, f"{dep}-0")
            if key not in kmock.objects or kmock.objects[key]["spec"]["nodeName"] != node:
                kmock.objects[key] = pod(dep, node)
        await asyncio.sleep(period)


@contextlib.asynccontextmanager
async def running(coro):
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class FakeMetrics:
    """A metrics provider with fixed numbers (the providers have their own tests)."""

    def __init__(self, latency: float = 25.0) -> None:
        self.latency = latency
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def sample(self) -> MetricsSample:
        return MetricsSample(average_latency_ms=self.latency, requests=100, failed=4)


def backend_factory(kmock, metrics=None, clock=time.time, **cfg):
    config = KubernetesConfig.from_dict({"namespace": NS, "poll_interval_s": 0.02,
                                         "rollout_timeout_s": 2.0, "stabilization_time_s": 0,
                                         "backoff_s": 0.01, "request_timeout_s": 2.0, **cfg})
    made = []

    def factory(spec, trace):
        b = KubernetesBackend(spec, trace, config, api_client=api_client(kmock.url),
                              metrics=metrics or FakeMetrics(), clock=clock,
                              sleep=lambda s: None)
        made.append(b)
        return b

    factory.made = made
    return factory


def requests_seen(kmock) -> list:
    """Every request the emulated API server received, in order."""
    return list(kmock)


def method(r) -> str:
    return str(getattr(r.method, "value", r.method)).upper()


def patches(kmock) -> list[tuple[str, str]]:
    return [(method(r), str(r.url.path)) for r in requests_seen(kmock) if method(r) == "PATCH"]


def nothing_deleted(kmock) -> bool:
    return not any(method(r) == "DELETE" for r in requests_seen(kmock))


async def test_env3_episode_scales_deployments(kmock):
    seed_cluster(kmock)
    factory = backend_factory(kmock)
    env = LWMECPSEnv3(scenario="testbed-4bs", backend=factory, obs_format="box")
    async with running(controller(kmock)):
        obs, info = await asyncio.to_thread(env.reset, seed=0)
        assert env.observation_space.contains(obs)
        obs, reward, _term, _trunc, info = await asyncio.to_thread(env.step, np.array([2, 1, 3, 1]))
    assert env.observation_space.contains(obs)
    assert "error" not in info and info["valid_action"]
    assert info["latency"] > 0 and info["pod_count"] == 7
    assert np.isfinite(reward)
    for dep, n in zip(DEPS, [2, 1, 3, 1], strict=True):
        assert kmock.objects["apps/v1/deployments", NS, dep]["spec"]["replicas"] == n
    sent = patches(kmock)
    assert all(path.endswith("/scale") and f"/namespaces/{NS}/" in path for _, path in sent)
    # reset found the scenario's 1 replica everywhere, the step changed two of them
    assert len(sent) == 2
    assert factory.made[0].metrics.started == 1
    assert nothing_deleted(kmock)


async def test_transient_errors_are_retried(kmock):
    seed_cluster(kmock)
    backend = backend_factory(kmock)(LWMECPSEnv3(scenario="testbed-4bs").spec_, SC.trace("a"))
    kmock["patch"][:2] << 409
    async with running(controller(kmock)):
        n = await asyncio.to_thread(backend.scale, DEPS[0], 3)
    assert n == 3
    assert kmock.objects["apps/v1/deployments", NS, DEPS[0]]["spec"]["replicas"] == 3
    assert len(patches(kmock)) == 3  # 409, 409, then accepted
    for status in (500, 429, 503):
        k = len(kmock["list"])  # reactions index the matching requests of the whole test
        kmock["list"][k:k + 1] << status
        before = len(requests_seen(kmock))
        nodes = await asyncio.to_thread(backend.read_nodes)
        assert sorted(nodes) == NODES
        assert len(requests_seen(kmock)) - before == 2  # the error, then the answer


async def test_timeouts_are_retried_then_reported(kmock):
    seed_cluster(kmock)
    backend = backend_factory(kmock, request_timeout_s=0.3, retries=2)(
        LWMECPSEnv3(scenario="testbed-4bs").spec_, SC.trace("a"))
    kmock["patch"][:1] << (lambda: asyncio.sleep(1.0))
    n = await asyncio.to_thread(backend.scale, DEPS[1], 2)
    assert n == 2
    kmock["patch"] << 503
    from lwmecps_rllib.backends.kubernetes import BackendError

    with pytest.raises(BackendError, match="gave up after 3 attempts"):
        await asyncio.to_thread(backend.scale, DEPS[1], 3)
    kmock["list"] << 403
    with pytest.raises(BackendError, match="403"):
        await asyncio.to_thread(backend.read_nodes)


async def test_rollout_that_never_becomes_ready_ends_the_step_not_the_env(kmock):
    seed_cluster(kmock)
    env = LWMECPSEnv3(scenario="testbed-4bs", backend=backend_factory(kmock, rollout_timeout_s=0.3),
                      obs_format="box")
    async with running(controller(kmock)):
        await asyncio.to_thread(env.reset, seed=0)
    async with running(controller(kmock, skip={DEPS[2]})):
        obs, reward, _, _, info = await asyncio.to_thread(env.step,
                                                                 np.array([1, 1, 4, 1]))
    assert "not ready" in info["error"] and DEPS[2] in info["error"]
    assert reward == SC.invalid_action_reward
    assert env.observation_space.contains(obs)
    async with running(controller(kmock)):
        obs, reward, _term, _trunc, info = await asyncio.to_thread(env.step,
                                                                 np.array([1, 1, 2, 1]))
    assert "error" not in info and reward > SC.invalid_action_reward


async def test_guard_rails(kmock):
    seed_cluster(kmock)
    backend = backend_factory(kmock, max_replicas=3)(LWMECPSEnv3(scenario="testbed-4bs").spec_,
                                                      SC.trace("a"))
    before = len(requests_seen(kmock))
    with pytest.raises(GuardRailError, match="not managed"):
        backend.scale("kube-dns", 2)
    with pytest.raises(GuardRailError, match="namespace 'kube-system' is not managed"):
        backend.scale(DEPS[0], 2, namespace="kube-system")
    with pytest.raises(GuardRailError, match="node 'master'"):
        backend.move(DEPS[0], "master")
    assert len(requests_seen(kmock)) == before  # refused before anything was sent
    async with running(controller(kmock)):
        assert await asyncio.to_thread(backend.scale, DEPS[0], 4) == 3  # clamped
    assert kmock.objects["apps/v1/deployments", NS, DEPS[0]]["spec"]["replicas"] == 3
    assert backend.clamp(-2) == 1  # min_replicas defaults to 1
    assert nothing_deleted(kmock)


async def test_dry_run_sends_no_patches(kmock, caplog):
    seed_cluster(kmock)
    env = LWMECPSEnv3(scenario="testbed-4bs", backend=backend_factory(kmock, dry_run=True),
                      obs_format="box")
    caplog.set_level("INFO", logger="lwmecps_rllib.backends.kubernetes")
    await asyncio.to_thread(env.reset, seed=0)
    _, _, _, _, info = await asyncio.to_thread(env.step, np.array([3, 3, 3, 3]))
    assert patches(kmock) == []
    assert "error" not in info
    assert sum("dry-run: would scale" in r.message for r in caplog.records) == 4
    assert env.unwrapped.backend.sent[-1]["body"] == {"spec": {"replicas": 3}}


async def test_placement_env_moves_deployments_by_node_selector(kmock):
    seed_cluster(kmock)
    env = LWMECPSEnv2(scenario="testbed-4bs", backend=backend_factory(kmock))
    async with running(controller(kmock)):
        await asyncio.to_thread(env.reset, seed=0)
        _, _, _, _, info = await asyncio.to_thread(env.step, np.array([1, 1, 2, 3]))
    assert "error" not in info
    tpl = kmock.objects["apps/v1/deployments", NS, DEPS[0]]["spec"]["template"]["spec"]
    assert tpl["nodeSelector"] == {"kubernetes.io/hostname": NODES[1]}
    moved = [p for _, p in patches(kmock) if not p.endswith("/scale")]
    assert len(moved) == 1  # reset found all four at home, the step moves one
    assert env.unwrapped.state.node_of[0].tolist() == [1, 1, 2, 3]


async def test_missing_objects_are_clear_errors(kmock):
    seed_cluster(kmock)
    from lwmecps_rllib.backends.kubernetes import BackendError

    factory = backend_factory(kmock, nodes={"node-1": "edge-a"})
    env = LWMECPSEnv3(scenario="testbed-4bs", backend=factory)
    with pytest.raises(BackendError, match=r"node\(s\) \['edge-a'\] not in the cluster"):
        await asyncio.to_thread(env.reset, seed=0)
    env = LWMECPSEnv3(scenario="testbed-4bs", backend=backend_factory(kmock, deployments={
        DEPS[0]: "web"}))
    with pytest.raises(BackendError,
                       match=r"deployment\(s\) \['web'\] not in namespace 'lwmecps-testapp'"):
        await asyncio.to_thread(env.reset, seed=0)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown backend_config key 'namespac'"):
        KubernetesConfig.from_dict({"namespac": "x"})
    with pytest.raises(ValueError, match=r"backend_config\.rollout_timeout_s"):
        KubernetesConfig.from_dict({"rollout_timeout_s": -1})
    with pytest.raises(ValueError, match=r"backend_config\.metrics\.type"):
        KubernetesConfig.from_dict({"metrics": {"type": "statsd"}})
    with pytest.raises(ValueError, match="only used with backend='k8s'"):
        LWMECPSEnv3(scenario="testbed-4bs", backend_config={"namespace": "x"})


def test_nothing_connects_at_construction(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    env = LWMECPSEnv3(scenario="testbed-4bs", backend="k8s", backend_config={"namespace": NS})
    assert env.unwrapped.backend._api_client is None


def test_measurement_from_sample_feeds_the_core():
    env = LWMECPSEnv3(scenario="testbed-4bs")
    env.reset(seed=0)
    state = env.unwrapped.state
    m = measurement_from_sample(env.unwrapped.spec_, state,
                                MetricsSample(average_latency_ms=40.0, requests=200, failed=10,
                                              users={"bs1": 5, "bs2": 6, "bs3": 7, "bs4": 8}),
                                SC.trace("a"))
    assert m.requests[0] == 200 and m.ok[0] == 190
    assert m.avg_latency_ms[0] == pytest.approx(40.0)
    assert m.users[0].tolist() == [5, 6, 7, 8]
    assert m.node_ok[0].sum() == pytest.approx(190)
    with pytest.raises(MetricsError, match="unknown station"):
        measurement_from_sample(env.unwrapped.spec_, state,
                                MetricsSample(average_latency_ms=1.0, users={"bs9": 1}),
                                SC.trace("a"))


@pytest.mark.k8s
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG not set: no cluster")
def test_episode_on_a_real_cluster():
    """A whole LWMECPSEnv3 episode on a real cluster with k8s/testbed/ applied.

    Needs the load generator's URL in LWMECPS_LOADGEN_URL (default
    http://127.0.0.1:8080, e.g. through `kubectl port-forward`).
    """
    cfg = {"namespace": os.environ.get("LWMECPS_NAMESPACE", NS),
           "metrics": {"type": "loadgen",
                       "base_url": os.environ.get("LWMECPS_LOADGEN_URL",
                                                  "http://127.0.0.1:8080")}}
    env = LWMECPSEnv3(scenario="testbed-4bs", backend="k8s", backend_config=cfg,
                      obs_format="box")
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(env.episode_length):
        obs, reward, term, trunc, info = env.step(np.array([1, 1, 1, 1]))
        assert "error" not in info, info["error"]
        assert env.observation_space.contains(obs)
        total += reward
        if term or trunc:
            break
    assert np.isfinite(total)


class _LoadGen:
    """A load generator API on a free port: counters that grow on every read; the next
    `fail` reads answer HTTP 500."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        state = {"total": 0}
        self.fail = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def do_GET(self):
                if outer.fail:
                    outer.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"overloaded")
                    return
                state["total"] += 120
                body = json.dumps({"average_latency": 35.0, "total_requests": state["total"],
                                   "failed_requests": 0}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


async def test_evaluate_command_on_an_emulated_cluster(kmock, tmp_path, capsys):
    import yaml

    from lwmecps_rllib import evaluate

    seed_cluster(kmock)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "emu", "user": {"token": "t"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}]}))
    loadgen = _LoadGen()
    cfg = tmp_path / "backend.yaml"
    cfg.write_text(yaml.safe_dump({
        "namespace": NS, "kubeconfig": str(kubeconfig), "poll_interval_s": 0.02,
        "stabilization_time_s": 0, "rollout_timeout_s": 5,
        "metrics": {"type": "loadgen", "base_url": loadgen.url}}))
    try:
        async with running(controller(kmock)):
            code = await asyncio.to_thread(evaluate.main, [
                "--env", "LWMECPSEnv3", "--scenario", "testbed-4bs", "--policy", "static,hpa",
                "--steps", "3", "--backend", "k8s", "--backend-config", str(cfg)])
    finally:
        loadgen.close()
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "static" in out.out and "hpa" in out.out
    # static asks for 2 replicas everywhere
    assert any(p.endswith("/scale") for _, p in patches(kmock))
    assert nothing_deleted(kmock)
    before = len(requests_seen(kmock))
    code = await asyncio.to_thread(evaluate.main, [
        "--policy", "oracle", "--steps", "1", "--backend", "k8s", "--backend-config", str(cfg)])
    assert len(requests_seen(kmock)) == before  # refused before touching the cluster
    assert code == 2 and "needs backend='sim'" in capsys.readouterr().err


def test_training_config_for_a_cluster():
    from lwmecps_rllib.algorithms import build_config
    from lwmecps_rllib.spec import EnvOptions, Resources, TrainingSpec

    k8s = EnvOptions(scenario="testbed-4bs", backend="k8s", backend_config={"namespace": NS})
    cfg = build_config("ppo", "LWMECPSEnv3", k8s)
    assert cfg.num_envs_per_env_runner == 1 and cfg.gym_env_vectorize_mode == "sync"
    assert cfg.env_config["backend_config"]["namespace"] == NS
    # a step that raises anyway (not a BackendError) recreates the env, not the run
    assert cfg.restart_failed_sub_environments
    with pytest.raises(ValueError, match="num_envs must be 1"):
        build_config(TrainingSpec(resources=Resources(num_envs=4)), "LWMECPSEnv3", k8s)


def scale_behind_the_backs(kmock, counts: dict[str, int]) -> None:
    """What `kubectl scale` or an HPA does: change the Deployments' spec directly."""
    for dep, n in counts.items():
        kmock.objects["apps/v1/deployments", NS, dep].patch({"spec": {"replicas": n}})


async def test_drift_is_reconciled_on_the_next_step(kmock):
    seed_cluster(kmock)
    env = LWMECPSEnv3(scenario="testbed-4bs", backend=backend_factory(kmock), obs_format="box")
    action = np.array([2, 1, 1, 1])
    async with running(controller(kmock)):
        await asyncio.to_thread(env.reset, seed=0)
        await asyncio.to_thread(env.step, action)
        scale_behind_the_backs(kmock, {DEPS[0]: 3, DEPS[1]: 2, DEPS[3]: 4})
        _, _, _, _, info = await asyncio.to_thread(env.step, action)
    assert "error" not in info
    replicas = [kmock.objects["apps/v1/deployments", NS, d]["spec"]["replicas"] for d in DEPS]
    assert replicas[:3] == [2, 1, 1]
    # 4 -> 1 at once exceeds the default scale-down rate (1 pod or 50 % per minute)
    assert replicas[3] == 2
    assert env.unwrapped.state.replicas[0].tolist() == [2, 1, 1, 2]


async def test_moved_behind_the_back_is_moved_back(kmock):
    seed_cluster(kmock)
    env = LWMECPSEnv2(scenario="testbed-4bs", backend=backend_factory(kmock))
    async with running(controller(kmock)):
        await asyncio.to_thread(env.reset, seed=0)
        await asyncio.to_thread(env.step, np.array([0, 1, 2, 3]))
        kmock.objects["apps/v1/deployments", NS, DEPS[2]].patch({"spec": {"template": {
            "spec": {"nodeSelector": {"kubernetes.io/hostname": NODES[0]}}}}})
        _, _, _, _, info = await asyncio.to_thread(env.step, np.array([0, 1, 2, 3]))
    assert "error" not in info
    tpl = kmock.objects["apps/v1/deployments", NS, DEPS[2]]["spec"]["template"]["spec"]
    assert tpl["nodeSelector"] == {"kubernetes.io/hostname": NODES[2]}


async def test_a_metrics_error_mid_episode_is_a_failed_step(kmock):
    from lwmecps_rllib.backends.metrics import LoadGeneratorMetrics

    seed_cluster(kmock)
    loadgen = _LoadGen()
    env = LWMECPSEnv3(scenario="testbed-4bs", obs_format="box", backend=backend_factory(
        kmock, metrics=LoadGeneratorMetrics(loadgen.url, timeout_s=5)))
    try:
        async with running(controller(kmock)):
            await asyncio.to_thread(env.reset, seed=0)
            _, _, _, _, info = await asyncio.to_thread(env.step, np.array([2, 1, 1, 1]))
            assert "error" not in info
            slot = info["slot"]
            loadgen.fail = 1
            obs, reward, term, _, info = await asyncio.to_thread(env.step,
                                                                 np.array([2, 2, 1, 1]))
            assert reward == SC.invalid_action_reward
            assert "HTTP 500" in info["error"] and "load generator" in info["error"]
            assert env.observation_space.contains(obs) and not term
            assert info["slot"] == slot + SC.slots_per_step  # time went on
            obs, reward, _, _, info = await asyncio.to_thread(env.step, np.array([2, 2, 1, 1]))
    finally:
        loadgen.close()
    assert "error" not in info and reward > SC.invalid_action_reward
    assert env.observation_space.contains(obs)


async def test_a_read_error_after_the_apply_is_a_failed_step(kmock):
    seed_cluster(kmock)
    factory = backend_factory(kmock)
    env = LWMECPSEnv3(scenario="testbed-4bs", backend=factory, obs_format="box")
    async with running(controller(kmock)):
        await asyncio.to_thread(env.reset, seed=0)

    def sleep(seconds: float) -> None:  # the stabilisation wait (0 s): then reads are refused
        if seconds == 0:
            kmock["get"] << 403

    factory.made[0].sleep = sleep
    async with running(controller(kmock)):
        _, reward, _, _, info = await asyncio.to_thread(env.step, np.array([2, 1, 1, 1]))
    assert reward == SC.invalid_action_reward and "403" in info["error"]


def test_scaling_config_is_checked():
    cfg = KubernetesConfig.from_dict({})
    assert cfg.min_replicas == 1 and cfg.timezone == "UTC"
    assert cfg.scale_down.select == "max" and cfg.scale_down.policies
    for bad, message in [
        ({"timezone": "Mars/Olympus"}, r"backend_config\.timezone must be an IANA"),
        ({"scale_down": {"policies": [{"type": "percent", "value": 150, "period_s": 60}]}},
         r"backend_config\.scale_down\.policies\.0.*<= 100"),
        ({"scale_down": {"policies": [{"type": "pods", "value": 0, "period_s": 60}]}},
         r"backend_config\.scale_down\.policies\.0\.value must be >= 1"),
        ({"scale_down": {"policies": [{"type": "nodes", "value": 1, "period_s": 60}]}},
         r"backend_config\.scale_down\.policies\.0\.type must be one of \['pods', 'percent'\]"),
        ({"scale_down": {"policies": [{"type": "pods", "value": 1, "period_s": 0}]}},
         r"backend_config\.scale_down\.policies\.0\.period_s must be > 0"),
        ({"scale_down": {"policies": []}}, r"backend_config\.scale_down\.policies"),
        ({"scale_down": {"select": "fastest"}},
         r"backend_config\.scale_down\.select must be one of \['max', 'min', 'disabled'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            KubernetesConfig.from_dict(bad)


class Clock:
    """A settable time source."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("policies", "select", "expected"), [
    ([{"type": "pods", "value": 1, "period_s": 60}], "max", [3, 3, 2]),
    ([{"type": "percent", "value": 50, "period_s": 60}], "max", [2, 2, 1]),
    ([{"type": "pods", "value": 1, "period_s": 60},
      {"type": "percent", "value": 50, "period_s": 60}], "max", [2, 2, 1]),
    ([{"type": "pods", "value": 1, "period_s": 60},
      {"type": "percent", "value": 50, "period_s": 60}], "min", [3, 3, 2]),
    ([{"type": "pods", "value": 1, "period_s": 60}], "disabled", [4, 4, 4]),
])
async def test_scale_down_is_rate_limited(kmock, policies, select, expected):
    seed_cluster(kmock, replicas=4)
    clock = Clock(1_000_000.0)
    backend = backend_factory(kmock, clock=clock, scale_down={
        "policies": policies, "select": select})(LWMECPSEnv3(scenario="testbed-4bs").spec_,
                                                 SC.trace("a"))
    got = []
    async with running(controller(kmock)):
        for advance in (0.0, 30.0, 31.0):  # two asks within a period, one after it
            clock.now += advance
            got.append(await asyncio.to_thread(backend.scale, DEPS[0], 1))
            assert kmock.objects["apps/v1/deployments", NS, DEPS[0]]["spec"]["replicas"] == \
                got[-1]
        assert await asyncio.to_thread(backend.scale, DEPS[0], 4) == 4  # scale-up is free
    assert got == expected


@pytest.mark.parametrize(("timezone", "hour"), [("UTC", 0.5), ("Asia/Tokyo", 9.5),
                                                ("America/New_York", 19.5)])
async def test_slot_is_the_time_of_day_in_the_clusters_timezone(kmock, timezone, hour):
    seed_cluster(kmock)
    now = datetime.datetime(2026, 1, 15, 0, 30, tzinfo=datetime.timezone.utc).timestamp()
    env = LWMECPSEnv3(scenario="testbed-4bs", obs_format="box", backend=backend_factory(
        kmock, clock=lambda: now, timezone=timezone))
    async with running(controller(kmock)):
        _, info = await asyncio.to_thread(env.reset, seed=0)
    assert info["slot"] == int(hour * 3600 / SC.slot_s)


async def test_deployments_are_read_into_the_fields_used(kmock):
    from lwmecps_rllib.backends.k8s_objects import Deployment

    seed_cluster(kmock, replicas=3)
    backend = backend_factory(kmock)(LWMECPSEnv2(scenario="testbed-4bs").spec_, SC.trace("a"))
    dep = await asyncio.to_thread(backend.read_deployment, DEPS[1])
    assert dep == Deployment(name=DEPS[1], generation=1, replicas=3, node=NODES[1],
                             match_labels={"app": DEPS[1]}, ready_replicas=3,
                             status_replicas=3, updated_replicas=3, observed_generation=1)
    # absent fields read as Kubernetes' defaults (spec.replicas: 1) or zero
    assert Deployment.from_json({"metadata": {"name": "x"}, "spec": {}, "status": None}) == \
        Deployment(name="x", generation=0, replicas=1, node=None, match_labels={},
                   ready_replicas=0, status_replicas=0, updated_replicas=0,
                   observed_generation=0)
