"""The cluster core: pure-numpy state transitions of B independent clusters at once.

Everything here is a function of explicit arrays (state in, state out) and of a
`numpy.random.Generator` passed in; there is no global state and no I/O. The single
envs call it with B = 1, the batched env with B = num_envs, the oracle with one row
per candidate action, and the Kubernetes backend uses only the parts that do not
simulate (fitting, reward, observations).

The request model (one workload slot):

1. At the slot start every user of station `s` sends `load_scale` GET requests at
   once (a burst) to the Service of the deployment that serves `s`.
2. A Service spreads its burst evenly (round robin) over its *ready* pods.
3. Each pod keeps two counters `cpu` and `ram`, zero at the slot start. A request adds
   an independent uniform integer in `[increment_low, increment_high]` to each, capped
   at `cpu_limit` / `ram_limit`. With `load = (cpu/cpu_limit + ram/ram_limit)/2` after
   the increments, a request with `load > load_threshold` is delayed by
   `base_delay_s + delay_slope_s*(load - load_threshold)`.
4. A request's time at a server is the network delay station -> node plus that delay.
   Above `timeout_s` the client gives up, spends `timeout_s`, and fails over to the
   next station in ring order; a station with no ready pod refuses at once, which
   costs one network delay. Fail-over attempts load the pods they reach. Counters
   decay by `decay_per_s * timeout_s` between fail-over rounds. A request refused or
   timed out by every station fails.
5. The latency of a successful request is the time spent on earlier attempts plus its
   time at the server that answered it.

Round `r` of fail-over sends every pending request of origin `o` to station
`(o + r) mod S`, so all pending requests of one origin share their elapsed time.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from lwmecps_rllib.cluster import kernels
from lwmecps_rllib.cluster.measurement import Measurement
from lwmecps_rllib.scenarios.scenario import Scenario

__all__ = ["ClusterSpec", "ClusterState", "Measurement"]


@dataclass(frozen=True, eq=False)
class ClusterSpec:
    """Static arrays compiled from a :class:`Scenario` for one kind of env."""

    scenario: Scenario
    n_deployments: int
    station_deployment: np.ndarray
    """(S,) index of the deployment whose Service serves each station."""
    pinned: bool
    """True when deployments stay on their home node (LWMECPSEnv3)."""
    home_node: np.ndarray
    """(D,) initial (or pinned) node of each deployment."""
    max_pods: int
    """Largest number of pods of one deployment."""
    delay_s: np.ndarray
    """(S, N) network delay in seconds."""
    node_cap: np.ndarray
    """(N, 4) node CPU, RAM, TX, RX capacity."""
    pod_usage: np.ndarray
    """(4,) observed CPU, RAM, TX, RX use of one pod."""
    k_safe: int
    """Requests a fresh pod can take in one burst before any can be delayed."""
    params: np.ndarray
    """Model constants for the compiled kernels (see `kernels.P_*`)."""
    pod_request: np.ndarray
    """(2,) CPU and memory request of one pod."""
    weights: np.ndarray
    """(3,) reward weights: latency, replica cost, imbalance."""
    cap_norm: np.ndarray
    """(N, 4) node capacity over the scenario's largest (observations)."""
    failed_latency_ms: float
    """Latency charged to a failed request."""
    n_slots: int
    """Slots in a trace."""
    max_users: float
    """Most users of a station in any trace."""

    n_nodes: int
    """Nodes."""
    n_stations: int
    """Stations."""

    @classmethod
    def build(cls, scenario: Scenario, *, station_deployment: np.ndarray | None = None,
              pinned: bool = True, max_pods: int | None = None) -> ClusterSpec:
        """Compile a scenario.

        Args:
            scenario: The scenario.
            station_deployment: Deployment serving each station (default: its own).
            pinned: Whether deployments stay on their home node.
            max_pods: Pods per deployment bound (default: `scenario.max_replicas`).
        """
        s = scenario
        sd = (np.arange(s.n_stations) if station_deployment is None
              else np.asarray(station_deployment, dtype=np.int64))
        d = int(sd.max()) + 1
        home_station = np.array([int(np.flatnonzero(sd == k)[0]) for k in range(d)])
        home = s.home_nodes[home_station]
        sm = s.server
        k = 0
        while True:
            cpu = min((k + 1) * sm.increment_high, sm.cpu_limit)
            ram = min((k + 1) * sm.increment_high, sm.ram_limit)
            if (cpu / sm.cpu_limit + ram / sm.ram_limit) / 2 > sm.load_threshold or k > 10**6:
                break
            k += 1
        node_cap = np.array([[n.cpu, n.ram_mb, n.tx_mbps, n.rx_mbps] for n in s.nodes])
        usage = np.array([s.pod.cpu_usage, s.pod.ram_usage_mb, s.pod.tx_usage_mbps,
                          s.pod.rx_usage_mbps])
        return cls(scenario=s, n_deployments=d, station_deployment=sd, pinned=pinned,
                   params=kernels.pack_params(s),
                   pod_request=np.array([s.pod.cpu_request, s.pod.ram_request_mb]),
                   weights=np.array([s.latency_weight, s.replica_cost, s.imbalance_weight]),
                   cap_norm=node_cap / node_cap.max(axis=0), failed_latency_ms=s.failed_latency_ms,
                   n_slots=s.n_slots, max_users=s.max_users, n_nodes=s.n_nodes,
                   n_stations=s.n_stations,
                   home_node=home, max_pods=max_pods or s.max_replicas,
                   delay_s=np.asarray(s.delay_ms, dtype=np.float64) / 1000.0,
                   node_cap=node_cap, pod_usage=usage, k_safe=k)


@dataclass
class ClusterState:
    """Dynamic state of B clusters (arrays are owned; functions return new states)."""

    slot: np.ndarray
    """(B,) index of the next slot to be measured (not wrapped; the trace wraps)."""
    replicas: np.ndarray
    """(B, D) desired replicas of each deployment."""
    ready_at: np.ndarray
    """(B, D, P) time (s) each pod is ready, ascending; inf where no pod."""
    node_of: np.ndarray
    """(B, D) node currently serving each deployment."""
    move_to: np.ndarray
    """(B, D) node a deployment is moving to (rolling update)."""
    move_at: np.ndarray
    """(B, D) time the move completes; inf when not moving."""

    @classmethod
    def from_counts(cls, slot: np.ndarray, replicas: np.ndarray, ready: np.ndarray,
                    node_of: np.ndarray, max_pods: int) -> ClusterState:
        """Clusters seen from outside: desired and ready replicas, nodes, no move under way.

        What a real cluster (or a request describing one) reports, without pod start
        times: `ready[b, d]` pods (at most `max_pods`) have been ready since ever, the
        others are not.

        Args:
            slot: (B,) next slot.
            replicas: (B, D) desired replicas.
            ready: (B, D) ready replicas.
            node_of: (B, D) node of each deployment.
            max_pods: Pod slots per deployment (`ClusterSpec.max_pods`).
        """
        ready = np.minimum(np.asarray(ready, np.int64), max_pods)
        node_of = np.asarray(node_of, np.int64)
        ready_at = np.where(np.arange(max_pods) < ready[..., None], -np.inf, np.inf)
        return cls(np.asarray(slot, np.int64).copy(), np.asarray(replicas, np.int64).copy(),
                   ready_at, node_of.copy(), node_of.copy(), np.full(node_of.shape, np.inf))


# ------------------------------------------------------------------ state changes
def initial_state(spec: ClusterSpec, start_slot: np.ndarray,
                  replicas: int | np.ndarray = 1) -> ClusterState:
    """Clusters with `replicas` (a count, or (B, D) counts) ready pods per deployment at home."""
    b, d = len(start_slot), spec.n_deployments
    state = ClusterState(np.empty(b, np.int64), np.empty((b, d), np.int64),
                         np.empty((b, d, spec.max_pods)), np.empty((b, d), spec.home_node.dtype),
                         np.empty((b, d), spec.home_node.dtype), np.empty((b, d)))
    put_initial(spec, state, np.arange(b), start_slot, replicas)
    return state


def put_initial(spec: ClusterSpec, state: ClusterState, rows: np.ndarray,
                start_slot: np.ndarray, replicas: int | np.ndarray = 1) -> None:
    """Make rows `rows` of `state` fresh clusters, in place (see :func:`initial_state`).

    The batched env resets the clusters whose episode ended this way, without building
    a second state.
    """
    reps = np.asarray(replicas)  # a count, or (len(rows), D): assignment broadcasts
    state.slot[rows] = start_slot
    state.replicas[rows] = reps
    state.ready_at[rows] = np.where(np.arange(spec.max_pods) < reps[..., None], -np.inf, np.inf)
    state.node_of[rows] = spec.home_node
    state.move_to[rows] = spec.home_node
    state.move_at[rows] = np.inf


def initial_replicas(spec: ClusterSpec, trace: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(B, D) replicas at reset for clusters starting at `slots` (the scenario's rule)."""
    rule = spec.scenario.initial_replicas
    if rule != "load":
        return np.full((len(slots), spec.n_deployments), int(rule), dtype=np.int64)
    users = trace[np.asarray(slots, dtype=np.int64) % trace.shape[0]] * spec.scenario.load_scale
    per_dep = np.zeros((len(slots), spec.n_deployments))
    np.add.at(per_dep.T, spec.station_deployment, users.T)
    want = np.ceil(per_dep / max(1, spec.k_safe))
    return np.clip(want, 1, spec.max_pods).astype(np.int64)


def now_s(spec: ClusterSpec, state: ClusterState) -> np.ndarray:
    """(B,) current time in seconds (the start of the next slot)."""
    return state.slot * spec.scenario.slot_s


def fits(spec: ClusterSpec, replicas: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """(B,) whether the pods' CPU and memory requests fit every node.

    Args:
        spec: The cluster.
        replicas: (B, D) replicas per deployment.
        nodes: (B, D) node of each deployment.
    """
    return kernels.fits(replicas, nodes, spec.pod_request, spec.node_cap)


def node_pods(spec: ClusterSpec) -> np.ndarray:
    """(N,) pods each node holds under the pods' CPU and memory requests."""
    return np.floor(np.minimum(spec.node_cap[:, 0] / spec.pod_request[0],
                               spec.node_cap[:, 1] / spec.pod_request[1]) + 1e-9)


def placement_allowed(spec: ClusterSpec) -> np.ndarray:
    """(D, N) nodes each one-pod deployment may go to, such that ANY choice fits.

    Node `n` holding `C_n` pods is allowed to at most `C_n` deployments: first to those
    at home there (a scenario guarantees they fit), then to the others by their first
    station's delay to it. So however the deployments pick among their allowed nodes, no
    node gets more pods than it holds; every deployment keeps at least its home node.
    """
    d_all, n_all = spec.n_deployments, spec.n_nodes
    allowed = np.zeros((d_all, n_all), bool)
    allowed[np.arange(d_all), spec.home_node] = True
    room = node_pods(spec) - allowed.sum(0)
    first_station = np.array([int(np.flatnonzero(spec.station_deployment == d)[0])
                              for d in range(d_all)])
    for n in range(n_all):
        others = [d for d in np.argsort(spec.delay_s[first_station, n], kind="stable")
                  if not allowed[d, n]]
        for d in others[:max(int(room[n]), 0)]:
            allowed[d, n] = True
    return allowed


def replica_bounds(spec: ClusterSpec) -> np.ndarray:
    """(D,) most replicas of each pinned deployment such that ANY combination fits.

    The factorisation of the nodes' CPU and memory among the deployments pinned to them:
    node `n` holds `C_n = floor(min(cpu / cpu_request, ram / ram_request))` pods, and each
    of its `k_n` deployments may run up to `C_n // k_n` of them (and at most `max_pods`).
    Every joint action within these bounds fits every node, so a policy that keeps each
    deployment within its bound never asks for more than a node holds.
    """
    per_node = node_pods(spec)
    sharing = np.bincount(spec.home_node, minlength=spec.n_nodes)
    share = per_node[spec.home_node] // np.maximum(sharing[spec.home_node], 1)
    return np.minimum(share, spec.max_pods).astype(np.int64)


def pods_per_node(spec: ClusterSpec, replicas: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """(B, N) pods on each node."""
    b = replicas.shape[0]
    n = spec.n_nodes
    flat = (np.arange(b)[:, None] * n + nodes).ravel()
    return np.bincount(flat, weights=replicas.ravel(), minlength=b * n).reshape(b, n)


def apply_replicas(spec: ClusterSpec, state: ClusterState, replicas: np.ndarray) -> ClusterState:
    """Scale deployments: keep the oldest pods, start new ones (ready after start-up).

    Args:
        spec: The cluster.
        state: Current state (not modified).
        replicas: (B, D) desired replicas, already clipped to `[0, max_pods]`.
    """
    ready_at = state.ready_at.copy()
    kernels.scale(ready_at, state.replicas, replicas, state.slot, spec.scenario.slot_s,
                  spec.scenario.pod_startup_s)
    return ClusterState(state.slot, replicas.astype(np.int64), ready_at, state.node_of,
                        state.move_to, state.move_at)


def apply_placement(spec: ClusterSpec, state: ClusterState, nodes: np.ndarray) -> ClusterState:
    """Move deployments to nodes by a rolling update (old pods serve until the new are ready).

    Args:
        spec: The cluster.
        state: Current state (not modified).
        nodes: (B, D) target node of each deployment.
    """
    t = now_s(spec, state)[:, None]
    target_now = current_nodes(spec, state)
    changed = nodes != target_now
    startup = spec.scenario.pod_startup_s
    if startup <= 0:
        node_of = np.where(changed, nodes, state.node_of)
        node_of = np.where(np.isfinite(state.move_at) & ~changed, state.move_to, node_of)
        return dataclasses.replace(state, node_of=node_of, move_to=node_of.copy(),
                                   move_at=np.full_like(state.move_at, np.inf))
    back_home = changed & (nodes == state.node_of)
    move_to = np.where(changed, nodes, state.move_to)
    move_at = np.where(changed, t + startup, state.move_at)
    move_at = np.where(back_home, np.inf, move_at)
    return dataclasses.replace(state, move_to=move_to, move_at=move_at)


def current_nodes(spec: ClusterSpec, state: ClusterState) -> np.ndarray:
    """(B, D) node of each deployment, or the node it is moving to."""
    if spec.pinned:
        return state.node_of
    return np.where(np.isfinite(state.move_at), state.move_to, state.node_of)


def ready_counts(state: ClusterState, t: np.ndarray) -> np.ndarray:
    """(B, D) pods ready at times `t` (B,)."""
    return np.sum(state.ready_at <= t[:, None, None], axis=2)


def advance(spec: ClusterSpec, state: ClusterState, trace: np.ndarray, rng: np.random.Generator,
            n_slots: int | np.ndarray | None = None,
            shared_stream: bool = False,
            latency_hist: np.ndarray | None = None) -> tuple[ClusterState, Measurement]:
    """Simulate the next `n_slots` slots (default: one step's worth) of B clusters.

    Args:
        spec: The cluster.
        state: State before (not modified).
        trace: (T, S) users per slot; slot indices wrap around the day.
        rng: Source of all randomness (one 64-bit key is drawn per call).
        n_slots: Slots to simulate: one count for every cluster, or (B,) counts (the
            batched env advances fresh clusters by one slot and the others by a step).
        shared_stream: Give every cluster the same random numbers (common random numbers,
            for comparing candidate actions); by default each cluster has its own stream.
        latency_hist: (B, K) counts, added to in place: each successful request's latency
            in 1-ms bins (the last bin holds the rest). None: not recorded.

    Returns:
        The state after, and the measurement summed over the slots.
    """
    n_slots = spec.scenario.slots_per_step if n_slots is None else n_slots
    per_cluster = (n_slots if isinstance(n_slots, np.ndarray)
                   else slot_counts(len(state.slot), int(n_slots)))
    moving = not spec.pinned  # only placement envs have moves to commit
    new = ClusterState(state.slot.copy(), state.replicas, state.ready_at,
                       state.node_of.copy() if moving else state.node_of, state.move_to,
                       state.move_at.copy() if moving else state.move_at)
    m = Measurement.zeros(len(state.slot), spec.n_nodes, spec.n_stations)
    kernels.advance(new.slot, new.ready_at, new.node_of, new.move_to, new.move_at, trace,
                    spec.station_deployment, spec.delay_s, spec.params, per_cluster,
                    rng.bit_generator.random_raw() >> 1, shared_stream, m.data,
                    _hist(latency_hist, len(state.slot)))
    return new, m


def simulate_slot(spec: ClusterSpec, ready: np.ndarray, node_of: np.ndarray,
                  requests: np.ndarray, rng: np.random.Generator,
                  shared_stream: bool = False) -> Measurement:
    """One burst of given requests in B clusters with given ready pods (no state change).

    Args:
        spec: The cluster.
        ready: (B, D) ready pods per deployment.
        node_of: (B, D) node of each deployment.
        requests: (B, S) requests per station.
        rng: Source of the per-request counter increments.
        shared_stream: Give every cluster the same random numbers.
    """
    b = requests.shape[0]
    m = Measurement.zeros(b, spec.n_nodes, spec.n_stations)
    kernels.simulate_given(np.ascontiguousarray(ready, dtype=np.int64),
                           np.ascontiguousarray(node_of, dtype=np.int64),
                           np.ascontiguousarray(requests, dtype=np.int64),
                           spec.station_deployment, spec.delay_s, spec.params,
                           rng.bit_generator.random_raw() >> 1, shared_stream, m.data,
                           _hist(None, b))
    return m


@functools.lru_cache(maxsize=64)
def slot_counts(b: int, n: int) -> np.ndarray:
    """(B,) slots to simulate per cluster, all `n` (read-only; shared between calls)."""
    out = np.full(b, n, np.int64)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=64)
def no_latency_hist(b: int) -> np.ndarray:
    """The (B, 0) histogram that records nothing (shared between calls)."""
    return np.empty((b, 0))


def _hist(hist: np.ndarray | None, b: int) -> np.ndarray:
    """The kernels' histogram argument: `hist`, or (B, 0) for none."""
    if hist is None:
        return no_latency_hist(b)
    if hist.shape[0] != b or hist.dtype != np.float64 or not hist.flags.c_contiguous:
        raise ValueError(f"latency_hist must be a C-contiguous float64 (B={b}, K) array")
    return hist


# ------------------------------------------------------------------ reward terms
def step_metrics(spec: ClusterSpec, m: Measurement, replicas: np.ndarray,
                 nodes: np.ndarray) -> np.ndarray:
    """(B, N_METRICS) reward and metrics of B clusters (columns `kernels.M_*`).

    `M_REWARD` is LWMECPSEnv3's reward `-latency_weight * latency - replica_cost *
    total_replicas - imbalance_weight * imbalance`, where latency is the mean over all
    requests with a failed one counting `failed_latency_ms`, and imbalance sums over CPU,
    RAM, TX and RX the variance across nodes of utilisation in percent of capacity (raw
    MB would make RAM dominate the reward by three orders of magnitude).
    """
    out = np.empty((len(m.requests), kernels.N_METRICS))
    kernels.step_metrics(replicas, nodes, m.data, spec.node_cap,
                         spec.pod_usage, float(spec.pod_request[0]), spec.failed_latency_ms,
                         spec.weights, out)
    return out
