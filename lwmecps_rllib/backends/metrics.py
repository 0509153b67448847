"""Where a real cluster's latency comes from: pluggable metrics providers.

A provider returns a :class:`MetricsSample` for the last stabilisation window. Missing
or stale metrics raise :class:`MetricsError`; they are never read as zeros.

* :class:`LoadGeneratorMetrics`: the reference testbed's load generator
  (`POST /api/manage_group?state=start`, `GET /api/group_stats` with `average_latency`).
* :class:`PrometheusMetrics`: PromQL instant queries on Prometheus' HTTP API.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class MetricsError(RuntimeError):
    """Metrics that are missing, malformed or stale."""


@dataclass
class MetricsSample:
    """What the cluster did over the last window."""

    average_latency_ms: float
    """Mean latency of the successful requests, ms."""
    requests: float | None = None
    """Requests sent (None: not reported)."""
    failed: float | None = None
    """Requests that failed (None: not reported)."""
    node_latency_ms: dict[str, float] = field(default_factory=dict)
    """Mean latency per node (node name -> ms), when reported."""
    users: dict[str, float] = field(default_factory=dict)
    """Users per station, when reported."""
    timestamp: float | None = None
    """Unix time the sample describes."""


class MetricsProvider(Protocol):
    """A source of latency metrics."""

    def start(self) -> None:
        """Prepare (e.g. start the load); called on env reset."""
        ...

    def sample(self) -> MetricsSample:
        """Metrics of the window that just ended (raises MetricsError)."""
        ...


def _number(data: dict[str, Any], key: str, where: str, required: bool = True) -> float | None:
    if key not in data or data[key] is None:
        if required:
            raise MetricsError(f"{where}: missing {key!r} (got keys {sorted(data)})")
        return None
    try:
        value = float(data[key])
    except (TypeError, ValueError) as exc:
        raise MetricsError(f"{where}: {key!r} is not a number: {data[key]!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise MetricsError(f"{where}: {key!r} must be a finite number >= 0, got {value}")
    return value


class _HTTPProvider:
    """A provider speaking HTTP through a `requests.Session` (given, or made on first use)."""

    _session: Any = None

    @property
    def session(self) -> Any:
        """The HTTP session."""
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session


class LoadGeneratorMetrics(_HTTPProvider):
    """The testbed's load generator API.

    `GET /api/group_stats` must answer JSON with `average_latency` (ms); the optional
    counters (`total_requests`, `failed_requests` by default) are used when present, and
    a request counter that did not move since the last sample means the load stopped:
    stale, an error.

    Args:
        base_url: e.g. `http://loadgen.lwmecps-testapp:8080`.
        session: A `requests.Session` (made on first use otherwise).
        timeout_s: HTTP timeout.
        requests_key: Name of the request counter in the stats.
        failed_key: Name of the failure counter in the stats.
    """

    def __init__(self, base_url: str, session: Any = None, timeout_s: float = 10.0,
                 requests_key: str = "total_requests",
                 failed_key: str = "failed_requests") -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self.timeout_s = timeout_s
        self.requests_key = requests_key
        self.failed_key = failed_key
        self._last_total: float | None = None
        self._last_failed: float = 0.0


    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        url = f"{self.base_url}{path}"
        try:
            r = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise MetricsError(f"load generator {url}: {exc}") from exc
        if r.status_code >= 400:
            raise MetricsError(f"load generator {url}: HTTP {r.status_code} {r.text[:200]}")
        return r

    def start(self) -> None:
        """Start the load (`POST /api/manage_group?state=start`)."""
        self._call("POST", "/api/manage_group", params={"state": "start"})
        self._last_total = None

    def sample(self) -> MetricsSample:
        """`GET /api/group_stats`."""
        where = f"{self.base_url}/api/group_stats"
        try:
            data = self._call("GET", "/api/group_stats").json()
        except ValueError as exc:
            raise MetricsError(f"{where}: not JSON") from exc
        if not isinstance(data, dict):
            raise MetricsError(f"{where}: expected a JSON object, got {type(data).__name__}")
        latency = _number(data, "average_latency", where)
        total = _number(data, self.requests_key, where, required=False)
        failed = _number(data, self.failed_key, where, required=False)
        requests = failed_now = None
        if total is not None:
            if self._last_total is not None and total <= self._last_total:
                raise MetricsError(f"{where}: stale ({self.requests_key} did not grow: "
                                   f"{total} after {self._last_total})")
            requests = total - (self._last_total or 0.0)
            if failed is not None:
                failed_now = max(0.0, failed - self._last_failed)
                self._last_failed = failed
            self._last_total = total
        return MetricsSample(average_latency_ms=float(latency), requests=requests,
                             failed=failed_now, timestamp=time.time())


class PrometheusMetrics(_HTTPProvider):
    """PromQL instant queries (`GET /api/v1/query`).

    Args:
        url: Prometheus base URL.
        latency_query: Mean latency in ms; a `node_label` on the series gives per-node
            latency (their mean weighted equally is the cluster's).
        requests_query: Requests in the window (optional).
        failed_query: Failed requests in the window (optional).
        users_query: Users per station, by `station_label` (optional).
        max_age_s: Samples older than this are stale (an error).
        session: A `requests.Session`.
        clock: Time source (tests).
    """

    def __init__(self, url: str, latency_query: str, requests_query: str | None = None,
                 failed_query: str | None = None, users_query: str | None = None,
                 node_label: str = "node", station_label: str = "station",
                 max_age_s: float = 60.0, session: Any = None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url.rstrip("/")
        self.latency_query = latency_query
        self.requests_query = requests_query
        self.failed_query = failed_query
        self.users_query = users_query
        self.node_label = node_label
        self.station_label = station_label
        self.max_age_s = max_age_s
        self._session = session
        self.timeout_s = timeout_s
        self.clock = clock


    def start(self) -> None:
        """Nothing to start (Prometheus scrapes on its own)."""

    def query(self, promql: str) -> list[tuple[dict[str, str], float, float]]:
        """(labels, timestamp, value) of every series of an instant query."""
        import requests

        where = f"{self.url}/api/v1/query ({promql})"
        try:
            r = self.session.get(f"{self.url}/api/v1/query", params={"query": promql},
                                 timeout=self.timeout_s)
            body = r.json()
        except (requests.RequestException, ValueError) as exc:
            raise MetricsError(f"{where}: {exc}") from exc
        if r.status_code >= 400 or body.get("status") != "success":
            raise MetricsError(f"{where}: {body.get('error', f'HTTP {r.status_code}')}")
        out = []
        for series in body.get("data", {}).get("result", []):
            ts, raw = series["value"]
            value = float(raw)
            if not math.isfinite(value):
                raise MetricsError(f"{where}: value {raw}")
            out.append((series.get("metric", {}), float(ts), value))
        if not out:
            raise MetricsError(f"{where}: no data (missing metric)")
        now = self.clock()
        oldest = min(ts for _, ts, _ in out)
        if now - oldest > self.max_age_s:
            raise MetricsError(f"{where}: stale, newest sample {now - oldest:.0f} s old "
                               f"(max_age_s {self.max_age_s})")
        return out

    def sample(self) -> MetricsSample:
        """Run the configured queries."""
        lat = self.query(self.latency_query)
        per_node = {s[self.node_label]: v for s, _, v in lat if self.node_label in s}
        sample = MetricsSample(average_latency_ms=sum(v for _, _, v in lat) / len(lat),
                               node_latency_ms=per_node,
                               timestamp=min(ts for _, ts, _ in lat))
        if self.requests_query:
            sample.requests = sum(v for _, _, v in self.query(self.requests_query))
        if self.failed_query:
            sample.failed = sum(v for _, _, v in self.query(self.failed_query))
        if self.users_query:
            sample.users = {s[self.station_label]: v for s, _, v in self.query(self.users_query)
                            if self.station_label in s}
        return sample
