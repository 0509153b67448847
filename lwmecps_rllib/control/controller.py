"""The control loop: each period read the cluster, ask the policy, check its answer, fall
back to the rule when it cannot be used, and (live) apply through the backend's guard
rails; log and count every period.

One period's record (a line of the decision log):

- `period`, `time`, `mode`, `slot`;
- `source`: `policy`, `fallback`, or `none` (no rule, or the cluster was not read);
- `cause` and `error` when the policy's decision was not used (`timeout`, `error`,
  `infeasible`, `out_of_bounds`), or `stage` (`read`, `apply`) and `error` when the
  cluster failed;
- `policy` and `fallback`: replicas per Deployment each decided (both, in every mode);
- `cluster`: `[spec replicas, ready replicas]` per Deployment as read;
- `asked` (live): what the Deployments were asked for after the guard rails;
- `model_id`, `policy_latency_ms`, `terms` (the last step's reward and its terms),
  `cpu_ms` (this process's CPU time for the period).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lwmecps_rllib.backends.base import BackendError, GuardRailError
from lwmecps_rllib.cluster import core, kernels
from lwmecps_rllib.control.check import ENV, checked_replicas
from lwmecps_rllib.control.decision_log import DecisionLog
from lwmecps_rllib.control.observe import ClusterReader, Snapshot
from lwmecps_rllib.control.policies import PolicyClient, PolicyError
from lwmecps_rllib.control.telemetry import Telemetry
from lwmecps_rllib.envs.base import metrics_info
from lwmecps_rllib.serving.policy import request_from_view

log = logging.getLogger(__name__)


class StopRequestedError(Exception):
    """A stop was asked for while the period waited (a retry's back-off)."""


def interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A `sleep` for the backend that ends the period when `stop` is set."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise StopRequestedError("stop requested")

    return sleep


class Controller:
    """Runs a policy against a cluster, with a fallback rule.

    Args:
        backend: The Kubernetes backend (bounds, rate limit, dry-run are its own).
        policy: Where decisions come from.
        fallback: The rule used when the policy's decision cannot be (None: none).
        mode: `shadow` (apply nothing) or `live`.
        telemetry: The metrics.
        decisions: The decision log.
    """

    def __init__(self, backend: Any, policy: PolicyClient, fallback: Any, mode: str,
                 telemetry: Telemetry, decisions: DecisionLog) -> None:
        from gymnasium import spaces

        self.backend = backend
        self.policy = policy
        self.fallback = fallback
        self.mode = mode
        self.telemetry = telemetry
        self.decisions = decisions
        spec = backend.spec
        self.reader = ClusterReader(backend, spaces.MultiDiscrete(
            [spec.max_pods + 1] * spec.n_deployments))
        self.names = list(backend.dep_names)
        self.period = 0
        self._model: dict[str, Any] | None = None
        self._fallback_ready = False

    # ------------------------------------------------------------------ one period
    def run_period(self) -> dict[str, Any]:
        """Read, decide, apply (live), log; returns the period's record."""
        cpu0 = time.process_time()
        self.period += 1
        record: dict[str, Any] = {"period": self.period, "time": time.time(),
                                  "mode": self.mode}
        try:
            snap = self.reader.read()
        except BackendError as exc:
            record.update(source="none", stage="read", error=str(exc))
            return self._finish(record, cpu0)
        record.update(slot=int(snap.state.slot[0]), cluster=self._cluster(snap),
                      terms=self._terms(snap))
        ruled = self._rule(snap)
        record["fallback"] = self._named(ruled)
        chosen = self._ask(snap, record)
        if chosen is not None:
            record["source"] = "policy"
        elif ruled is not None:
            record["source"], chosen = "fallback", ruled
        else:
            record["source"] = "none"
        if self.mode == "live" and chosen is not None:
            self._apply(snap, chosen, record)
        return self._finish(record, cpu0)

    def _finish(self, record: dict[str, Any], cpu0: float) -> dict[str, Any]:
        record["cpu_ms"] = round((time.process_time() - cpu0) * 1e3, 3)
        if record.get("cause"):
            log.warning("period %d: policy not used (%s): %s; decided by %s", record["period"],
                        record["cause"], record["policy_error"], record["source"])
        if record.get("stage"):
            log.warning("period %d: cluster %s failed: %s", record["period"], record["stage"],
                        record["error"])
        self.telemetry.observe(record)
        self.decisions.write(record)
        return record

    def _ask(self, snap: Snapshot, record: dict[str, Any]) -> np.ndarray | None:
        """The policy's checked decision (None, with the cause in `record`, otherwise)."""
        t0 = time.perf_counter()
        try:
            model = self._describe()
            answer = self.policy.decide(request_from_view(snap.view))
            record["policy_latency_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
            record["model_id"] = answer.model_id
            if answer.model_id != model.get("model_id"):
                self._model = None  # rolled out: learn its history length next period
            cfg = self.backend.config
            replicas = checked_replicas(answer, self.backend.spec, cfg.min_replicas,
                                        self.backend.max_replicas)
        except PolicyError as exc:
            record.setdefault("policy_latency_ms", round((time.perf_counter() - t0) * 1e3, 3))
            record.update(cause=exc.cause, policy_error=exc.message)
            if exc.cause in ("timeout", "error"):
                self._model = None
            return None
        record["policy"] = self._named(replicas)
        return replicas

    def _describe(self) -> dict[str, Any]:
        """The model answering (asked again after a failure or a new model id); checks it
        decides replicas for this scenario and keeps the history it observes."""
        if self._model is None:
            info = self.policy.describe()
            scenario = self.backend.spec.scenario.name
            if info.get("env") != ENV or info.get("scenario") not in (None, scenario):
                raise PolicyError("error", f"model {info.get('model_id')} is for "
                                             f"{info.get('env')} on {info.get('scenario')}; "
                                             f"the controller scales {ENV} on {scenario}")
            self.reader.keep_history(int(info.get("history_slots") or 0))
            self._model = info
        return self._model

    def _rule(self, snap: Snapshot) -> np.ndarray | None:
        """The fallback rule's decision (every period, so its own history stays whole)."""
        if self.fallback is None:
            return None
        if not self._fallback_ready:
            self.fallback.reset(snap.view, 0)
            self._fallback_ready = True
        return np.asarray(self.fallback.act(snap.view), np.int64).reshape(-1)

    def _apply(self, snap: Snapshot, replicas: np.ndarray, record: dict[str, Any]) -> None:
        """Bring the Deployments to `replicas` through the guard rails (no rollout wait:
        the next period reads what became ready)."""
        try:
            sent = self.backend.reconcile(replicas[None], None, deployments=snap.deployments)
        except GuardRailError:
            raise  # a request outside what the backend may touch is a bug, never a period
        except BackendError as exc:
            record.update(stage="apply", error=str(exc))
            return
        record["asked"] = self._named(sent[0])

    # ------------------------------------------------------------------ record parts
    def _named(self, replicas: np.ndarray | None) -> dict[str, int] | None:
        if replicas is None:
            return None
        return {n: int(v) for n, v in zip(self.names, replicas, strict=True)}

    def _cluster(self, snap: Snapshot) -> dict[str, list[int]]:
        ready = snap.view.ready
        return {n: [int(r), int(k)] for n, r, k in
                zip(self.names, snap.state.replicas[0], ready, strict=True)}

    def _terms(self, snap: Snapshot) -> dict[str, float]:
        """The reward and its terms for the last step of the cluster as it runs."""
        row = core.step_metrics(self.backend.spec, snap.measurement, snap.state.replicas,
                                snap.state.node_of)[0]
        info = metrics_info(row, True, int(snap.state.slot[0]))
        return {"reward": float(row[kernels.M_REWARD]), "latency_ms": info["latency"],
                "pod_count": info["pod_count"], "resource_usage": info["resource_usage"],
                "imbalance": info["imbalance"], "failed_requests": info["failed_requests"]}

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event, period_s: float, periods: int | None = None) -> int:
        """Run periods every `period_s` until `stop` is set (or `periods` ran).

        A stop during a period ends it where it waits (a retry's back-off) or after its
        bounded calls; nothing half-written is left in the log.

        Returns:
            The number of periods run.
        """
        while not stop.is_set() and (periods is None or self.period < periods):
            began = time.monotonic()
            try:
                self.run_period()
            except StopRequestedError:
                log.info("stopped during period %d", self.period)
                break
            if periods is None or self.period < periods:
                stop.wait(max(0.0, began + period_s - time.monotonic()))
        return self.period

    def close(self) -> None:
        """Close the policy client and the log."""
        self.policy.close()
        self.decisions.close()
