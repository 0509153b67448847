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
from dataclasses import dataclass

import numpy as np

from lwmecps_rllib.scenarios.scenario import Scenario


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
    injective: bool
    """True when every station has its own deployment."""

    @property
    def n_nodes(self) -> int:
        """Nodes."""
        return self.scenario.n_nodes

    @property
    def n_stations(self) -> int:
        """Stations."""
        return self.scenario.n_stations

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
                   home_node=home, max_pods=max_pods or s.max_replicas,
                   delay_s=np.asarray(s.delay_ms, dtype=np.float64) / 1000.0,
                   node_cap=node_cap, pod_usage=usage, k_safe=k,
                   injective=len(np.unique(sd)) == len(sd))


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

    def select(self, idx: np.ndarray) -> ClusterState:
        """The rows `idx` (copies)."""
        return ClusterState(**{f.name: getattr(self, f.name)[idx].copy()
                               for f in dataclasses.fields(self)})

    def assign(self, idx: np.ndarray, other: ClusterState) -> None:
        """Overwrite rows `idx` with `other` (in place; used by the batched env)."""
        for f in dataclasses.fields(self):
            getattr(self, f.name)[idx] = getattr(other, f.name)


@dataclass
class Measurement:
    """What a step measured in each of B clusters, summed over its slots."""

    requests: np.ndarray
    """(B,) requests sent."""
    ok: np.ndarray
    """(B,) successful requests."""
    latency_sum_ms: np.ndarray
    """(B,) summed latency of successful requests."""
    node_latency_sum_ms: np.ndarray
    """(B, N) summed latency of successful requests answered by each node."""
    node_ok: np.ndarray
    """(B, N) successful requests answered by each node."""
    users: np.ndarray
    """(B, S) users of each station in the last measured slot."""

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

    @classmethod
    def zeros(cls, b: int, n_nodes: int, n_stations: int) -> Measurement:
        """An empty measurement."""
        return cls(np.zeros(b, np.int64), np.zeros(b, np.int64), np.zeros(b),
                   np.zeros((b, n_nodes)), np.zeros((b, n_nodes), np.int64),
                   np.zeros((b, n_stations), np.int64))

    def add(self, other: Measurement) -> None:
        """Accumulate another slot (users become the later slot's)."""
        self.requests += other.requests
        self.ok += other.ok
        self.latency_sum_ms += other.latency_sum_ms
        self.node_latency_sum_ms += other.node_latency_sum_ms
        self.node_ok += other.node_ok
        self.users = other.users


# ------------------------------------------------------------------ state changes
def initial_state(spec: ClusterSpec, start_slot: np.ndarray, replicas: int = 1) -> ClusterState:
    """Clusters with `replicas` ready pods per deployment on their home nodes."""
    b = len(start_slot)
    d, p = spec.n_deployments, spec.max_pods
    ready_at = np.full((b, d, p), np.inf)
    ready_at[:, :, :replicas] = -np.inf
    home = np.broadcast_to(spec.home_node, (b, d)).copy()
    return ClusterState(slot=np.asarray(start_slot, dtype=np.int64).copy(),
                        replicas=np.full((b, d), replicas, dtype=np.int64), ready_at=ready_at,
                        node_of=home, move_to=home.copy(), move_at=np.full((b, d), np.inf))


def now_s(spec: ClusterSpec, state: ClusterState) -> np.ndarray:
    """(B,) current time in seconds (the start of the next slot)."""
    return state.slot * spec.scenario.slot_s


def fits(spec: ClusterSpec, replicas: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """(B,) whether the pods' requests fit every node.

    Args:
        spec: The cluster.
        replicas: (B, D) replicas per deployment.
        nodes: (B, D) node of each deployment.
    """
    pods = pods_per_node(spec, replicas, nodes)
    pod = spec.scenario.pod
    cpu_ok = pods * pod.cpu_request <= spec.node_cap[:, 0] + 1e-9
    ram_ok = pods * pod.ram_request_mb <= spec.node_cap[:, 1] + 1e-9
    return np.all(cpu_ok & ram_ok, axis=1)


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
    t = now_s(spec, state)[:, None, None]
    old = state.replicas[:, :, None]
    new = replicas[:, :, None]
    j = np.arange(spec.max_pods)[None, None, :]
    keep = j < np.minimum(old, new)
    add = (j >= old) & (j < new)
    ready_at = np.where(keep, state.ready_at,
                        np.where(add, t + spec.scenario.pod_startup_s, np.inf))
    return dataclasses.replace(state, replicas=replicas.astype(np.int64), ready_at=ready_at)


def apply_placement(spec: ClusterSpec, state: ClusterState, nodes: np.ndarray) -> ClusterState:
    """Move deployments to nodes by a rolling update (old pods serve until the new are ready).

    Args:
        spec: The cluster.
        state: Current state (not modified).
        nodes: (B, D) target node of each deployment.
    """
    t = now_s(spec, state)[:, None]
    target_now = np.where(np.isfinite(state.move_at), state.move_to, state.node_of)
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


def _commit_moves(state: ClusterState, t: np.ndarray) -> None:
    done = state.move_at <= t[:, None]
    if done.any():
        state.node_of = np.where(done, state.move_to, state.node_of)
        state.move_at = np.where(done, np.inf, state.move_at)


def ready_counts(state: ClusterState, t: np.ndarray) -> np.ndarray:
    """(B, D) pods ready at times `t` (B,)."""
    return np.sum(state.ready_at <= t[:, None, None], axis=2)


def requests_from_users(spec: ClusterSpec, users: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
    """Requests per station: users x load_scale, rounded stochastically when fractional."""
    scale = spec.scenario.load_scale
    if float(scale).is_integer():
        return users * int(scale)
    x = users * scale
    base = np.floor(x)
    return (base + (rng.random(x.shape) < (x - base))).astype(np.int64)


def advance(spec: ClusterSpec, state: ClusterState, trace: np.ndarray, rng: np.random.Generator,
            n_slots: int | None = None) -> tuple[ClusterState, Measurement]:
    """Simulate the next `n_slots` slots (default: one step's worth) of B clusters.

    Args:
        spec: The cluster.
        state: State before (not modified).
        trace: (T, S) users per slot; slot indices wrap around the day.
        rng: Source of all randomness.
        n_slots: Slots to simulate.

    Returns:
        The state after, and the measurement summed over the slots.
    """
    n_slots = spec.scenario.slots_per_step if n_slots is None else n_slots
    state = dataclasses.replace(state, slot=state.slot.copy())
    b = len(state.slot)
    total = Measurement.zeros(b, spec.n_nodes, spec.n_stations)
    for _ in range(n_slots):
        t = now_s(spec, state)
        _commit_moves(state, t)
        users = trace[state.slot % trace.shape[0]]
        reqs = requests_from_users(spec, users, rng)
        m = simulate_slot(spec, ready_counts(state, t), state.node_of, reqs, rng)
        m.users = users.copy()
        total.add(m)
        state.slot = state.slot + 1
    return state, total


# ----------------------------------------------------------------- request model
def simulate_slot(spec: ClusterSpec, ready: np.ndarray, node_of: np.ndarray,
                  requests: np.ndarray, rng: np.random.Generator) -> Measurement:
    """One burst of requests in B clusters (see the module docstring for the model).

    Args:
        spec: The cluster.
        ready: (B, D) ready pods per deployment.
        node_of: (B, D) node of each deployment.
        requests: (B, S) requests per station.
        rng: Source of the per-request counter increments.
    """
    sc = spec.scenario
    sm = sc.server
    b_n, s_n = requests.shape
    d_n, p_n, n_n = spec.n_deployments, spec.max_pods, spec.n_nodes
    out = Measurement.zeros(b_n, n_n, s_n)
    pending = np.asarray(requests, dtype=np.int64).copy()
    out.requests = pending.sum(axis=1)
    elapsed = np.zeros((b_n, s_n))
    origins = np.arange(s_n)
    b_col = np.arange(b_n)[:, None]
    cpu = ram = None  # (B, D, P) counters, created when a burst is simulated request by request
    decay = sm.decay_per_s * sc.timeout_s
    for r in range(s_n):
        if r > 0:
            if not pending.any():
                break
            if cpu is not None:
                cpu = np.maximum(cpu - decay, 0.0)
                ram = np.maximum(ram - decay, 0.0)
        dep = spec.station_deployment[(origins + r) % s_n]
        pods = ready[:, dep]
        node = node_of[:, dep]
        net = spec.delay_s[origins[None, :], node]
        has = pending > 0
        refused = has & (pods == 0)
        active = has & (pods > 0)
        if refused.any():
            elapsed = elapsed + np.where(refused, net, 0.0)
        if not active.any():
            continue
        n_act = np.where(active, pending, 0)
        if spec.injective:
            per_dep = np.zeros((b_n, d_n), np.int64)
            per_dep[:, dep] = n_act
        else:
            per_dep = np.bincount((b_col * d_n + dep[None, :]).ravel(), weights=n_act.ravel(),
                                  minlength=b_n * d_n).reshape(b_n, d_n).astype(np.int64)
        # Fast path: no pod can be throttled, nothing times out and nothing is left over.
        if (cpu is None and not refused.any()
                and np.all(-(-per_dep // np.maximum(ready, 1)) <= spec.k_safe)
                and np.all(np.where(active, net, 0.0) <= sc.timeout_s)):
            lat = (elapsed + net) * 1000.0
            out.ok += n_act.sum(axis=1)
            out.latency_sum_ms += (n_act * lat).sum(axis=1)
            flat = (b_col * n_n + node).ravel()
            out.node_latency_sum_ms += np.bincount(
                flat, weights=(n_act * lat).ravel(), minlength=b_n * n_n).reshape(b_n, n_n)
            out.node_ok += np.bincount(flat, weights=n_act.ravel(),
                                       minlength=b_n * n_n).reshape(b_n, n_n).astype(np.int64)
            pending = pending - n_act
            break
        if cpu is None:
            cpu = np.zeros((b_n, d_n, p_n))
            ram = np.zeros((b_n, d_n, p_n))
        # Rows: (cluster, deployment) pairs that receive requests this round.
        rb, rd = np.nonzero(per_dep)
        m = per_dep[rb, rd]
        p = ready[rb, rd]
        rnode = node_of[rb, rd]
        j = np.arange(p_n)[None, :]
        counts = np.where(j < p[:, None], m[:, None] // p[:, None]
                          + (j < (m % p)[:, None]), 0).ravel()
        total = int(counts.sum())
        seg = np.repeat(np.arange(counts.size), counts)
        seg_start = np.cumsum(counts) - counts
        k = np.arange(total) - seg_start[seg]
        row, pod = seg // p_n, seg % p_n
        # Which origin each request came from: rows list their origins in order.
        g_b, g_o = np.nonzero(active)
        g_key = g_b * d_n + dep[g_o]
        order = np.lexsort((g_o, g_key))
        g_b, g_o = g_b[order], g_o[order]
        g_end = np.cumsum(pending[g_b, g_o])
        row_start = np.cumsum(m) - m
        grp = np.searchsorted(g_end, row_start[row] + k * p[row] + pod, side="right")
        ob, oo = g_b[grp], g_o[grp]
        inc = rng.integers(sm.increment_low, sm.increment_high + 1, size=(2, total))
        cum = np.cumsum(inc, axis=1)
        first = seg_start[seg]
        base = cum[:, first] - inc[:, first]
        cpu_v = np.minimum(cpu[rb[row], rd[row], pod] + (cum[0] - base[0]), sm.cpu_limit)
        ram_v = np.minimum(ram[rb[row], rd[row], pod] + (cum[1] - base[1]), sm.ram_limit)
        load = 0.5 * (cpu_v / sm.cpu_limit + ram_v / sm.ram_limit)
        t_srv = spec.delay_s[oo, rnode[row]] + np.where(
            load > sm.load_threshold,
            sm.base_delay_s + sm.delay_slope_s * (load - sm.load_threshold), 0.0)
        late = t_srv > sc.timeout_s
        ok = ~late
        lat = (elapsed[ob, oo] + t_srv) * 1000.0
        out.ok += np.bincount(ob[ok], minlength=b_n)
        out.latency_sum_ms += np.bincount(ob[ok], weights=lat[ok], minlength=b_n)
        flat = ob[ok] * n_n + rnode[row][ok]
        out.node_latency_sum_ms += np.bincount(flat, weights=lat[ok],
                                               minlength=b_n * n_n).reshape(b_n, n_n)
        out.node_ok += np.bincount(flat, minlength=b_n * n_n).reshape(b_n, n_n)
        timed_out = np.bincount(grp[late], minlength=len(g_b))
        pending = pending - n_act
        pending[g_b, g_o] += timed_out
        elapsed[g_b, g_o] += sc.timeout_s
        nz = counts > 0
        last = (seg_start + counts - 1)[nz]
        seg_ids = np.flatnonzero(nz)
        srow, spod = seg_ids // p_n, seg_ids % p_n
        cpu[rb[srow], rd[srow], spod] = cpu_v[last]
        ram[rb[srow], rd[srow], spod] = ram_v[last]
    return out


# ------------------------------------------------------------------ reward terms
def imbalance(spec: ClusterSpec, replicas: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """(B,) sum over CPU, RAM, TX, RX of the variance across nodes of utilisation in %.

    Used resources of a node are its pods times the observed per-pod usage; they are
    taken in percent of the node's capacity so that the four resources are comparable
    (raw MB would make RAM dominate the reward by three orders of magnitude).
    """
    pods = pods_per_node(spec, replicas, nodes)
    used = pods[:, :, None] * spec.pod_usage[None, None, :]
    util = 100.0 * used / spec.node_cap[None, :, :]
    return util.var(axis=1).sum(axis=1)


def latency_term_ms(spec: ClusterSpec, m: Measurement) -> np.ndarray:
    """(B,) mean latency over all requests, a failed request counting `failed_latency_ms`."""
    total = m.latency_sum_ms + m.failed * spec.scenario.failed_latency_ms
    return np.divide(total, m.requests, out=np.zeros(len(total)), where=m.requests > 0)


def replica_reward(spec: ClusterSpec, m: Measurement, replicas: np.ndarray,
                   nodes: np.ndarray) -> np.ndarray:
    """(B,) LWMECPSEnv3 reward: -w*latency - replica_cost*total_replicas - w*imbalance."""
    sc = spec.scenario
    return (-sc.latency_weight * latency_term_ms(spec, m)
            - sc.replica_cost * replicas.sum(axis=1)
            - sc.imbalance_weight * imbalance(spec, replicas, nodes))
