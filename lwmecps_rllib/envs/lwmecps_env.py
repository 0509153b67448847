"""LWMECPSEnv: place the edge server deployment on a node."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from lwmecps_rllib.cluster import core, kernels
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement
from lwmecps_rllib.envs.base import MAX_USERS, ClusterEnv
from lwmecps_rllib.envs.history import history_blocks, history_meta, write_history
from lwmecps_rllib.envs.layout import ObsLayout
from lwmecps_rllib.scenarios import Scenario, load_scenario
from lwmecps_rllib.spec import EnvOptions

NODE_FEATURES = ("cpu", "ram", "tx_bandwidth", "rx_bandwidth", "read_disk", "write_disk",
                 "avg_latency", "replicas")


def placement_capacity(spec: ClusterSpec) -> np.ndarray:
    """(N, 6) node CPU, RAM, TX, RX, disk read, disk write capacity."""
    sc = spec.scenario
    return np.array([[n.cpu, n.ram_mb, n.tx_mbps, n.rx_mbps, n.disk_read_mbps,
                      n.disk_write_mbps] for n in sc.nodes])


def placement_pod_use(spec: ClusterSpec) -> np.ndarray:
    """(6,) what one pod takes of each node resource."""
    p = spec.scenario.pod
    return np.array([p.cpu_request, p.ram_request_mb, p.tx_usage_mbps, p.rx_usage_mbps,
                     p.disk_read_usage_mbps, p.disk_write_usage_mbps])


RESOURCE_COLUMNS = ("cpu", "ram", "tx", "rx", "disk_read", "disk_write")


def placement_layout(spec: ClusterSpec, options: EnvOptions | None = None) -> ObsLayout:
    """The flat observation of LWMECPSEnv and LWMECPSEnv2 (see LWMECPSEnv2's docstring).

    Per node: the free fraction of each resource, the latency over
    `failed_latency_ms`, and which deployments run on it (one-hot); then the users
    per station over the scenario's most.
    """
    columns = (*(f"{c}_free" for c in RESOURCE_COLUMNS), "latency",
               *(f"deployment_{d}" for d in range(spec.n_deployments)))
    return ObsLayout([("nodes", (spec.n_nodes, len(columns)), 0.0, 1.0, columns),
                      ("users", spec.n_stations, 0.0, 1.0),
                      *history_blocks(spec.n_stations, options)], history_meta(options))


def placement_encode(spec: ClusterSpec, layout: ObsLayout, state: ClusterState,
                     m: Measurement, *, users_hist: np.ndarray | None = None,
                     capacity: np.ndarray | None = None,
                     used: np.ndarray | None = None) -> np.ndarray:
    """(B, size) normalised observations of B clusters, in [0, 1].

    Args:
        spec: The cluster.
        layout: :func:`placement_layout` of `spec`.
        state: The clusters' states.
        m: Their last measurement.
        users_hist: (B, H, S) users of the last measured slots, newest last (needed when
            the layout has history blocks).
        capacity: (N, 6) node capacity, instead of the scenario's.
        used: (B, N, 6) resources in use, instead of pods x a pod's use (NaN: that).
    """
    sc = spec.scenario
    b = len(state.slot)
    cap = placement_capacity(spec) if capacity is None else capacity
    pods = core.pods_per_node(spec, state.replicas, state.node_of)
    taken = pods[:, :, None] * placement_pod_use(spec)
    if used is not None:
        taken = np.where(np.isnan(used), taken, used)
    free = np.clip(1.0 - taken / cap, 0.0, 1.0)
    lat = np.clip(m.node_avg_latency_ms / sc.failed_latency_ms, 0.0, 1.0)[:, :, None]
    onehot = (state.node_of[:, None, :] == np.arange(spec.n_nodes)[None, :, None])
    per_node = np.concatenate([free, lat, onehot], axis=2).reshape(b, -1)
    users = np.clip(m.users / sc.max_users, 0.0, 1.0)
    base = np.concatenate([per_node, users], axis=1)
    out = np.empty((b, layout.size), np.float32)
    out[:, :base.shape[1]] = base
    write_history(layout, out, users_hist, sc.max_users)
    return out


class PlacementEnv(ClusterEnv):
    """Shared logic of LWMECPSEnv and LWMECPSEnv2 (one pod per deployment, moved by the action)."""

    action_kind = "placement"
    layout_of = staticmethod(placement_layout)
    encoder = staticmethod(placement_encode)

    def __init__(self, options: EnvOptions | None = None, /, **fields: Any) -> None:
        super().__init__(options, **fields)
        spec = self.spec_
        n, d, s = spec.n_nodes, spec.n_deployments, spec.n_stations
        self.layout = placement_layout(spec, self.options)
        if self.obs_format == "box":
            self.observation_space = self.layout.space()
        else:
            high = np.concatenate([placement_capacity(spec),
                                   np.full((n, 1), self.scenario.failed_latency_ms),
                                   np.full((n, 1), d)], axis=1).astype(np.float32)
            self.observation_space = spaces.Dict({
                "nodes": spaces.Box(np.zeros_like(high), high, dtype=np.float32),
                "users": spaces.Box(0.0, MAX_USERS, shape=(s,), dtype=np.float32),
                **self._history_spaces(),
            })
        self._ones = np.ones((1, d), np.int64)

    @classmethod
    def build_spec(cls, scenario: Scenario, options: EnvOptions) -> ClusterSpec:
        """One pod per deployment; station `s` served by deployment `s mod n_deployments`."""
        d = scenario.n_stations if options.n_deployments is None else options.n_deployments
        if d > scenario.n_stations:
            raise ValueError(f"n_deployments must be an integer in [1, {scenario.n_stations}], "
                             f"got {d!r}")
        return ClusterSpec.build(scenario, station_deployment=np.arange(scenario.n_stations) % d,
                                 pinned=False, max_pods=1)

    @classmethod
    def action_mask(cls, options: EnvOptions) -> list[list[bool]]:
        """Nodes each deployment may go to, so that any choice fits every node
        (:func:`lwmecps_rllib.cluster.core.placement_allowed`)."""
        return core.placement_allowed(
            cls.build_spec(load_scenario(options.scenario), options)).tolist()

    def _nodes_from(self, action: Any) -> np.ndarray:
        a = np.asarray(action, dtype=np.int64).reshape(1, -1)
        if a.shape[1] != self.spec_.n_deployments or np.any(a < 0) \
                or np.any(a >= self.spec_.n_nodes):
            raise ValueError(f"action must give a node index in [0, {self.spec_.n_nodes}) for "
                             f"each of {self.spec_.n_deployments} deployments, got {action!r}")
        return a

    def _decode(self, action: Any) -> tuple[np.ndarray, np.ndarray]:
        return self._ones, self._nodes_from(action)

    def _reward(self, metrics: np.ndarray) -> float:
        return -float(metrics[kernels.M_LATENCY_TERM])

    def _observe(self) -> Any:
        if self.obs_format == "box":
            return placement_encode(self.spec_, self.layout, self.state, self.last,
                                    users_hist=self._users_hist)[0]
        spec = self.spec_
        pods = core.pods_per_node(spec, self.state.replicas, self.state.node_of)[0]
        free = placement_capacity(spec) - pods[:, None] * placement_pod_use(spec)
        lat = np.minimum(self.last.node_avg_latency_ms[0], self.scenario.failed_latency_ms)
        nodes = np.concatenate([np.maximum(free, 0.0), lat[:, None], pods[:, None]], axis=1)
        return {"nodes": nodes.astype(np.float32), "users": self.last.users[0].astype(np.float32),
                **self._history_dict()}


class LWMECPSEnv(PlacementEnv):
    """Place the single edge server deployment on one node of the cluster.

    ## Description

    The reference's first environment. One server Deployment with one pod serves the
    users of every base station; each station's burst reaches it through the
    station-to-node delay matrix (with the same throttling, timeout and ring fail-over
    as LWMECPSEnv3). The agent picks the node. A move is a rolling update: the old
    pod serves until the new one is ready (`pod_startup_s`).

    ## Action Space

    `Discrete(n_nodes)`: the node to run the deployment on.

    ## Observation Space

    `obs_format="dict"` (default): `nodes`, a `(n_nodes, 8)` Box per node of free
    `cpu`, `ram` (MB), `tx_bandwidth`, `rx_bandwidth` (Mb/s), `read_disk`,
    `write_disk` (MB/s), `avg_latency` (ms of the requests it answered) and
    `replicas` (pods on it); `users`, the users each station saw in the last slot.
    `obs_format="box"`: the normalised form of LWMECPSEnv2.

    ## Rewards

    `-latency`: the mean latency in ms of the step's requests, a failed request
    counting `failed_latency_ms`. A placement that does not fit gets -100.

    ## Starting State

    The pod on the first station's node, at a random slot of the day.

    ## Episode End

    Truncated after `episode_length` steps; never terminated.

    ## Arguments

    As LWMECPSEnv3: `scenario`, `trace`, `backend`, `episode_length`, `obs_format`,
    `render_mode`, `shuffle_stations`, `load_jitter`.
    """

    def __init__(self, options: EnvOptions | None = None, /, **fields: Any) -> None:
        super().__init__(options, **fields)
        self.action_space = spaces.Discrete(self.spec_.n_nodes)

    @classmethod
    def build_spec(cls, scenario: Scenario, options: EnvOptions) -> ClusterSpec:
        """One deployment of one pod serving every station."""
        return super().build_spec(scenario, options.replace(n_deployments=1))
