"""The simulator backend: the numpy cluster core replaying a user trace (no Ray, no Kubernetes)."""

from __future__ import annotations

import numpy as np

from lwmecps_rllib.cluster import core
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement


class SimBackend:
    """A digital twin of the cluster driven by trace `trace` of the scenario.

    Args:
        spec: The compiled cluster.
        trace: (T, S) users per station per slot.
    """

    def __init__(self, spec: ClusterSpec, trace: np.ndarray) -> None:
        self.spec = spec
        self.trace = trace
        self._initial = core.initial_state(
            spec, np.zeros(1, np.int64), core.initial_replicas(spec, trace, np.zeros(1)))

    def reset(self, start_slot: int, rng: np.random.Generator) -> tuple[ClusterState, Measurement]:
        """Ready replicas at home (the scenario's `initial_replicas`); the slot before
        `start_slot` is measured."""
        slot = np.array([start_slot - 1], np.int64)
        if self.spec.scenario.initial_replicas == "load":
            state = core.initial_state(self.spec, slot,
                                       core.initial_replicas(self.spec, self.trace, slot))
        else:
            t = self._initial
            state = ClusterState(slot, t.replicas.copy(), t.ready_at.copy(), t.node_of.copy(),
                                 t.move_to.copy(), t.move_at.copy())
        return core.advance(self.spec, state, self.trace, rng, n_slots=1)

    def apply(self, state: ClusterState, replicas: np.ndarray, nodes: np.ndarray) -> ClusterState:
        """Scale and move deployments (only what changed)."""
        state = core.apply_replicas(self.spec, state, replicas)
        if not self.spec.pinned and not np.array_equal(nodes, state.node_of):
            state = core.apply_placement(self.spec, state, nodes)
        return state

    def advance(self, state: ClusterState, rng: np.random.Generator,
                latency_hist: np.ndarray | None = None) -> tuple[ClusterState, Measurement]:
        """Simulate the step's slots (adding each request's latency to `latency_hist`)."""
        return core.advance(self.spec, state, self.trace, rng, latency_hist=latency_hist)

    def close(self) -> None:
        """Nothing to release."""
