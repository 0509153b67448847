"""A public, read-only view of one cluster: what policies, baselines and the oracle read.

An env hands out a :class:`ClusterView` (`env.cluster_view()`); a controller can build
one from a real cluster's state the same way. Its arrays are copies marked read-only,
so a policy cannot change the env it decides for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lwmecps_rllib.cluster import core
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement
from lwmecps_rllib.scenarios import Scenario


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.array(a, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class ClusterView:
    """One cluster as a policy may see it (batch axis of 1 in `state` and `last`).

    `state` and `last` are None before the env's first reset.
    """

    spec: ClusterSpec
    """The compiled cluster (nodes, deployments, delays, limits)."""
    action_space: Any
    """The env's action space (sample from a copy: seeding it would reseed the env's)."""
    state: ClusterState | None = None
    """The cluster now (read-only copy)."""
    last: Measurement | None = None
    """What the last step measured (read-only copy)."""
    trace: np.ndarray | None = None
    """(T, S) users the simulator replays, for policies that look ahead (the oracle);
    None on a real cluster."""
    users_history: np.ndarray | None = None
    """(H, S) users of the last measured slots, newest last, when the env keeps them
    (`history` / `history_windows` options)."""

    @classmethod
    def of(cls, spec: ClusterSpec, action_space: Any, state: ClusterState | None,
           last: Measurement | None, trace: np.ndarray | None,
           users_history: np.ndarray | None = None) -> ClusterView:
        """A view holding read-only copies of `state` and `last` (and a read-only view of
        `trace`)."""
        if state is not None:
            state = ClusterState(*(_frozen(getattr(state, f)) for f in (
                "slot", "replicas", "ready_at", "node_of", "move_to", "move_at")))
        if last is not None:
            last = Measurement(_frozen(last.data), last.n_nodes)
        if trace is not None:
            trace = trace.view()
            trace.flags.writeable = False
        hist = None if users_history is None else _frozen(users_history[0])
        return cls(spec, action_space, state, last, trace, hist)

    @property
    def scenario(self) -> Scenario:
        """The scenario."""
        return self.spec.scenario

    @property
    def replicas_env(self) -> bool:
        """Whether actions set replica counts of pinned deployments (else nodes)."""
        return self.spec.pinned

    def _now(self) -> ClusterState:
        if self.state is None:
            raise RuntimeError("the cluster view has no state before the env's reset()")
        return self.state

    @property
    def replicas(self) -> np.ndarray:
        """(D,) desired replicas."""
        return self._now().replicas[0]

    @property
    def ready(self) -> np.ndarray:
        """(D,) replicas ready now."""
        st = self._now()
        return core.ready_counts(st, core.now_s(self.spec, st))[0]

    @property
    def nodes(self) -> np.ndarray:
        """(D,) node each deployment runs on, or is moving to."""
        return core.current_nodes(self.spec, self._now())[0]

    @property
    def users(self) -> np.ndarray:
        """(S,) users of each station in the last measured slot."""
        return self.last.users[0]

    @property
    def requests_last(self) -> np.ndarray:
        """(S,) requests per station in the last measured slot (users x load_scale)."""
        return self.users * self.scenario.load_scale

    @property
    def avg_latency_ms(self) -> float:
        """Mean latency of the last step's successful requests."""
        return float(self.last.avg_latency_ms[0])

    @property
    def slot(self) -> int:
        """Next slot of the trace."""
        return int(self._now().slot[0])
