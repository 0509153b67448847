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


async def test_prometheus_queries(kmock):
    now = time.time()
    answers = {
        "lat": vector([({"node": "node-1"}, now, 20.0), ({"node": "node-2"}, now, 40.0)]),
        "req": vector([({}, now, 300.0)]),
        "fail": vector([({}, now, 6.0)]),
        "users": vector([({"station": "bs1"}, now, 11.0), ({"station": "bs2"}, now, 3.0)]),
    }
    kmock["get /api/v1/query"] << (lambda req: answers[req.params["query"]])
    prom = PrometheusMetrics(str(kmock.url), "lat", requests_query="req", failed_query="fail",
                             users_query="users")
    s = await asyncio.to_thread(prom.sample)
    assert s.average_latency_ms == 30.0
    assert s.node_latency_ms == {"node-1": 20.0, "node-2": 40.0}
    assert (s.requests, s.failed) == (300.0, 6.0)
    assert s.users == {"bs1": 11.0, "bs2": 3.0}


async def test_prometheus_missing_and_stale(kmock):
    old = time.time() - 600
    answers = {"empty": vector([]), "old": vector([({}, old, 5.0)]),
               "bad": {"status": "error", "error": "parse error at char 3"}}
    kmock["get /api/v1/query"] << (lambda req: answers[req.params["query"]])
    with pytest.raises(MetricsError, match="no data"):
        await asyncio.to_thread(PrometheusMetrics(str(kmock.url), "empty").sample)
    with pytest.raises(MetricsError, match="stale"):
        await asyncio.to_thread(PrometheusMetrics(str(kmock.url), "old", max_age_s=60).sample)
    with pytest.raises(MetricsError, match="parse error"):
        await asyncio.to_thread(PrometheusMetrics(str(kmock.url), "bad").sample)


def test_providers_from_config():
    cfg = KubernetesConfig.from_dict({"metrics": {"type": "prometheus", "url": "http://p:9090",
                                                  "latency_query": "x"}})
    assert isinstance(build_metrics(cfg.metrics), PrometheusMetrics)
    with pytest.raises(ValueError, match=r"backend_config\.metrics"):
        build_metrics({"type": "loadgen", "url": "http://x"})
