"""What a step measured in B clusters: one float array, read through named views.

The compiled kernels fill the rows in one pass (`kernels.O_*` offsets); everything else
reads or builds a measurement through this class, so the array layout stays here.
"""

from __future__ import annotations

import numpy as np

from lwmecps_rllib.cluster import kernels


class Measurement:
    """What a step measured in each of B clusters, summed over its slots.

    All fields are views into one (B, 3 + 2N + S) float array `data` (counts are
    exact in float64), which the compiled kernels fill in one pass.
    """

    __slots__ = ("data", "n_nodes")

    def __init__(self, data: np.ndarray, n_nodes: int) -> None:
        self.data = data
        self.n_nodes = n_nodes

    @property
    def requests(self) -> np.ndarray:
        """(B,) requests sent."""
        return self.data[:, kernels.O_REQUESTS]

    @property
    def ok(self) -> np.ndarray:
        """(B,) successful requests."""
        return self.data[:, kernels.O_OK]

    @property
    def latency_sum_ms(self) -> np.ndarray:
        """(B,) summed latency of successful requests."""
        return self.data[:, kernels.O_LATENCY]

    @property
    def node_latency_sum_ms(self) -> np.ndarray:
        """(B, N) summed latency of the successful requests each node answered."""
        return self.data[:, kernels.O_NODES:kernels.O_NODES + self.n_nodes]

    @property
    def node_ok(self) -> np.ndarray:
        """(B, N) successful requests each node answered."""
        return self.data[:, kernels.O_NODES + self.n_nodes:kernels.O_NODES + 2 * self.n_nodes]

    @property
    def users(self) -> np.ndarray:
        """(B, S) users of each station in the last measured slot."""
        return self.data[:, kernels.O_NODES + 2 * self.n_nodes:]

    @classmethod
    def zeros(cls, b: int, n_nodes: int, n_stations: int) -> Measurement:
        """An empty measurement."""
        return cls(np.zeros((b, kernels.O_NODES + 2 * n_nodes + n_stations)), n_nodes)

    @classmethod
    def from_parts(cls, requests: np.ndarray, ok: np.ndarray, latency_sum_ms: np.ndarray,
                   node_latency_sum_ms: np.ndarray, node_ok: np.ndarray,
                   users: np.ndarray) -> Measurement:
        """A measurement from its parts (what a real cluster's metrics report).

        Args:
            requests: (B,) requests sent.
            ok: (B,) successful requests.
            latency_sum_ms: (B,) summed latency of the successful requests.
            node_latency_sum_ms: (B, N) summed latency of the requests each node answered.
            node_ok: (B, N) successful requests each node answered.
            users: (B, S) users of each station in the last slot.
        """
        node_ok = np.atleast_2d(np.asarray(node_ok, np.float64))
        users = np.atleast_2d(np.asarray(users, np.float64))
        b, n = node_ok.shape
        m = cls.zeros(b, n, users.shape[1])
        m.data[:, kernels.O_REQUESTS] = requests
        m.data[:, kernels.O_OK] = ok
        m.data[:, kernels.O_LATENCY] = latency_sum_ms
        m.data[:, kernels.O_NODES:kernels.O_NODES + n] = node_latency_sum_ms
        m.data[:, kernels.O_NODES + n:kernels.O_NODES + 2 * n] = node_ok
        m.data[:, kernels.O_NODES + 2 * n:] = users
        return m

    @property
    def failed(self) -> np.ndarray:
        """(B,) failed requests."""
        return self.requests - self.ok

    @property
    def avg_latency_ms(self) -> np.ndarray:
        """(B,) mean latency of successful requests (0 when none succeeded)."""
        return np.divide(self.latency_sum_ms, self.ok, out=np.zeros(len(self.ok)),
                         where=self.ok > 0)

    @property
    def node_avg_latency_ms(self) -> np.ndarray:
        """(B, N) mean latency of the requests each node answered (0 when none)."""
        return np.divide(self.node_latency_sum_ms, self.node_ok,
                         out=np.zeros(self.node_ok.shape), where=self.node_ok > 0)
