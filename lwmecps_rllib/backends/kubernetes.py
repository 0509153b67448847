"""The Kubernetes backend: the same envs on a real cluster, through the official client.

It reads the nodes and the managed deployments (and their pods), scales deployments
through the `scale` subresource (LWMECPSEnv3) or moves them with a `nodeSelector` on
`kubernetes.io/hostname` (LWMECPSEnv, LWMECPSEnv2), waits for the rollout, waits the
stabilisation time, and reads latency from a metrics provider. The env logic (rewards,
observations) stays in the envs and the cluster core; this only produces cluster state.

Safety: only the configured namespace and deployments are touched (anything else raises
:class:`GuardRailError` before a request is sent); replica counts are clamped to
`[min_replicas, max_replicas]`; nothing is ever deleted; `dry_run` logs the patches it
would send and sends none. The API client is injected or made on first use (kubeconfig or
in-cluster config): nothing connects at import or construction. Transient API errors
(409, 429, 5xx, timeouts, refused connections) are retried with exponential backoff.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lwmecps_rllib.backends.base import BackendError, GuardRailError
from lwmecps_rllib.backends.config import KubernetesConfig
from lwmecps_rllib.backends.metrics import (
    LoadGeneratorMetrics,
    MetricsError,
    MetricsProvider,
    MetricsSample,
    PrometheusMetrics,
)
from lwmecps_rllib.cluster import core
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement

log = logging.getLogger(__name__)
HOSTNAME_LABEL = "kubernetes.io/hostname"


class RolloutTimeoutError(BackendError):
    """Deployments did not become ready in time. `state` is the cluster as asked for."""


def build_metrics(config: dict[str, Any]) -> MetricsProvider:
    """The provider a `metrics:` mapping describes."""
    kwargs = {k: v for k, v in config.items() if k != "type"}
    try:
        if config["type"] == "loadgen":
            return LoadGeneratorMetrics(**kwargs)
        return PrometheusMetrics(**kwargs)
    except TypeError as exc:
        raise ValueError(f"backend_config.metrics: {exc}") from exc


class KubernetesBackend:
    """A real cluster behind the `Backend` interface.

    Args:
        spec: The compiled cluster (node, deployment and station names, limits).
        trace: (T, S) users per station per slot (the load the testbed replays; used for
            users when the metrics do not report them).
        config: What to manage and how to wait.
        api_client: A `kubernetes.client.ApiClient` (default: made on first use from
            `config`).
        metrics: A metrics provider (default: built from `config.metrics`).
        clock: Time source; `sleep`: how to wait (both injectable for tests).
    """

    def __init__(self, spec: ClusterSpec, trace: np.ndarray, config: KubernetesConfig | None = None,
                 api_client: Any = None, metrics: MetricsProvider | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec
        self.trace = trace
        self.config = config or KubernetesConfig()
        self._api_client = api_client
        self._metrics = metrics
        self.clock = clock
        self.sleep = sleep
        sc = spec.scenario
        self.dep_names = [self.config.deployments.get(n, n)
                          for n in sc.deployment_names[: spec.n_deployments]]
        self.node_names = [self.config.nodes.get(n, n) for n in sc.node_names]
        self.max_replicas = (self.config.max_replicas if self.config.max_replicas is not None
                             else sc.max_replicas)
        self.sent: list[dict[str, Any]] = []
        """Every patch sent (or, in dry-run, that would have been sent)."""
        self.nodes_info: dict[str, dict[str, Any]] = {}
        """Capacity, allocatable and labels of the cluster's nodes (read on reset)."""

    # ------------------------------------------------------------------ clients
    @property
    def api_client(self) -> Any:
        """The injected client, or one from the kubeconfig / in-cluster config."""
        if self._api_client is None:
            from kubernetes import client, config

            if self.config.in_cluster:
                config.load_incluster_config()
                self._api_client = client.ApiClient()
            else:
                self._api_client = config.new_client_from_config(
                    config_file=self.config.kubeconfig, context=self.config.context)
        return self._api_client

    @property
    def metrics(self) -> MetricsProvider:
        """The metrics provider."""
        if self._metrics is None:
            self._metrics = build_metrics(self.config.metrics)
        return self._metrics

    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api_client)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn` with retries of transient errors (409, 429, 5xx, timeouts, connections)."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        cfg = self.config
        delay = cfg.backoff_s
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            try:
                return fn(*args, _request_timeout=cfg.request_timeout_s, **kwargs)
            except ApiException as exc:
                if exc.status not in (409, 429) and not (500 <= (exc.status or 0) < 600):
                    raise BackendError(f"{what}: Kubernetes API answered {exc.status} "
                                       f"{exc.reason}") from exc
                last = exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                last = exc
            if attempt < cfg.retries:
                log.warning("%s: transient error (%s), retry %d/%d in %.2f s", what,
                            _short(last), attempt + 1, cfg.retries, delay)
                self.sleep(delay)
                delay = min(delay * 2, cfg.backoff_max_s)
        raise BackendError(f"{what}: gave up after {cfg.retries + 1} attempts; last error: "
                           f"{_short(last)}")

    # ------------------------------------------------------------------ guard rails
    def _guard(self, deployment: str, namespace: str | None) -> None:
        if namespace is not None and namespace != self.config.namespace:
            raise GuardRailError(f"namespace {namespace!r} is not managed (only "
                                 f"{self.config.namespace!r})")
        if deployment not in self.dep_names:
            raise GuardRailError(f"deployment {deployment!r} is not managed (only "
                                 f"{self.dep_names})")

    def clamp(self, replicas: int) -> int:
        """`replicas` within `[min_replicas, max_replicas]`."""
        return int(min(max(int(replicas), self.config.min_replicas), self.max_replicas))

    def clamp_all(self, replicas: np.ndarray) -> np.ndarray:
        """:meth:`clamp` of every count (int64)."""
        return np.clip(np.asarray(replicas), self.config.min_replicas,
                       self.max_replicas).astype(np.int64)

    def scale(self, deployment: str, replicas: int, namespace: str | None = None) -> int:
        """Patch the scale subresource of a managed deployment; returns the count sent."""
        self._guard(deployment, namespace)
        n = self.clamp(replicas)
        body = {"spec": {"replicas": n}}
        self._send("scale", deployment, body,
                   lambda: self._call(f"scale {deployment}",
                                      self._apps().patch_namespaced_deployment_scale,
                                      deployment, self.config.namespace, body))
        return n

    def move(self, deployment: str, node: str, namespace: str | None = None) -> None:
        """Pin a managed deployment to `node` (nodeSelector on kubernetes.io/hostname)."""
        self._guard(deployment, namespace)
        if node not in self.node_names:
            raise GuardRailError(f"node {node!r} is not one of {self.node_names}")
        body = {"spec": {"template": {"spec": {"nodeSelector": {HOSTNAME_LABEL: node}}}}}
        self._send("move", deployment, body,
                   lambda: self._call(f"move {deployment}",
                                      self._apps().patch_namespaced_deployment,
                                      deployment, self.config.namespace, body))

    def _send(self, kind: str, deployment: str, body: dict, send: Callable[[], Any]) -> None:
        entry = {"kind": kind, "namespace": self.config.namespace, "deployment": deployment,
                 "body": body}
        self.sent.append(entry)
        if self.config.dry_run:
            log.info("dry-run: would %s %s/%s with %s", kind, self.config.namespace,
                     deployment, body)
            return
        send()

    # ------------------------------------------------------------------ reading
    def read_nodes(self) -> dict[str, dict[str, Any]]:
        """Capacity, allocatable and labels of the scenario's nodes (all must exist)."""
        items = self._call("list nodes", self._core().list_node).items
        found = {n.metadata.name: {"capacity": dict(n.status.capacity or {}),
                                   "allocatable": dict(n.status.allocatable or {}),
                                   "labels": dict(n.metadata.labels or {})}
                 for n in items}
        missing = [n for n in self.node_names if n not in found]
        if missing:
            raise BackendError(f"node(s) {missing} not in the cluster (it has {sorted(found)}); "
                               f"map scenario nodes with backend_config.nodes")
        self.nodes_info = {n: found[n] for n in self.node_names}
        return self.nodes_info

    def read_deployments(self) -> dict[str, Any]:
        """The managed Deployments (all must exist)."""
        out = {}
        for name in self.dep_names:
            out[name] = self._call(f"read deployment {name}",
                                   self._apps().read_namespaced_deployment_status, name,
                                   self.config.namespace)
        return out

    def pod_nodes(self, deployment: Any) -> list[str]:
        """Nodes of the ready pods of a Deployment (by its selector)."""
        labels = (deployment.spec.selector.match_labels or {}) if deployment.spec.selector \
            else {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self._call(f"list pods of {deployment.metadata.name}",
                          self._core().list_namespaced_pod, self.config.namespace,
                          label_selector=selector).items
        nodes = []
        for p in pods:
            own = (p.metadata.labels or {}) if p.metadata else {}
            if any(own.get(k) != v for k, v in labels.items()):
                continue  # the server should have filtered; never trust another's pod
            ready = any(c.type == "Ready" and c.status == "True"
                        for c in (p.status.conditions or [])) if p.status else False
            if ready and p.spec and p.spec.node_name:
                nodes.append(p.spec.node_name)
        return nodes

    def _state(self, slot: int, replicas: np.ndarray, deployments: dict[str, Any]
               ) -> ClusterState:
        """ClusterState (batch of 1) from what the cluster reports."""
        spec = self.spec
        ready = np.zeros((1, spec.n_deployments), np.int64)
        node_of = spec.home_node[None, :].copy()
        for i, name in enumerate(self.dep_names):
            dep = deployments[name]
            ready[0, i] = int(dep.status.ready_replicas or 0)
            if not spec.pinned:
                on = self.pod_nodes(dep)
                selector = ((dep.spec.template.spec.node_selector or {})
                            if dep.spec.template and dep.spec.template.spec else {})
                target = on[0] if on else selector.get(HOSTNAME_LABEL)
                if target in self.node_names:
                    node_of[0, i] = self.node_names.index(target)
        return ClusterState.from_counts(np.array([slot]), replicas, ready, node_of,
                                        spec.max_pods)

    def wait_rollout(self, want: dict[str, int]) -> dict[str, Any]:
        """Poll until every deployment in `want` has that many ready, updated replicas.

        Raises:
            RolloutTimeoutError: naming what is still not ready after the timeout.
        """
        deadline = self.clock() + self.config.rollout_timeout_s
        while True:
            deps = self.read_deployments()
            pending = {}
            for name, n in want.items():
                st, meta = deps[name].status, deps[name].metadata
                ok = ((st.observed_generation or 0) >= (meta.generation or 0)
                      and int(st.ready_replicas or 0) == n and int(st.replicas or 0) == n
                      and int(st.updated_replicas or 0) == n)
                if not ok:
                    pending[name] = f"{int(st.ready_replicas or 0)}/{n} ready"
            if not pending or self.config.dry_run:
                return deps
            if self.clock() >= deadline:
                raise RolloutTimeoutError(
                    f"rollout not ready after {self.config.rollout_timeout_s:.0f} s: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(pending.items())))
            self.sleep(self.config.poll_interval_s)

    # ------------------------------------------------------------------ Backend API
    def reset(self, start_slot: int, rng: np.random.Generator) -> tuple[ClusterState, Measurement]:
        """Check the cluster, set the initial replicas, start the load, measure.

        The slot is the wall clock's time of day (a real cluster cannot jump to
        `start_slot`); the initial replicas are the scenario's.
        """
        sc = self.spec.scenario
        slot = int((self.clock() % (sc.n_slots * sc.slot_s)) // sc.slot_s)
        self.read_nodes()
        self.read_deployments()
        replicas = core.initial_replicas(self.spec, self.trace, np.array([slot - 1]))
        replicas = self.clamp_all(replicas)
        for name, n in zip(self.dep_names, replicas[0], strict=True):
            self.scale(name, int(n))
        if not self.spec.pinned:
            for i, name in enumerate(self.dep_names):
                self.move(name, self.node_names[int(self.spec.home_node[i])])
        deps = self.wait_rollout(dict(zip(self.dep_names, map(int, replicas[0]), strict=True)))
        self.metrics.start()
        state = self._state(slot, replicas, deps)
        return state, self.measure(state)

    def apply(self, state: ClusterState, replicas: np.ndarray, nodes: np.ndarray) -> ClusterState:
        """Scale and move what changed, then wait for the rollout."""
        replicas = self.clamp_all(replicas).reshape(1, -1)
        for i, name in enumerate(self.dep_names):
            if replicas[0, i] != state.replicas[0, i]:
                self.scale(name, int(replicas[0, i]))
        moved = False
        if not self.spec.pinned:
            for i, name in enumerate(self.dep_names):
                if nodes[0, i] != state.node_of[0, i]:
                    self.move(name, self.node_names[int(nodes[0, i])])
                    moved = True
        asked = dataclasses.replace(state, replicas=replicas)
        if not self.spec.pinned and moved:
            asked = dataclasses.replace(asked, node_of=np.asarray(nodes).reshape(1, -1).copy())
        try:
            deps = self.wait_rollout(dict(zip(self.dep_names, map(int, replicas[0]), strict=True)))
        except RolloutTimeoutError as exc:
            exc.state = asked
            raise
        out = self._state(int(state.slot[0]), replicas, deps)
        if self.config.dry_run and not self.spec.pinned:
            out = dataclasses.replace(out, node_of=asked.node_of.copy())
        return out

    def advance(self, state: ClusterState,
                rng: np.random.Generator) -> tuple[ClusterState, Measurement]:
        """Wait the stabilisation time, then read the deployments and the metrics."""
        self.sleep(self.config.stabilization_time_s)
        deps = self.read_deployments()
        slot = int(state.slot[0]) + self.spec.scenario.slots_per_step
        new = self._state(slot, state.replicas, deps)
        if self.config.dry_run and not self.spec.pinned:
            new = dataclasses.replace(new, node_of=state.node_of.copy())
        return new, self.measure(new)

    def measure(self, state: ClusterState) -> Measurement:
        """A Measurement from the metrics provider (raises MetricsError when missing)."""
        sample = self.metrics.sample()
        return measurement_from_sample(self.spec, state, sample, self.trace)

    def close(self) -> None:
        """Nothing is deleted or scaled down on close."""


def measurement_from_sample(spec: ClusterSpec, state: ClusterState, sample: MetricsSample,
                            trace: np.ndarray) -> Measurement:
    """The core's Measurement for one cluster from a metrics sample.

    Users per station come from the sample, else from the trace at the last measured
    slot; requests from the sample, else one per user per slot of the step; per-node
    latency from the sample, else the cluster mean on every node with ready pods (the
    answered requests split by ready pods).
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
    names = list(sc.node_names)
    if sample.node_latency_ms:
        unknown = sorted(set(sample.node_latency_ms) - set(names))
        if unknown:
            raise MetricsError(f"metrics report latency for unknown node(s) {unknown}")
        lat = np.array([sample.node_latency_ms.get(x, 0.0) for x in names])
        served = np.array([1.0 if x in sample.node_latency_ms else 0.0 for x in names])
    else:
        lat = np.full(n, sample.average_latency_ms)
        served = (pods_on > 0).astype(np.float64)
    share = served * np.where(pods_on > 0, pods_on, 1.0)
    node_ok = ok * share / share.sum() if share.sum() > 0 else np.zeros(n)
    return Measurement.from_parts(requests, ok, sample.average_latency_ms * ok,
                                  (lat * node_ok)[None], node_ok[None], users[None])


def _short(exc: Exception | None) -> str:
    if exc is None:
        return "none"
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__} {status}" if status else f"{type(exc).__name__}: {exc}"
