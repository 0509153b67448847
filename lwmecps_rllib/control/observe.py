"""Reading the cluster each period: the Deployments and the metrics, through the
Kubernetes backend, as the public view policies and baselines read."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from lwmecps_rllib.cluster.core import ClusterState, Measurement
from lwmecps_rllib.cluster.view import ClusterView


@dataclass(frozen=True)
class Snapshot:
    """The cluster at one period."""

    state: ClusterState
    """Replicas (the Deployments' spec) and ready replicas, as the cluster reports them."""
    measurement: Measurement
    """The metrics of the last step."""
    view: ClusterView
    """Both, with the users' history, as policies and baselines read them."""
    deployments: dict[str, Any]
    """The Deployments as read (patched from these, not read again, in live mode)."""


class ClusterReader:
    """Reads the managed Deployments and the metrics; keeps the users of past periods.

    The history holds the users of the last `history_slots` periods before the newest;
    until as many were measured, the oldest measured stands for the ones before (as the
    envs do on a real cluster).

    Args:
        backend: A :class:`~lwmecps_rllib.backends.kubernetes.KubernetesBackend`.
        action_space: The env's action space (what the view carries).
    """

    def __init__(self, backend: Any, action_space: Any) -> None:
        self.backend = backend
        self.action_space = action_space
        self.history_slots = 0
        self._users: deque[np.ndarray] = deque(maxlen=1)

    def keep_history(self, slots: int) -> None:
        """Keep the users of `slots` periods before the newest."""
        if slots != self.history_slots:
            self.history_slots = slots
            self._users = deque(self._users, maxlen=slots + 1)

    def read(self) -> Snapshot:
        """The cluster now (raises BackendError when a read or the metrics fail)."""
        b = self.backend
        deployments = b.read_deployments()
        state = b.observe(b.slot_now(), deployments)
        m = b.measure(state)
        self._users.append(m.users[0].copy())
        return Snapshot(state, m, ClusterView.of(b.spec, self.action_space, state, m, None,
                                                 self._history()), deployments)

    def _history(self) -> np.ndarray | None:
        """(1, H, S) users, newest last (None without history)."""
        if not self.history_slots:
            return None
        have = list(self._users)
        pad = [have[0]] * (self.history_slots + 1 - len(have))
        return np.stack(pad + have)[None]
