"""The backend interface: what the cluster does, behind one protocol.

A backend produces and changes cluster state; it never computes rewards or
observations (the envs do, once, from the core). The simulator drives the numpy
core; the Kubernetes backend drives a real cluster through an injected client.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement


class BackendError(RuntimeError):
    """The cluster did not do what was asked (API errors after retries, a rollout that
    never became ready, missing objects). An env ends the step with the error in `info`
    and a penalty, and stays usable.

    Args:
        message: What went wrong.
        state: The cluster as asked for, when the request itself went through.
    """

    def __init__(self, message: str, state: ClusterState | None = None) -> None:
        super().__init__(message)
        self.state = state


class GuardRailError(BackendError):
    """A request outside what the backend may touch; nothing was sent. Never swallowed."""


@runtime_checkable
class Backend(Protocol):
    """One cluster seen by an env (arrays have a leading batch axis of 1)."""

    spec: ClusterSpec

    def reset(self, start_slot: int, rng: np.random.Generator) -> tuple[ClusterState, Measurement]:
        """Bring the cluster to its initial state at `start_slot`; measure the slot before it."""
        ...

    def apply(self, state: ClusterState, replicas: np.ndarray, nodes: np.ndarray) -> ClusterState:
        """Ask for `replicas` (1, D) of each deployment on `nodes` (1, D).

        Raises:
            BackendError: when the cluster did not follow (the env penalises the step).
        """
        ...

    def advance(self, state: ClusterState,
                rng: np.random.Generator) -> tuple[ClusterState, Measurement]:
        """Wait the stabilisation time and measure what happened."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...
