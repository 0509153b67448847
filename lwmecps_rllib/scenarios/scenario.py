"""Scenario data: the cluster, its stations, the server model and the workload.

A scenario is plain data (a YAML file or the dataclasses below). Every field has
a default equal to the reference LWMECPS testbed's behaviour, so a scenario file
only states what differs. Loading validates every field and raises
:class:`ScenarioError` naming the offending field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class ScenarioError(ValueError):
    """A scenario file or dict is invalid; the message names the field."""


@dataclass(frozen=True)
class NodeSpec:
    """One Kubernetes node."""

    name: str
    """Node name (the value of its `kubernetes.io/hostname` label)."""
    cpu: float = 8.0
    """Allocatable CPU cores."""
    ram_mb: float = 16000.0
    """Allocatable memory in MB."""
    tx_mbps: float = 1024.0
    """Transmit bandwidth in Mb/s."""
    rx_mbps: float = 1024.0
    """Receive bandwidth in Mb/s."""
    disk_read_mbps: float = 500.0
    """Disk read bandwidth in MB/s (observed by LWMECPSEnv/2 only)."""
    disk_write_mbps: float = 500.0
    """Disk write bandwidth in MB/s (observed by LWMECPSEnv/2 only)."""


@dataclass(frozen=True)
class StationSpec:
    """One base station and the server Deployment that serves its users."""

    name: str
    """Station name, e.g. `bs1`."""
    node: str
    """Node the station's Deployment is pinned to (LWMECPSEnv3) or starts on (LWMECPSEnv/2)."""
    deployment: str
    """Name of the station's server Deployment."""
    x_km: float = 0.0
    """Position (km), informational for generated scenarios."""
    y_km: float = 0.0
    """Position (km), informational for generated scenarios."""


@dataclass(frozen=True)
class PodSpec:
    """Resources of one server pod."""

    cpu_request: float = 2.0
    """CPU request; bounds how many replicas fit a node."""
    ram_request_mb: float = 2000.0
    """Memory request in MB; bounds how many replicas fit a node."""
    cpu_usage: float = 0.1
    """Observed CPU use of a running pod (observations and imbalance)."""
    ram_usage_mb: float = 128.0
    """Observed memory use in MB."""
    tx_usage_mbps: float = 10.0
    """Observed transmit rate in Mb/s."""
    rx_usage_mbps: float = 10.0
    """Observed receive rate in Mb/s."""
    disk_read_usage_mbps: float = 100.0
    """Observed disk read rate (LWMECPSEnv/2)."""
    disk_write_usage_mbps: float = 100.0
    """Observed disk write rate (LWMECPSEnv/2)."""


@dataclass(frozen=True)
class ServerModel:
    """Per-pod throttling model of the test application's server."""

    increment_low: int = 2
    """Smallest per-request increment of the `cpu` and `ram` counters."""
    increment_high: int = 5
    """Largest per-request increment (inclusive)."""
    cpu_limit: float = 200.0
    """Cap of the `cpu` counter."""
    ram_limit: float = 256.0
    """Cap of the `ram` counter."""
    decay_per_s: float = 100.0
    """How much both counters drop per second."""
    load_threshold: float = 0.7
    """Requests are delayed while `load = (cpu/cpu_limit + ram/ram_limit)/2` exceeds this."""
    base_delay_s: float = 0.025
    """Delay added at the threshold (0.5 * 0.05 in the reference)."""
    delay_slope_s: float = 1.5
    """Extra delay per unit of load above the threshold (0.5 * 3 in the reference)."""


@dataclass(frozen=True)
class Scenario:
    """A complete simulated (or real) edge cluster and its workload."""

    name: str
    """Scenario name."""
    nodes: tuple[NodeSpec, ...]
    """The cluster's nodes."""
    stations: tuple[StationSpec, ...]
    """Base stations in fail-over ring order (each fails over to the next)."""
    delay_ms: np.ndarray
    """Network delay in ms from each station (rows) to each node (columns)."""
    traces: dict[str, np.ndarray]
    """Users per station per slot, by trace name (`a` for training, `b` for evaluation)."""
    description: str = ""
    """Free text."""
    pod: PodSpec = field(default_factory=PodSpec)
    """Server pod resources."""
    server: ServerModel = field(default_factory=ServerModel)
    """Server throttling model."""
    max_replicas: int = 4
    """Largest replica count an action may ask for per deployment."""
    slot_s: float = 10.0
    """Length of one workload slot in seconds (users send one burst per slot)."""
    timeout_s: float = 0.4
    """Client timeout per attempt before failing over to the next station."""
    stabilization_time_s: float = 10.0
    """Time a step waits after applying an action before measuring (a multiple of `slot_s`)."""
    load_scale: float = 1.0
    """Requests per user per slot."""
    pod_startup_s: float = 0.0
    """Seconds before a new replica serves (0 in the reference, which waits for readiness)."""
    replica_cost: float = 0.1
    """Reward weight of the total replica count."""
    imbalance_weight: float = 0.1
    """Reward weight of the resource imbalance across nodes."""
    latency_weight: float = 1.0
    """Reward weight of the mean latency in ms."""
    failed_request_latency_ms: float | None = None
    """Latency charged to a failed request in the reward (default: one timeout per station)."""
    invalid_action_reward: float = -100.0
    """Reward of an action that does not fit the nodes (the action is not applied)."""
    termination_reward: float | None = -500.0
    """LWMECPSEnv3 terminates an episode when a step's reward falls below this (None: never)."""
    episode_length: int = 5
    """Steps per episode (the env truncates after this many)."""
    initial_replicas: int | str = 1
    """Replicas per deployment at reset: a count (1 in the reference), or `"load"` for
    enough pods that the starting slot's burst is not throttled."""

    # ------------------------------------------------------------------ derived
    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.nodes)

    @property
    def n_stations(self) -> int:
        """Number of base stations (and of LWMECPSEnv3 deployments)."""
        return len(self.stations)

    @property
    def node_names(self) -> list[str]:
        """Node names in order."""
        return [n.name for n in self.nodes]

    @property
    def deployment_names(self) -> list[str]:
        """Deployment names in station order."""
        return [s.deployment for s in self.stations]

    @property
    def home_nodes(self) -> np.ndarray:
        """Index of each station's node."""
        index = {n.name: i for i, n in enumerate(self.nodes)}
        return np.array([index[s.node] for s in self.stations], dtype=np.int64)

    @property
    def slots_per_step(self) -> int:
        """Workload slots measured per env step."""
        return max(1, round(self.stabilization_time_s / self.slot_s))

    @property
    def failed_latency_ms(self) -> float:
        """Latency charged to a failed request in the reward."""
        if self.failed_request_latency_ms is not None:
            return float(self.failed_request_latency_ms)
        return 1000.0 * self.timeout_s * self.n_stations

    @property
    def n_slots(self) -> int:
        """Slots in a trace (all traces have the same length)."""
        return next(iter(self.traces.values())).shape[0]

    def trace(self, name: str) -> np.ndarray:
        """Users per station per slot of trace `name`.

        Raises:
            ScenarioError: for an unknown trace name.
        """
        if name not in self.traces:
            raise ScenarioError(
                f"scenario {self.name!r}: unknown trace {name!r}; allowed: {sorted(self.traces)}"
            )
        return self.traces[name]

    @property
    def max_users(self) -> float:
        """Largest users count of any station in any trace (for normalisation)."""
        return float(max(1, max(int(t.max()) for t in self.traces.values())))

    def replace(self, **changes: Any) -> Scenario:
        """A copy with some fields changed, validated."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ScenarioError(
                f"unknown scenario field(s) {sorted(unknown)}; allowed: "
                f"{sorted(f.name for f in dataclasses.fields(self))}"
            )
        new = dataclasses.replace(self, **changes)
        validate(new)
        return new


# ---------------------------------------------------------------- validation
def _positive(path: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ScenarioError(f"field {path!r} must be a finite number {bound}, got {value!r}")
    return value


def validate(s: Scenario) -> None:
    """Check every field of a scenario.

    Raises:
        ScenarioError: naming the first invalid field.
    """
    _check_topology(s)
    _check_server(s)
    _check_knobs(s)
    _check_network_and_traces(s)
    _check_fit(s)


def _check_topology(s: Scenario) -> None:
    """Nodes and stations: present, uniquely named, positive capacities, known homes."""
    if not s.nodes:
        raise ScenarioError("field 'nodes' must list at least one node")
    if not s.stations:
        raise ScenarioError("field 'stations' must list at least one station")
    names = [n.name for n in s.nodes]
    if len(set(names)) != len(names):
        raise ScenarioError(f"field 'nodes' has duplicate names: {names}")
    for i, n in enumerate(s.nodes):
        for f in ("cpu", "ram_mb", "tx_mbps", "rx_mbps", "disk_read_mbps", "disk_write_mbps"):
            _positive(f"nodes[{i}].{f}", getattr(n, f))
    st_names = [st.name for st in s.stations]
    if len(set(st_names)) != len(st_names):
        raise ScenarioError(f"field 'stations' has duplicate names: {st_names}")
    deps = [st.deployment for st in s.stations]
    if len(set(deps)) != len(deps):
        raise ScenarioError(f"field 'stations[].deployment' has duplicates: {deps}")
    for i, st in enumerate(s.stations):
        if st.node not in names:
            raise ScenarioError(
                f"field 'stations[{i}].node' is {st.node!r}; allowed: {names}"
            )


def _check_server(s: Scenario) -> None:
    """The pod's requests and use, and the test application's throttling model."""
    for f in dataclasses.fields(PodSpec):
        _positive(f"pod.{f.name}", getattr(s.pod, f.name), allow_zero=f.name.endswith("usage")
                  or "usage" in f.name)
    sm = s.server
    if not (isinstance(sm.increment_low, int) and isinstance(sm.increment_high, int)
            and 1 <= sm.increment_low <= sm.increment_high):
        raise ScenarioError(
            "fields 'server.increment_low'/'server.increment_high' must be integers with "
            f"1 <= low <= high, got {sm.increment_low!r}, {sm.increment_high!r}"
        )
    for f in ("cpu_limit", "ram_limit", "decay_per_s", "load_threshold"):
        _positive(f"server.{f}", getattr(sm, f))
    for f in ("base_delay_s", "delay_slope_s"):
        _positive(f"server.{f}", getattr(sm, f), allow_zero=True)


def _check_knobs(s: Scenario) -> None:
    """Replicas, episode, time and reward knobs."""
    if not isinstance(s.max_replicas, int) or isinstance(s.max_replicas, bool) \
            or s.max_replicas < 1:
        raise ScenarioError(f"field 'max_replicas' must be an integer >= 1, got {s.max_replicas!r}")
    if not isinstance(s.episode_length, int) or isinstance(s.episode_length, bool) \
            or s.episode_length < 1:
        raise ScenarioError(
            f"field 'episode_length' must be an integer >= 1, got {s.episode_length!r}"
        )
    for f in ("slot_s", "timeout_s", "stabilization_time_s", "load_scale"):
        _positive(f, getattr(s, f))
    for f in ("pod_startup_s", "replica_cost", "imbalance_weight", "latency_weight"):
        _positive(f, getattr(s, f), allow_zero=True)
    if s.failed_request_latency_ms is not None:
        _positive("failed_request_latency_ms", s.failed_request_latency_ms, allow_zero=True)
    if s.termination_reward is not None and not math.isfinite(float(s.termination_reward)):
        raise ScenarioError("field 'termination_reward' must be a finite number or null")
    if not math.isfinite(float(s.invalid_action_reward)):
        raise ScenarioError("field 'invalid_action_reward' must be a finite number")
    ir = s.initial_replicas
    if not ((isinstance(ir, int) and not isinstance(ir, bool) and 0 <= ir <= s.max_replicas)
            or ir == "load"):
        raise ScenarioError(f"field 'initial_replicas' must be an integer in [0, "
                            f"{s.max_replicas}] or 'load', got {ir!r}")
    ratio = s.stabilization_time_s / s.slot_s
    if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
        raise ScenarioError(
            "field 'stabilization_time_s' must be a positive multiple of 'slot_s', got "
            f"{s.stabilization_time_s} with slot_s={s.slot_s}"
        )


def _check_network_and_traces(s: Scenario) -> None:
    """The delay matrix and the traces: shapes, finite, non-negative."""
    d = np.asarray(s.delay_ms)
    if d.shape != (s.n_stations, s.n_nodes):
        raise ScenarioError(
            f"field 'network.delay_ms' must have shape (stations, nodes) = "
            f"({s.n_stations}, {s.n_nodes}), got {d.shape}"
        )
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ScenarioError("field 'network.delay_ms' must hold finite delays >= 0")
    if not s.traces:
        raise ScenarioError("field 'traces' must name at least one trace")
    lengths = set()
    for name, t in s.traces.items():
        t = np.asarray(t)
        if t.ndim != 2 or t.shape[1] != s.n_stations:
            raise ScenarioError(
                f"field 'traces.{name}' must have one column per station ({s.n_stations}), "
                f"got shape {t.shape}"
            )
        if t.shape[0] < 1 or np.any(t < 0):
            raise ScenarioError(f"field 'traces.{name}' must hold user counts >= 0")
        lengths.add(t.shape[0])
    if len(lengths) != 1:
        raise ScenarioError(f"field 'traces' must all have the same number of slots, got {lengths}")


def _check_fit(s: Scenario) -> None:
    """One replica of every deployment fits on its home node."""
    # Fitting: one replica of every deployment must fit on its home node(s).
    home = s.home_nodes
    for n_idx, node in enumerate(s.nodes):
        k = int(np.sum(home == n_idx))
        if k * s.pod.cpu_request > node.cpu + 1e-9 or k * s.pod.ram_request_mb > node.ram_mb + 1e-9:
            raise ScenarioError(
                f"field 'nodes[{n_idx}]' ({node.name}) cannot fit one replica of each of the "
                f"{k} deployments pinned to it"
            )


def ring_delay_matrix(n_stations: int, home: np.ndarray, n_nodes: int, own_ms: float,
                      hop_ms: float) -> np.ndarray:
    """Delay from each station to each node: `own_ms` plus `hop_ms` per hop of ring distance.

    The ring distance between a station and a node is measured between the station and
    the first station whose home is that node.
    """
    first_station = np.full(n_nodes, -1)
    for s_idx in range(n_stations - 1, -1, -1):
        first_station[home[s_idx]] = s_idx
    d = np.zeros((n_stations, n_nodes))
    for s_idx in range(n_stations):
        for n_idx in range(n_nodes):
            other = first_station[n_idx] if first_station[n_idx] >= 0 else n_idx % n_stations
            hops = abs(s_idx - other)
            hops = min(hops, n_stations - hops)
            d[s_idx, n_idx] = own_ms + hop_ms * hops
    return d


def load_trace_csv(path: Path, station_names: list[str]) -> np.ndarray:
    """Read a `t_s,bs1,...` CSV of users per slot into an int array (slots, stations).

    Raises:
        ScenarioError: when the file is missing or its columns do not match the stations.
    """
    if not path.is_file():
        raise ScenarioError(f"trace file {str(path)!r} does not exist")
    with path.open() as fh:
        header = fh.readline().strip().split(",")
    if header[:1] != ["t_s"] or header[1:] != station_names:
        raise ScenarioError(
            f"trace file {str(path)!r} must have columns t_s,{','.join(station_names)}; "
            f"got {','.join(header)}"
        )
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    return data[:, 1:].copy()
