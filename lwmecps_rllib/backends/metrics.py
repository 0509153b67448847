"""Where a real cluster's latency comes from: pluggable metrics providers.

A provider returns a :class:`MetricsSample` for the last stabilisation window. Missing,
malformed or stale metrics raise :class:`MetricsError` (a :class:`BackendError`: the env
fails the step and stays usable); they are never read as zeros.

* :class:`LoadGeneratorMetrics`: the reference testbed's load generator
  (`POST /api/manage_group?state=start`, `GET /api/group_stats` with `average_latency`).
* :class:`PrometheusMetrics`: PromQL instant queries on Prometheus' HTTP API.

:func:`measurement_from_sample` turns a sample into the cluster core's Measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lwmecps_rllib.backends.base import BackendError
from lwmecps_rllib.cluster import core
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement


class MetricsError(BackendError):
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


def increase(value: float, last: float | None) -> float:
    """A counter's increase since `last` (None: since it started); a counter below `last`
    was reset, so all of `value` is new."""
    if last is None or value < last:
        return value
    return value - last


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
    counters (`total_requests`, `failed_requests` by default) are used when present: the
    window's requests are the counter's increase since the last sample. A counter that
    went down was reset (the generator restarted), so its increase is its new value (as
    Prometheus' `rate` counts it); a request counter that did not grow means the load
    stopped: stale, an error.

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
        self._last_failed: float | None = None

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
        self._last_total = self._last_failed = None

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
            requests = increase(total, self._last_total)
            if requests == 0:
                raise MetricsError(f"{where}: stale ({self.requests_key} did not grow: "
                                   f"{total} after {self._last_total})")
            if failed is not None:
                failed_now = increase(failed, self._last_failed)
                self._last_failed = failed
            self._last_total = total
        return MetricsSample(average_latency_ms=float(latency), requests=requests,
                             failed=failed_now, timestamp=time.time())


Series = list[tuple[dict[str, str], float]]
"""(labels, value) of every series of an instant vector."""


class PrometheusMetrics(_HTTPProvider):
    """PromQL instant queries (`GET /api/v1/query`).

    Prometheus stamps every sample of an instant query's answer with the evaluation time,
    so staleness is checked on `timestamp(<query>)`: for a series that is a stored sample
    (a gauge, or a recording rule's output) that is the time it was scraped or recorded;
    for a computed expression Prometheus answers the evaluation time again and only its
    own look-back (5 minutes by default) bounds the age. Hence: queries that name
    recorded series.

    Args:
        url: Prometheus base URL.
        latency_query: Mean latency in ms; a `node_label` on the series gives per-node
            latency (their mean weighted equally is the cluster's).
        requests_query: Requests in the window (optional).
        failed_query: Failed requests in the window (optional).
        users_query: Users per station, by `station_label` (optional).
        node_label: Label naming a series' Kubernetes node.
        station_label: Label naming a series' base station.
        max_age_s: A series whose sample is older than this is stale (an error).
        session: A `requests.Session`.
        timeout_s: HTTP timeout.
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

    def instant(self, promql: str) -> Series:
        """(labels, value) of every series of an instant query (an instant vector).

        Raises:
            MetricsError: for an HTTP or query error, a result other than an instant
                vector (naming the query and its type), no series, or a value that is not
                a finite number.
        """
        import requests

        where = f"{self.url}/api/v1/query ({promql})"
        try:
            r = self.session.get(f"{self.url}/api/v1/query", params={"query": promql},
                                 timeout=self.timeout_s)
            body = r.json()
        except (requests.RequestException, ValueError) as exc:
            raise MetricsError(f"{where}: {exc}") from exc
        if not isinstance(body, dict):
            raise MetricsError(f"{where}: expected a JSON object, got {type(body).__name__}")
        if r.status_code >= 400 or body.get("status") != "success":
            raise MetricsError(f"{where}: {body.get('error', f'HTTP {r.status_code}')}")
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        kind = data.get("resultType")
        if kind != "vector":
            raise MetricsError(f"{where}: expected an instant vector, got a {kind} result")
        out = [_vector_series(series, where) for series in data.get("result") or []]
        if not out:
            raise MetricsError(f"{where}: no data (missing metric)")
        return out

    def query(self, promql: str) -> tuple[Series, float]:
        """The series of an instant query and the time of its oldest sample.

        Raises:
            MetricsError: as :meth:`instant`, or when a series' sample (by
                `timestamp(promql)`) is older than `max_age_s`.
        """
        series = self.instant(promql)
        oldest = min(t for _, t in self.instant(f"timestamp({promql})"))
        age = self.clock() - oldest
        if age > self.max_age_s:
            raise MetricsError(f"{self.url}/api/v1/query ({promql}): stale, oldest sample "
                               f"{age:.0f} s old (max_age_s {self.max_age_s})")
        return series, oldest

    def sample(self) -> MetricsSample:
        """Run the configured queries."""
        lat, oldest = self.query(self.latency_query)
        per_node = {s[self.node_label]: v for s, v in lat if self.node_label in s}
        sample = MetricsSample(average_latency_ms=sum(v for _, v in lat) / len(lat),
                               node_latency_ms=per_node, timestamp=oldest)
        if self.requests_query:
            sample.requests = sum(v for _, v in self.query(self.requests_query)[0])
        if self.failed_query:
            sample.failed = sum(v for _, v in self.query(self.failed_query)[0])
        if self.users_query:
            sample.users = {s[self.station_label]: v
                            for s, v in self.query(self.users_query)[0]
                            if self.station_label in s}
        return sample


def _vector_series(series: Any, where: str) -> tuple[dict[str, str], float]:
    """(labels, value) of one series of an instant vector (`{metric, value: [t, "v"]}`)."""
    try:
        labels, (_, raw) = series.get("metric") or {}, series["value"]
        value = float(raw)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MetricsError(f"{where}: malformed series {series!r}") from exc
    if not math.isfinite(value):
        raise MetricsError(f"{where}: value {raw}")
    return labels, value


def measurement_from_sample(spec: ClusterSpec, state: ClusterState, sample: MetricsSample,
                            trace: np.ndarray, node_names: list[str] | None = None
                            ) -> Measurement:
    """The core's Measurement for one cluster from a metrics sample.

    Users per station come from the sample, else from the trace at the last measured
    slot; requests from the sample, else one per user per slot of the step; per-node
    latency from the sample, else the cluster mean on every node with ready pods (the
    answered requests split by ready pods).

    Args:
        spec: The compiled cluster.
        state: The cluster the sample describes.
        sample: The metrics.
        trace: (T, S) users per station per slot.
        node_names: The name in the cluster of each scenario node, as the sample's
            per-node latency names them (default: the scenario's names).
    """
    sc = spec.scenario
    n = spec.n_nodes
    station_names = [st.name for st in sc.stations]
    if sample.users:
        unknown = sorted(set(sample.users) - set(station_names))
        if unknown:
            raise MetricsError(f"metrics report users for unknown station(s) {unknown}")
        users = np.array([float(sample.users.get(x, 0.0)) for x in station_names])
    else:
        users = trace[(int(state.slot[0]) - 1) % len(trace)].astype(np.float64)
    requests = (float(sample.requests) if sample.requests is not None
                else float(users.sum() * sc.slots_per_step))
    failed = min(float(sample.failed or 0.0), requests)
    ok = requests - failed
    ready = core.ready_counts(state, state.slot * sc.slot_s)[0]
    pods_on = np.zeros(n)
    np.add.at(pods_on, state.node_of[0], ready)
    names = list(node_names or sc.node_names)
    if sample.node_latency_ms:
        unknown = sorted(set(sample.node_latency_ms) - set(names))
        if unknown:
            raise MetricsError(f"metrics report latency for unknown node(s) {unknown}; "
                               f"the cluster's nodes are {names}")
        lat = np.array([sample.node_latency_ms.get(x, 0.0) for x in names])
        served = np.array([1.0 if x in sample.node_latency_ms else 0.0 for x in names])
    else:
        lat = np.full(n, sample.average_latency_ms)
        served = (pods_on > 0).astype(np.float64)
    share = served * np.where(pods_on > 0, pods_on, 1.0)
    node_ok = ok * share / share.sum() if share.sum() > 0 else np.zeros(n)
    return Measurement.from_parts(requests, ok, sample.average_latency_ms * ok,
                                  (lat * node_ok)[None], node_ok[None], users[None])
