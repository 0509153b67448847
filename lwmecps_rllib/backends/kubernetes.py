"""The Kubernetes backend: the same envs on a real cluster, through the official client.

It reads the nodes and the managed deployments (and their pods), scales deployments
through the `scale` subresource (LWMECPSEnv3) or moves them with a `nodeSelector` on
`kubernetes.io/hostname` (LWMECPSEnv, LWMECPSEnv2), waits for the rollout, waits the
stabilisation time, and reads latency from a metrics provider. The env logic (rewards,
observations) stays in the envs and the cluster core; this only produces cluster state.

Level-triggered: every step reads the Deployments' spec and patches each one that
differs from the asked state, whatever changed it (a failed step, `kubectl scale`, an
HPA); the state it reports is the one the cluster reports.

Safety: only the configured namespace and deployments are touched (anything else raises
:class:`GuardRailError` before a request is sent); replica counts are clamped to
`[min_replicas, max_replicas]` and scale-downs rate-limited (`scale_down`, as an HPA's
behavior policies); nothing is ever deleted; `dry_run` logs the patches it would send
and sends none. The API client is injected or made on first use (kubeconfig or
in-cluster config): nothing connects at import or construction. Transient API errors
(409, 429, 5xx, timeouts, refused connections) are retried with exponential backoff.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from lwmecps_rllib.backends.base import BackendError, GuardRailError
from lwmecps_rllib.backends.config import KubernetesConfig
from lwmecps_rllib.backends.k8s_objects import (
    HOSTNAME_LABEL,
    Deployment,
    node_info,
    parse_json,
    ready_pod_nodes,
)
from lwmecps_rllib.backends.metrics import (
    LoadGeneratorMetrics,
    MetricsProvider,
    PrometheusMetrics,
    measurement_from_sample,
)
from lwmecps_rllib.backends.scaling import ScaleDownLimiter
from lwmecps_rllib.cluster import core
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement

log = logging.getLogger(__name__)


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
        if self.max_replicas < self.config.min_replicas:
            raise ValueError(f"backend_config.min_replicas must be <= the scenario's "
                             f"max_replicas ({self.max_replicas}), got "
                             f"{self.config.min_replicas}")
        self.sent: list[dict[str, Any]] = []
        """Every patch sent (or, in dry-run, that would have been sent)."""
        self.limiter = ScaleDownLimiter(self.config.scale_down, clock)
        """The scale-down rate limit."""
        self.timezone = ZoneInfo(self.config.timezone)
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

    def scale(self, deployment: str, replicas: int, namespace: str | None = None,
              current: int | None = None) -> int:
        """Bring a managed deployment to `replicas`, clamped to the bounds and the
        scale-down rate limit; patches its scale subresource only when its spec differs.

        Args:
            deployment: The Deployment's name.
            replicas: The count asked for.
            namespace: Checked against the managed namespace (None: that one).
            current: Its `spec.replicas` just read (None: read it now).

        Returns:
            The count the Deployment is asked to have.
        """
        self._guard(deployment, namespace)
        if current is None:
            current = self.read_deployment(deployment).replicas
        n = self.limiter.limit(deployment, current, self.clamp(replicas))
        if n != current:
            body = {"spec": {"replicas": n}}
            self._send("scale", deployment, body,
                       lambda: self._call(f"scale {deployment}",
                                          self._apps().patch_namespaced_deployment_scale,
                                          deployment, self.config.namespace, body))
            self.limiter.record(deployment, n - current)
        return n

    def move(self, deployment: str, node: str, namespace: str | None = None,
             current: str | None = None) -> None:
        """Pin a managed deployment to `node` (nodeSelector on kubernetes.io/hostname);
        patches only when its pod template names another node.

        Args:
            deployment: The Deployment's name.
            node: A managed Kubernetes node.
            namespace: Checked against the managed namespace (None: that one).
            current: The node its template selects, just read (None: read it now).
        """
        self._guard(deployment, namespace)
        if node not in self.node_names:
            raise GuardRailError(f"node {node!r} is not one of {self.node_names}")
        if current is None:
            current = self.read_deployment(deployment).node
        if current == node:
            return
        body = {"spec": {"template": {"spec": {"nodeSelector": {HOSTNAME_LABEL: node}}}}}
        self._send("move", deployment, body,
                   lambda: self._call(f"move {deployment}",
                                      self._apps().patch_namespaced_deployment,
                                      deployment, self.config.namespace, body))

    def reconcile(self, replicas: np.ndarray, nodes: np.ndarray | None,
                  deployments: dict[str, Deployment] | None = None) -> np.ndarray:
        """Read every managed Deployment (unless `deployments` were just read) and patch
        those whose spec differs from the asked `replicas` (1, D) (and `nodes` (1, D), for
        the placement envs).

        Returns:
            (1, D) the replicas each Deployment is asked to have (after the bounds and
            the scale-down rate limit).
        """
        deps = self.read_deployments() if deployments is None else deployments
        out = np.zeros((1, len(self.dep_names)), np.int64)
        for i, name in enumerate(self.dep_names):
            out[0, i] = self.scale(name, int(replicas[0, i]),
                                   current=deps[name].replicas)
            if nodes is not None:
                self.move(name, self.node_names[int(nodes[0, i])],
                          current=deps[name].node)
        return out

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
    def _get(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
             ) -> dict[str, Any]:
        """The JSON object `fn` answers, unparsed by the client's models (the body is read
        within the retries)."""
        def read(*a: Any, **k: Any) -> bytes:
            return fn(*a, _preload_content=False, **k).data

        return parse_json(what, self._call(what, read, *args, **kwargs))

    def read_nodes(self) -> dict[str, dict[str, Any]]:
        """Capacity, allocatable and labels of the scenario's nodes (all must exist)."""
        found = node_info(self._get("list nodes", self._core().list_node))
        missing = [n for n in self.node_names if n not in found]
        if missing:
            raise BackendError(f"node(s) {missing} not in the cluster (it has {sorted(found)}); "
                               f"map scenario nodes with backend_config.nodes")
        self.nodes_info = {n: found[n] for n in self.node_names}
        return self.nodes_info

    def read_deployment(self, name: str) -> Deployment:
        """A managed Deployment: spec and status (it must exist)."""
        what = f"read deployment {name}"
        return Deployment.from_json(self._get(
            what, self._apps().read_namespaced_deployment_status, name, self.config.namespace))

    def read_deployments(self) -> dict[str, Deployment]:
        """The managed Deployments (all must exist), in one list of the namespace's
        Deployments: one request a step whatever the cluster's size, as the HPA
        controller's informers read, instead of one per Deployment."""
        listed = self._get("list deployments", self._apps().list_namespaced_deployment,
                           self.config.namespace)
        found = {d.name: d for d in map(Deployment.from_json, listed.get("items") or [])}
        missing = [n for n in self.dep_names if n not in found]
        if missing:
            raise BackendError(f"deployment(s) {missing} not in namespace "
                               f"{self.config.namespace!r}")
        return {name: found[name] for name in self.dep_names}

    def pod_nodes(self, deployment: Deployment) -> list[str]:
        """Nodes of the ready pods of a Deployment (by its selector)."""
        labels = deployment.match_labels
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self._get(f"list pods of {deployment.name}", self._core().list_namespaced_pod,
                         self.config.namespace, label_selector=selector)
        return ready_pod_nodes(pods, labels)

    def observe(self, slot: int, deployments: dict[str, Deployment]) -> ClusterState:
        """ClusterState (batch of 1) at `slot` of what the `deployments` read report: the
        replicas of their spec, the ready ones, the nodes of their ready pods."""
        spec = self.spec
        replicas = np.zeros((1, spec.n_deployments), np.int64)
        ready = np.zeros((1, spec.n_deployments), np.int64)
        node_of = spec.home_node[None, :].copy()
        for i, name in enumerate(self.dep_names):
            dep = deployments[name]
            replicas[0, i] = dep.replicas
            ready[0, i] = dep.ready_replicas
            if not spec.pinned:
                on = self.pod_nodes(dep)
                target = on[0] if on else dep.node
                if target in self.node_names:
                    node_of[0, i] = self.node_names.index(target)
        return ClusterState.from_counts(np.array([slot]), replicas, ready, node_of,
                                        spec.max_pods)

    def _state(self, slot: int, deployments: dict[str, Deployment], asked: ClusterState
               ) -> ClusterState:
        """The state the env observes: :meth:`observe`, except in dry-run (where nothing
        changes) the replicas and nodes of `asked`."""
        state = self.observe(slot, deployments)
        if not self.config.dry_run:
            return state
        return dataclasses.replace(
            state, replicas=asked.replicas.copy(),
            node_of=state.node_of if self.spec.pinned else asked.node_of.copy(),
            move_to=state.move_to if self.spec.pinned else asked.node_of.copy())

    def wait_rollout(self, want: dict[str, int]) -> dict[str, Deployment]:
        """Poll until every deployment in `want` has that many ready, updated replicas.

        Raises:
            RolloutTimeoutError: naming what is still not ready after the timeout.
        """
        deadline = self.clock() + self.config.rollout_timeout_s
        while True:
            deps = self.read_deployments()
            pending = {}
            for name, n in want.items():
                d = deps[name]
                ok = (d.observed_generation >= d.generation and d.ready_replicas == n
                      and d.status_replicas == n and d.updated_replicas == n)
                if not ok:
                    pending[name] = f"{d.ready_replicas}/{n} ready"
            if not pending or self.config.dry_run:
                return deps
            if self.clock() >= deadline:
                raise RolloutTimeoutError(
                    f"rollout not ready after {self.config.rollout_timeout_s:.0f} s: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(pending.items())))
            self.sleep(self.config.poll_interval_s)

    # ------------------------------------------------------------------ Backend API
    def slot_now(self) -> int:
        """The slot of the wall clock's time of day in the cluster's `timezone`."""
        sc = self.spec.scenario
        local = datetime.datetime.fromtimestamp(self.clock(), self.timezone)
        # the local clock's reading: on a daylight-saving day the trace follows the
        # clock, as the users do
        of_day = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return int(of_day // sc.slot_s) % sc.n_slots

    def reset(self, start_slot: int, rng: np.random.Generator) -> tuple[ClusterState, Measurement]:
        """Check the cluster, bring it to the initial replicas, start the load, measure.

        The slot is the time of day in the cluster's `timezone` (a real cluster cannot
        jump to `start_slot`); the initial replicas are the scenario's (within the
        bounds and the scale-down rate limit), on their home nodes.
        """
        slot = self.slot_now()
        self.read_nodes()
        home = None if self.spec.pinned else self.spec.home_node[None, :]
        asked = core.initial_replicas(self.spec, self.trace, np.array([slot - 1]))
        replicas = self.reconcile(asked, home)
        deps = self.wait_rollout(dict(zip(self.dep_names, map(int, replicas[0]), strict=True)))
        self.metrics.start()
        state = self._state(slot, deps, ClusterState.from_counts(
            np.array([slot]), replicas, replicas, self.spec.home_node[None, :],
            self.spec.max_pods))
        return state, self.measure(state)

    def apply(self, state: ClusterState, replicas: np.ndarray, nodes: np.ndarray) -> ClusterState:
        """Bring every deployment to the asked replicas (and nodes), then wait for the
        rollout."""
        nodes = np.asarray(nodes).reshape(1, -1)
        sent = self.reconcile(np.asarray(replicas).reshape(1, -1),
                              None if self.spec.pinned else nodes)
        asked = dataclasses.replace(state, replicas=sent)
        if not self.spec.pinned:
            asked = dataclasses.replace(asked, node_of=nodes.copy())
        try:
            deps = self.wait_rollout(dict(zip(self.dep_names, map(int, sent[0]), strict=True)))
        except RolloutTimeoutError as exc:
            exc.state = asked
            raise
        return self._state(int(state.slot[0]), deps, asked)

    def advance(self, state: ClusterState,
                rng: np.random.Generator) -> tuple[ClusterState, Measurement]:
        """Wait the stabilisation time, then read the deployments and the metrics.

        Raises:
            BackendError: a read or the metrics failed (a :class:`MetricsError`); its
                `state` is the cluster one step later (as read, else as it was).
        """
        self.sleep(self.config.stabilization_time_s)
        slot = int(state.slot[0]) + self.spec.scenario.slots_per_step
        new = dataclasses.replace(state, slot=np.array([slot]))
        try:
            new = self._state(slot, self.read_deployments(), state)
            return new, self.measure(new)
        except BackendError as exc:
            exc.state = new
            raise

    def measure(self, state: ClusterState) -> Measurement:
        """A Measurement from the metrics provider (raises MetricsError when missing)."""
        sample = self.metrics.sample()
        return measurement_from_sample(self.spec, state, sample, self.trace, self.node_names)

    def close(self) -> None:
        """Nothing is deleted or scaled down on close."""


def _short(exc: Exception | None) -> str:
    if exc is None:
        return "none"
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__} {status}" if status else f"{type(exc).__name__}: {exc}"
