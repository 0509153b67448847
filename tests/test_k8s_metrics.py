"""Metrics providers over real HTTP (kmock as the load generator and as Prometheus):
numbers are read, and missing, malformed or stale metrics are errors, never zeros."""

from __future__ import annotations

import asyncio
import time

import kmock as kmock_lib
import pytest

from lwmecps_rllib.backends.kubernetes import KubernetesConfig, build_metrics
from lwmecps_rllib.backends.metrics import LoadGeneratorMetrics, MetricsError, PrometheusMetrics

# Plain HTTP servers here: the load generator's /api/... is not Kubernetes' /api.
pytestmark = pytest.mark.kmock(cls=kmock_lib.RawHandler)


async def test_load_generator_start_and_stats(kmock):
    stats = {"average_latency": 42.5, "total_requests": 100, "failed_requests": 2}
    kmock["post /api/manage_group"] << {"status": "started"}
    kmock["get /api/group_stats"] << (lambda: dict(stats))
    lg = LoadGeneratorMetrics(str(kmock.url))
    await asyncio.to_thread(lg.start)
    s = await asyncio.to_thread(lg.sample)
    assert s.average_latency_ms == 42.5 and s.requests == 100 and s.failed == 2
    stats.update(total_requests=160, failed_requests=5, average_latency=30.0)
    s = await asyncio.to_thread(lg.sample)
    assert (s.requests, s.failed, s.average_latency_ms) == (60, 3, 30.0)
    starts = [r for r in kmock if str(r.url.path) == "/api/manage_group"]
    assert len(starts) == 1 and starts[0].params.get("state") == "start"
    with pytest.raises(MetricsError, match="stale"):
        await asyncio.to_thread(lg.sample)  # the counter did not move: load stopped


@pytest.mark.parametrize(("payload", "message"), [
    ({"total_requests": 5}, "missing 'average_latency'"),
    ({"average_latency": "fast"}, "not a number"),
    ({"average_latency": float("nan")}, "finite"),
    ([1, 2], "expected a JSON object"),
])
async def test_load_generator_bad_stats(kmock, payload, message):
    kmock["get /api/group_stats"] << (lambda: payload)
    with pytest.raises(MetricsError, match=message):
        await asyncio.to_thread(LoadGeneratorMetrics(str(kmock.url)).sample)


async def test_load_generator_http_errors(kmock):
    kmock["get /api/group_stats"] << 503
    with pytest.raises(MetricsError, match="HTTP 503"):
        await asyncio.to_thread(LoadGeneratorMetrics(str(kmock.url)).sample)
    with pytest.raises(MetricsError, match="load generator"):
        await asyncio.to_thread(LoadGeneratorMetrics("http://127.0.0.1:9", timeout_s=1).sample)


def vector(series: list[tuple[dict, float, float]]) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": m, "value": [ts, str(v)]} for m, ts, v in series]}}


def prometheus(answers: dict[str, list[tuple[dict, float, float]]], now: float):
    """Prometheus' instant query: every sample carries the evaluation time `now`;
    `timestamp(q)` answers the time each of q's samples was scraped."""

    def answer(req):
        query = req.params["query"]
        if query.startswith("timestamp(") and query.endswith(")"):
            return vector([(m, now, ts) for m, ts, _ in answers[query[len("timestamp("):-1]]])
        return vector([(m, now, v) for m, _, v in answers[query]])

    return answer


async def test_prometheus_queries(kmock):
    now = time.time()
    answers = {
        "lat": [({"node": "node-1"}, now - 5, 20.0), ({"node": "node-2"}, now - 3, 40.0)],
        "req": [({}, now, 300.0)],
        "fail": [({}, now, 6.0)],
        "users": [({"station": "bs1"}, now, 11.0), ({"station": "bs2"}, now, 3.0)],
    }
    kmock["get /api/v1/query"] << prometheus(answers, now)
    prom = PrometheusMetrics(str(kmock.url), "lat", requests_query="req", failed_query="fail",
                             users_query="users")
    s = await asyncio.to_thread(prom.sample)
    assert s.average_latency_ms == 30.0
    assert s.node_latency_ms == {"node-1": 20.0, "node-2": 40.0}
    assert (s.requests, s.failed) == (300.0, 6.0)
    assert s.users == {"bs1": 11.0, "bs2": 3.0}
    assert s.timestamp == pytest.approx(now - 5, abs=1e-3)  # the scrape's time, not the query's


async def test_prometheus_missing_and_stale(kmock):
    now = time.time()
    answers = {"empty": [], "old": [({"node": "a"}, now - 1, 5.0), ({"node": "b"}, now - 600, 5.0)]}
    fine = prometheus(answers, now)
    kmock["get /api/v1/query"] << (lambda req: {"status": "error", "error": "parse error at 3"}
                                   if req.params["query"] == "bad" else fine(req))
    with pytest.raises(MetricsError, match="no data"):
        await asyncio.to_thread(PrometheusMetrics(str(kmock.url), "empty").sample)
    # Prometheus stamps an instant query's samples with the evaluation time (now): only
    # timestamp(q) tells that node b's series was last scraped 10 minutes ago.
    with pytest.raises(MetricsError, match=r"stale.* 600 s old"):
        await asyncio.to_thread(PrometheusMetrics(str(kmock.url), "old", max_age_s=60).sample)
    with pytest.raises(MetricsError, match="parse error"):
        await asyncio.to_thread(PrometheusMetrics(str(kmock.url), "bad").sample)


@pytest.mark.parametrize(("result_type", "result"), [
    ("scalar", [1700000000.0, "12"]),
    ("matrix", [{"metric": {}, "values": [[1700000000.0, "12"], [1700000010.0, "13"]]}]),
    ("string", [1700000000.0, "twelve"]),
])
async def test_prometheus_other_result_types_are_metrics_errors(kmock, result_type, result):
    kmock["get /api/v1/query"] << {"status": "success",
                                   "data": {"resultType": result_type, "result": result}}
    with pytest.raises(MetricsError, match=rf"\(avg\(lat\)\): expected an instant vector, "
                                           rf"got a {result_type} result"):
        await asyncio.to_thread(PrometheusMetrics(str(kmock.url), "avg(lat)").sample)


async def test_load_generator_counter_resets(kmock):
    """A counter that goes down was reset (the load generator restarted): the increase is
    its new value, as Prometheus' rate() counts it; one that stands still is stale."""
    stats = {"average_latency": 20.0, "total_requests": 1000, "failed_requests": 50}
    kmock["get /api/group_stats"] << (lambda: dict(stats))
    lg = LoadGeneratorMetrics(str(kmock.url))
    await asyncio.to_thread(lg.sample)
    stats.update(total_requests=1200, failed_requests=60)
    s = await asyncio.to_thread(lg.sample)
    assert (s.requests, s.failed) == (200, 10)
    stats.update(total_requests=90, failed_requests=4)  # restarted
    s = await asyncio.to_thread(lg.sample)
    assert (s.requests, s.failed) == (90, 4)
    stats.update(total_requests=150, failed_requests=1)  # only the failure counter reset
    s = await asyncio.to_thread(lg.sample)
    assert (s.requests, s.failed) == (60, 1)
    stats.update(total_requests=0, failed_requests=0)  # restarted, nothing sent since
    with pytest.raises(MetricsError, match="stale"):
        await asyncio.to_thread(lg.sample)


async def test_node_latency_with_the_testbeds_config(kmock):
    """Prometheus labels series with Kubernetes' node names (minikube-m02, ...); the
    testbed's backend-config.yaml maps the scenario's node-1..4 to them."""
    import pathlib

    import numpy as np
    import yaml

    from lwmecps_rllib.backends.kubernetes import KubernetesBackend
    from lwmecps_rllib.cluster.core import ClusterState
    from lwmecps_rllib.envs import LWMECPSEnv3

    path = pathlib.Path(__file__).parents[1] / "k8s" / "testbed" / "backend-config.yaml"
    data = yaml.safe_load(path.read_text())
    now = time.time()
    kmock["get /api/v1/query"] << prometheus({"lat": [
        ({"node": data["nodes"]["node-2"]}, now, 30.0),
        ({"node": data["nodes"]["node-4"]}, now, 50.0)]}, now)
    data["metrics"] = {"type": "prometheus", "url": str(kmock.url), "latency_query": "lat"}
    spec = LWMECPSEnv3(scenario="testbed-4bs").spec_
    backend = KubernetesBackend(spec, np.ones((8640, 4)), KubernetesConfig.from_dict(data))
    state = ClusterState.from_counts(np.array([100]), np.ones((1, 4), np.int64),
                                     np.ones((1, 4), np.int64), spec.home_node[None], 4)
    m = await asyncio.to_thread(backend.measure, state)
    node_ok = m.node_ok[0]
    assert node_ok[0] == node_ok[2] == 0 and node_ok[1] > 0 and node_ok[3] > 0
    assert m.node_avg_latency_ms[0].tolist()[1::2] == pytest.approx([30.0, 50.0])


def test_providers_from_config():
    cfg = KubernetesConfig.from_dict({"metrics": {"type": "prometheus", "url": "http://p:9090",
                                                  "latency_query": "x"}})
    assert isinstance(build_metrics(cfg.metrics), PrometheusMetrics)
    with pytest.raises(ValueError, match=r"backend_config\.metrics"):
        build_metrics({"type": "loadgen", "url": "http://x"})
