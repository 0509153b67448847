"""Prometheus metrics of the controller and its HTTP server (`/metrics`, `/healthz`).

Metrics (own registry, so several controllers can live in one process):

- `lwmecps_control_decisions_total{source}`: periods decided by `policy`, `fallback`,
  or by `none` (no fallback rule, or the cluster could not be read);
- `lwmecps_control_fallbacks_total{cause}`: periods the policy's decision was not used,
  by cause (`timeout`, `error`, `infeasible`, `out_of_bounds`);
- `lwmecps_control_errors_total{stage}`: periods whose cluster `read` or `apply` failed;
- `lwmecps_control_policy_latency_seconds`: time to the policy's answer (histogram);
- `lwmecps_control_replicas_asked{deployment}`, `..._replicas_ready{deployment}`;
- `lwmecps_control_reward_term{term}`: the last step's reward and its terms;
- `lwmecps_control_period_cpu_seconds`: the controller's CPU time per period (histogram);
- `lwmecps_control_last_period_timestamp_seconds`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lwmecps_rllib.control.policies import CAUSES

SOURCES = ("policy", "fallback", "none")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CPU_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Telemetry:
    """The controller's metrics.

    Args:
        period_s: The control period (`/healthz` fails after three without a decision).
        clock: Time source.
    """

    def __init__(self, period_s: float, clock: Any = time.time) -> None:
        self.period_s = period_s
        self.clock = clock
        self.started = clock()
        self.last_period: float | None = None
        self.periods = 0
        r = self.registry = CollectorRegistry()
        p = "lwmecps_control_"
        self.decisions = Counter(p + "decisions", "Periods by who decided.", ["source"],
                                 registry=r)
        self.fallbacks = Counter(p + "fallbacks", "Policy decisions not used, by cause.",
                                 ["cause"], registry=r)
        self.errors = Counter(p + "errors", "Periods whose cluster read or apply failed.",
                              ["stage"], registry=r)
        self.latency = Histogram(p + "policy_latency_seconds", "Time to the policy's answer.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.asked = Gauge(p + "replicas_asked", "Replicas the Deployment's spec asks for.",
                           ["deployment"], registry=r)
        self.ready = Gauge(p + "replicas_ready", "Ready replicas.", ["deployment"], registry=r)
        self.reward = Gauge(p + "reward_term", "The last step's reward and its terms.",
                            ["term"], registry=r)
        self.cpu = Histogram(p + "period_cpu_seconds", "Controller CPU time per period.",
                             buckets=CPU_BUCKETS, registry=r)
        self.stamp = Gauge(p + "last_period_timestamp_seconds", "End of the last period.",
                           registry=r)
        for s in SOURCES:
            self.decisions.labels(s)
        for c in CAUSES:
            self.fallbacks.labels(c)
        for stage in ("read", "apply"):
            self.errors.labels(stage)

    def observe(self, record: dict[str, Any]) -> None:
        """Count one period's record (see :mod:`lwmecps_rllib.control.controller`)."""
        self.decisions.labels(record["source"]).inc()
        if record.get("cause") in CAUSES:
            self.fallbacks.labels(record["cause"]).inc()
        if record.get("stage"):
            self.errors.labels(record["stage"]).inc()
        if record.get("policy_latency_ms") is not None:
            self.latency.observe(record["policy_latency_ms"] / 1e3)
        for name, (asked, ready) in (record.get("cluster") or {}).items():
            self.asked.labels(name).set(asked)
            self.ready.labels(name).set(ready)
        for name, n in (record.get("asked") or {}).items():
            self.asked.labels(name).set(n)
        for term, value in (record.get("terms") or {}).items():
            self.reward.labels(term).set(value)
        self.cpu.observe(record["cpu_ms"] / 1e3)
        self.last_period = self.clock()
        self.stamp.set(self.last_period)
        self.periods += 1

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether a period ended in the last three periods (or the first is under way)."""
        now = self.clock()
        since = now - (self.last_period if self.last_period is not None else self.started)
        ok = since <= 3 * self.period_s + 5.0
        return ok, {"status": "ok" if ok else "stale", "periods": self.periods,
                    "seconds_since_last_period": round(since, 3)}

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class StatusServer:
    """`GET /metrics` and `GET /healthz` on a port, in a daemon thread.

    Args:
        telemetry: What to serve.
        host: Address to listen on.
        port: Port (0: a free one; :attr:`port` tells which).
    """

    def __init__(self, telemetry: Telemetry, host: str = "127.0.0.1", port: int = 0) -> None:
        self.telemetry = telemetry
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        """Listen; returns the port."""
        telemetry = self.telemetry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, telemetry.exposition(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok, body = telemetry.health()
                    self._send(200 if ok else 503, json.dumps(body).encode(),
                               "application/json")
                else:
                    self._send(404, b"not found: GET /metrics or /healthz", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                """Quiet: scrapes are not news."""

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="control-status",
                         daemon=True).start()
        return self.port

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
