"""Compiled inner loops of the cluster core (numba, nopython, cached on disk).

These are the request-by-request loops of the model described in
:mod:`lwmecps_rllib.cluster.core`; they only read and write the arrays they are
given. Randomness: each call takes one 64-bit key drawn from the caller's
`numpy.random.Generator` and expands it with SplitMix64, so every random number is a
deterministic function of the env's seeded generator.
"""

from __future__ import annotations

import numba
import numpy as np

from lwmecps_rllib.scenarios.scenario import Scenario

# Layout of the `params` vector.
P_INC_LOW, P_INC_HIGH, P_CPU_LIMIT, P_RAM_LIMIT, P_DECAY, P_THRESHOLD = 0, 1, 2, 3, 4, 5
P_BASE_DELAY, P_SLOPE, P_TIMEOUT, P_SLOT, P_LOAD_SCALE = 6, 7, 8, 9, 10
N_PARAMS = 11
# Layout of a measurement row: requests, ok, latency sum, then per node latency sums and
# successful requests, then users per station.
O_REQUESTS, O_OK, O_LATENCY, O_NODES = 0, 1, 2, 3

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_STREAM = np.uint64(0x632BE59BD9B4E019)


def pack_params(s: Scenario) -> np.ndarray:
    """The scenario's model constants as the kernels' `params` vector."""
    sm = s.server
    p = np.zeros(N_PARAMS)
    p[P_INC_LOW] = sm.increment_low
    p[P_INC_HIGH] = sm.increment_high
    p[P_CPU_LIMIT] = sm.cpu_limit
    p[P_RAM_LIMIT] = sm.ram_limit
    p[P_DECAY] = sm.decay_per_s
    p[P_THRESHOLD] = sm.load_threshold
    p[P_BASE_DELAY] = sm.base_delay_s
    p[P_SLOPE] = sm.delay_slope_s
    p[P_TIMEOUT] = s.timeout_s
    p[P_SLOT] = s.slot_s
    p[P_LOAD_SCALE] = s.load_scale
    return p


@numba.njit(cache=True, inline="always")
def _next(state: np.ndarray) -> np.uint64:
    """SplitMix64: advance `state[0]` and return 64 random bits."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _uniform_int(bits: np.uint64, low: int, span: int) -> int:
    """An integer in [low, low + span) from 32 random bits (multiply-shift)."""
    return low + int(((bits & np.uint64(0xFFFFFFFF)) * np.uint64(span)) >> np.uint64(32))


@numba.njit(cache=True)
def _burst(requests: np.ndarray, ready: np.ndarray, node_of: np.ndarray,
           station_dep: np.ndarray, delay_s: np.ndarray, params: np.ndarray,
           rng_state: np.ndarray, pending: np.ndarray, elapsed: np.ndarray, cpu: np.ndarray,
           ram: np.ndarray, rr: np.ndarray, row: np.ndarray, hist: np.ndarray) -> None:
    """One slot's burst in one cluster, added to the measurement `row`.

    Adds the requests sent, the successful ones, their latency sum (ms) and the per-node
    latency sums and counts; and, when `hist` has bins, each successful request's
    latency to the 1-ms bins of `hist` (the last bin holds the rest).
    """
    n_bins = hist.shape[0]
    n_st = requests.shape[0]
    n_n = delay_s.shape[1]
    low = int(params[P_INC_LOW])
    span = int(params[P_INC_HIGH]) - low + 1
    cpu_lim = params[P_CPU_LIMIT]
    ram_lim = params[P_RAM_LIMIT]
    thr = params[P_THRESHOLD]
    base = params[P_BASE_DELAY]
    slope = params[P_SLOPE]
    timeout = params[P_TIMEOUT]
    decay = params[P_DECAY] * timeout
    for o in range(n_st):
        pending[o] = requests[o]
        elapsed[o] = 0.0
    cpu[:, :] = 0.0
    ram[:, :] = 0.0
    rr[:] = 0
    ok = 0
    lat_sum = 0.0
    for o in range(n_st):
        row[O_REQUESTS] += requests[o]
    for r in range(n_st):
        left = 0
        for o in range(n_st):
            left += pending[o]
        if left == 0:
            break
        if r > 0:
            for d in range(cpu.shape[0]):
                for j in range(cpu.shape[1]):
                    cpu[d, j] = max(cpu[d, j] - decay, 0.0)
                    ram[d, j] = max(ram[d, j] - decay, 0.0)
        for o in range(n_st):
            n = pending[o]
            if n == 0:
                continue
            d = station_dep[(o + r) % n_st]
            pods = ready[d]
            node = node_of[d]
            net = delay_s[o, node]
            if pods == 0:
                elapsed[o] += net  # refused at once: one network delay
                continue
            late = 0
            for _ in range(n):
                j = rr[d] % pods
                rr[d] += 1
                bits = _next(rng_state)
                c = min(cpu[d, j] + _uniform_int(bits, low, span), cpu_lim)
                m = min(ram[d, j] + _uniform_int(bits >> np.uint64(32), low, span), ram_lim)
                cpu[d, j] = c
                ram[d, j] = m
                load = 0.5 * (c / cpu_lim + m / ram_lim)
                t_srv = net
                if load > thr:
                    t_srv += base + slope * (load - thr)
                if t_srv > timeout:
                    late += 1
                else:
                    lat = (elapsed[o] + t_srv) * 1000.0
                    if n_bins > 0:
                        hist[min(int(lat), n_bins - 1)] += 1.0
                    ok += 1
                    lat_sum += lat
                    row[O_NODES + node] += lat
                    row[O_NODES + n_n + node] += 1.0
            pending[o] = late
            if late > 0:
                elapsed[o] += timeout
    row[O_OK] += ok
    row[O_LATENCY] += lat_sum


@numba.njit(cache=True, inline="always")
def _stream_start(key: int, b: int, shared_stream: bool) -> np.uint64:
    """SplitMix64 state at which cluster `b` starts drawing."""
    if shared_stream:
        return np.uint64(key)
    return np.uint64(key) + np.uint64(b) * _STREAM


@numba.njit(cache=True)
def advance(slot: np.ndarray, ready_at: np.ndarray, node_of: np.ndarray, move_to: np.ndarray,
            move_at: np.ndarray, trace: np.ndarray, station_dep: np.ndarray,
            delay_s: np.ndarray, params: np.ndarray, n_slots: np.ndarray, key: int,
            shared_stream: bool, out: np.ndarray, hist: np.ndarray) -> None:
    """Simulate `n_slots[b]` slots of each of B clusters into measurement rows `out`.

    Updates `slot`, `node_of` and `move_at` in place. Cluster `b` draws from the
    stream `key + b * _STREAM`, or from `key` itself when `shared_stream`.
    """
    n_b = slot.shape[0]
    n_d, n_p = ready_at.shape[1], ready_at.shape[2]
    n_st = trace.shape[1]
    n_t = trace.shape[0]
    slot_s = params[P_SLOT]
    scale = params[P_LOAD_SCALE]
    whole = scale == np.floor(scale)
    rng_state = np.empty(1, np.uint64)
    users_at = O_NODES + 2 * delay_s.shape[1]
    ready = np.zeros(n_d, np.int64)
    requests = np.zeros(n_st, np.int64)
    pending = np.zeros(n_st, np.int64)
    elapsed = np.zeros(n_st)
    cpu = np.zeros((n_d, n_p))
    ram = np.zeros((n_d, n_p))
    rr = np.zeros(n_d, np.int64)
    for b in range(n_b):
        rng_state[0] = _stream_start(key, b, shared_stream)
        for _ in range(n_slots[b]):
            t = slot[b] * slot_s
            for d in range(n_d):
                if move_at[b, d] <= t:
                    node_of[b, d] = move_to[b, d]
                    move_at[b, d] = np.inf
                k = 0
                for j in range(n_p):
                    if ready_at[b, d, j] <= t:
                        k += 1
                ready[d] = k
            row = slot[b] % n_t
            for s in range(n_st):
                u = trace[row, s]
                out[b, users_at + s] = u
                if whole:
                    q = int(u * scale)
                else:
                    x = u * scale
                    q = int(np.floor(x))
                    frac = x - q
                    if (_next(rng_state) >> np.uint64(11)) * (1.0 / 9007199254740992.0) < frac:
                        q += 1
                requests[s] = q
            _burst(requests, ready, node_of[b], station_dep, delay_s, params, rng_state,
                   pending, elapsed, cpu, ram, rr, out[b], hist[b])
            slot[b] += 1


@numba.njit(cache=True)
def simulate_given(ready: np.ndarray, node_of: np.ndarray, requests: np.ndarray,
                   station_dep: np.ndarray, delay_s: np.ndarray, params: np.ndarray,
                   key: int, shared_stream: bool, out: np.ndarray, hist: np.ndarray) -> None:
    """One burst of given request counts in B clusters with given ready pods."""
    n_b, n_st = requests.shape
    n_d = ready.shape[1]
    n_p = max(1, ready.max())
    rng_state = np.empty(1, np.uint64)
    pending = np.zeros(n_st, np.int64)
    elapsed = np.zeros(n_st)
    cpu = np.zeros((n_d, n_p))
    ram = np.zeros((n_d, n_p))
    rr = np.zeros(n_d, np.int64)
    for b in range(n_b):
        rng_state[0] = _stream_start(key, b, shared_stream)
        _burst(requests[b], ready[b], node_of[b], station_dep, delay_s, params, rng_state,
               pending, elapsed, cpu, ram, rr, out[b], hist[b])


# Columns of the `metrics` array written by `step_metrics`.
M_REWARD, M_LATENCY, M_LATENCY_TERM, M_PODS, M_USAGE, M_IMBALANCE, M_REQUESTS, M_FAILED = range(8)
N_METRICS = 8


@numba.njit(cache=True)
def fits(replicas: np.ndarray, nodes: np.ndarray, pod_request: np.ndarray,
         node_cap: np.ndarray) -> np.ndarray:
    """(B,) whether the pods' CPU and memory requests fit every node."""
    n_b, n_d = replicas.shape
    n_n = node_cap.shape[0]
    out = np.ones(n_b, np.bool_)
    pods = np.zeros(n_n)
    for b in range(n_b):
        pods[:] = 0.0
        for d in range(n_d):
            pods[nodes[b, d]] += replicas[b, d]
        for n in range(n_n):
            if (pods[n] * pod_request[0] > node_cap[n, 0] + 1e-9
                    or pods[n] * pod_request[1] > node_cap[n, 1] + 1e-9):
                out[b] = False
                break
    return out


@numba.njit(cache=True)
def scale(ready_at: np.ndarray, old: np.ndarray, new: np.ndarray, slot: np.ndarray,
          slot_s: float, startup: float) -> None:
    """Scale pods in place: keep the oldest `min(old, new)`, start the rest (after startup)."""
    n_b, n_d, n_p = ready_at.shape
    for b in range(n_b):
        for d in range(n_d):
            for j in range(n_p):
                if j >= new[b, d]:
                    ready_at[b, d, j] = np.inf
                elif j >= old[b, d]:
                    ready_at[b, d, j] = slot[b] * slot_s + startup


@numba.njit(cache=True)
def step_metrics(replicas: np.ndarray, nodes: np.ndarray, meas: np.ndarray,
                 node_cap: np.ndarray, pod_usage: np.ndarray,
                 pod_cpu_request: float, failed_latency_ms: float, weights: np.ndarray,
                 out: np.ndarray) -> None:
    """Reward terms and metrics of B clusters into `out` (B, N_METRICS).

    `weights` = (latency_weight, replica_cost, imbalance_weight). Imbalance is the sum
    over CPU, RAM, TX, RX of the variance across nodes of utilisation in percent.
    """
    n_b, n_d = replicas.shape
    n_n = node_cap.shape[0]
    total_cpu = 0.0
    for n in range(n_n):
        total_cpu += node_cap[n, 0]
    pods = np.zeros(n_n)
    for b in range(n_b):
        pods[:] = 0.0
        count = 0
        for d in range(n_d):
            pods[nodes[b, d]] += replicas[b, d]
            count += replicas[b, d]
        imb = 0.0
        for k in range(4):
            mean = 0.0
            for n in range(n_n):
                mean += 100.0 * pods[n] * pod_usage[k] / node_cap[n, k]
            mean /= n_n
            var = 0.0
            for n in range(n_n):
                x = 100.0 * pods[n] * pod_usage[k] / node_cap[n, k] - mean
                var += x * x
            imb += var / n_n
        requests = meas[b, O_REQUESTS]
        ok = meas[b, O_OK]
        lat_sum = meas[b, O_LATENCY]
        failed = requests - ok
        term = 0.0
        if requests > 0:
            term = (lat_sum + failed * failed_latency_ms) / requests
        out[b, M_LATENCY] = lat_sum / ok if ok > 0 else 0.0
        out[b, M_LATENCY_TERM] = term
        out[b, M_PODS] = count
        out[b, M_USAGE] = count * pod_cpu_request / total_cpu
        out[b, M_IMBALANCE] = imb
        out[b, M_REQUESTS] = requests
        out[b, M_FAILED] = failed
        out[b, M_REWARD] = -weights[0] * term - weights[1] * count - weights[2] * imb


@numba.njit(cache=True)
def env3_obs(replicas: np.ndarray, ready_at: np.ndarray, slot: np.ndarray, meas: np.ndarray,
             cap_norm: np.ndarray, max_pods: int, failed_latency_ms: float, max_users: float,
             slot_s: float, phase: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """LWMECPSEnv3's flat observation of B clusters into `out` (B, size).

    `offsets` are the starts of the layout's blocks `nodes` ((N, 5): capacity CPU, RAM,
    TX, RX over the largest, latency over `failed_latency_ms`), `replicas`, `ready`,
    `users` and `time_of_day` (see `LWMECPSEnv3.box_layout`); `phase` (B,) the time of
    day in radians.
    """
    n_b, n_d, n_p = ready_at.shape
    n_n = cap_norm.shape[0]
    users_at = O_NODES + 2 * n_n
    n_st = meas.shape[1] - users_at
    o_nodes, o_replicas, o_ready, o_users, o_time = (offsets[0], offsets[1], offsets[2],
                                                     offsets[3], offsets[4])
    for b in range(n_b):
        i = o_nodes
        for n in range(n_n):
            for k in range(4):
                out[b, i] = cap_norm[n, k]
                i += 1
            served = meas[b, O_NODES + n_n + n]
            lat = meas[b, O_NODES + n] / served if served > 0 else 0.0
            out[b, i] = min(lat / failed_latency_ms, 1.0)
            i += 1
        t = slot[b] * slot_s
        for d in range(n_d):
            out[b, o_replicas + d] = min(replicas[b, d] / max_pods, 1.0)
            k = 0
            for j in range(n_p):
                if ready_at[b, d, j] <= t:
                    k += 1
            out[b, o_ready + d] = min(k / max_pods, 1.0)
        for s in range(n_st):
            out[b, o_users + s] = min(meas[b, users_at + s] / max_users, 1.0)
        out[b, o_time] = np.sin(phase[b])
        out[b, o_time + 1] = np.cos(phase[b])


@numba.njit(cache=True)
def in_range(a: np.ndarray, high: int) -> bool:
    """Whether every element of `a` lies in [0, high]."""
    for x in a.flat:  # noqa: SIM110 (numba compiles loops, not generators)
        if x < 0 or x > high:
            return False
    return True


@numba.njit(cache=True)
def env3_sim_step(new: np.ndarray, home: np.ndarray, old: np.ndarray, slot: np.ndarray,
                  ready_at: np.ndarray, node_of: np.ndarray, move_to: np.ndarray,
                  move_at: np.ndarray, trace: np.ndarray, station_dep: np.ndarray,
                  delay_s: np.ndarray, params: np.ndarray, n_slots: np.ndarray, key: int,
                  hist: np.ndarray, pod_request: np.ndarray, node_cap: np.ndarray,
                  startup: float, pod_usage: np.ndarray, failed_latency_ms: float,
                  weights: np.ndarray, cap_norm: np.ndarray, max_pods: int,
                  max_users: float, day_slots: int, offsets: np.ndarray, meas: np.ndarray,
                  metrics: np.ndarray, obs: np.ndarray) -> bool:
    """One simulated step of one LWMECPSEnv3 cluster in one call: the same kernels, in
    the order the env's step calls them (fit check, scale, advance, reward terms, box
    observation), without returning to Python between them.

    `slot` and `ready_at` are the step's own copies (updated in place); `meas` must be
    zeros. Returns whether the action fitted (and was applied).
    """
    ok = fits(new, home, pod_request, node_cap)[0]
    slot_s = params[P_SLOT]
    reps = old
    if ok:
        scale(ready_at, old, new, slot, slot_s, startup)
        reps = new
    advance(slot, ready_at, node_of, move_to, move_at, trace, station_dep, delay_s, params,
            n_slots, key, False, meas, hist)
    step_metrics(reps, home, meas, node_cap, pod_usage, pod_request[0], failed_latency_ms,
                 weights, metrics)
    phase = np.empty(slot.shape[0])
    for b in range(slot.shape[0]):
        phase[b] = 2.0 * np.pi * (slot[b] % day_slots) / day_slots
    env3_obs(reps, ready_at, slot, meas, cap_norm, max_pods, failed_latency_ms, max_users,
             slot_s, phase, offsets, obs)
    return ok
