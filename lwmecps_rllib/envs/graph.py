"""LWMECPSEnv3's size-independent observation (`obs_format="graph"`).

One row of features per station (deployment), in units that mean the same on any
cluster, padded to `max_stations` rows so that RLlib's fixed spaces hold:

- block `stations` (M, F), columns :data:`STATION_COLUMNS`:
  - `load`: requests of the station's users in the last slot, in pods' worth (a pod
    takes `load_threshold * cpu_limit / mean increment` requests a slot before it
    throttles), over `max_replicas`;
  - `replicas`, `ready`: the deployment's asked-for and ready replicas over
    `max_replicas`;
  - `latency`: its node's mean latency in the last step, in units of
    :data:`LATENCY_UNIT_MS`;
  - `node_pods`: pods its node holds (CPU and memory requests) over `max_replicas`;
  - `bound`: the most replicas the mask allows it (:func:`core.replica_bounds`) over
    `max_replicas`;
  - `delay`: the network delay from the station to its node, in the same units;
  - `load_per_ready`: the last slot's requests per ready replica, in pods' worth (above
    1 the pods throttle; what `hpa`'s metric follows);
  - then, with `history_windows`, the mean and max `load` over each window, and with
    `history`, the `load` of each earlier slot (oldest first).
  All are capped at :data:`CAP`.
- block `station_mask` (M,): 1 for a real station, 0 for padding.
- block `allowed` (M, A): 1 where the station's replica count may take the value
  (`A = max_replicas + 1`); padding rows allow 0 only.
- block `time_of_day` (2,): sin and cos of the slot's phase.

The action space is `MultiDiscrete([A] * M)`; the values of the padding rows are
ignored. A policy that applies one network to every row and pools over the real ones
(:class:`lwmecps_rllib.algorithms.networks.StationNet`) decides for any number of
stations up to `M`, and for more once built with a larger `M`.
"""

from __future__ import annotations

import numpy as np

from lwmecps_rllib.cluster import core
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement
from lwmecps_rllib.envs.history import history_length, summaries
from lwmecps_rllib.envs.layout import ObsLayout
from lwmecps_rllib.spec import EnvOptions

#: Features of a station row before its history.
STATION_COLUMNS = ("load", "replicas", "ready", "latency", "node_pods", "bound", "delay",
                   "load_per_ready")
#: Upper bound of every station feature.
CAP = 4.0
#: Latencies and delays are observed in these units (ms).
LATENCY_UNIT_MS = 50.0


def graph_columns(options: EnvOptions | None) -> tuple[str, ...]:
    """The station row's column names (with the options' history)."""
    cols = list(STATION_COLUMNS)
    if options is not None:
        for w in options.history_windows:
            cols += [f"load_mean_{w}", f"load_max_{w}"]
        cols += [f"load_past_{j}" for j in range(options.history, 0, -1)]
    return tuple(cols)


def graph_rows(spec: ClusterSpec, options: EnvOptions | None) -> int:
    """Rows of the observation: `options.max_stations`, or the cluster's own count.

    Raises:
        ValueError: the cluster has more stations than `max_stations`.
    """
    m = getattr(options, "max_stations", None) or spec.n_deployments
    if spec.n_deployments > m:
        raise ValueError(f"max_stations must be at least the scenario's {spec.n_deployments} "
                         f"stations, got {m}")
    return int(m)


def graph_layout(spec: ClusterSpec, options: EnvOptions | None = None) -> ObsLayout:
    """The graph observation's layout (see the module docstring)."""
    m = graph_rows(spec, options)
    cols = graph_columns(options)
    return ObsLayout([("stations", (m, len(cols)), 0.0, CAP, cols),
                      ("station_mask", m, 0.0, 1.0),
                      ("allowed", (m, spec.max_pods + 1), 0.0, 1.0),
                      ("time_of_day", 2, -1.0, 1.0, ("sin", "cos"))],
                     {"graph": True, "max_stations": m,
                      "history": 0 if options is None else options.history,
                      "history_windows": () if options is None else tuple(options.history_windows),
                      "history_length": history_length(options)})


def pod_capacity(spec: ClusterSpec) -> float:
    """Requests a pod takes in one slot's burst before it throttles."""
    sm = spec.scenario.server
    mean_inc = 0.5 * (sm.increment_low + sm.increment_high)
    return sm.load_threshold * min(sm.cpu_limit, sm.ram_limit) / mean_inc


class _Static:
    """What a cluster's graph observation holds that never changes: computed once per
    (cluster, layout) and kept on the layout."""

    def __init__(self, spec: ClusterSpec, layout: ObsLayout) -> None:
        d = spec.n_deployments
        mp = float(spec.max_pods)
        self.spec = spec
        self.station = np.array([int(np.flatnonzero(spec.station_deployment == k)[0])
                                 for k in range(d)])
        self.home = spec.home_node
        self.scale = spec.scenario.load_scale / (pod_capacity(spec) * mp)
        self.rows = np.zeros(layout["stations"].shape)
        bounds = core.replica_bounds(spec)
        self.rows[:d, 4] = core.node_pods(spec)[self.home] / mp
        self.rows[:d, 5] = bounds / mp
        self.rows[:d, 6] = spec.delay_s[self.station, self.home] * 1000.0 / LATENCY_UNIT_MS
        self.out = np.zeros(layout.size, np.float32)
        mask = np.zeros(layout["station_mask"].shape[0])
        mask[:d] = 1.0
        self.out[layout["station_mask"].slice] = mask
        allowed = np.zeros(layout["allowed"].shape)
        allowed[:, 0] = 1.0
        allowed[:d] = np.arange(spec.max_pods + 1)[None, :] <= bounds[:, None]
        self.out[layout["allowed"].slice] = allowed.ravel()


def graph_encode(spec: ClusterSpec, layout: ObsLayout, state: ClusterState, m: Measurement,
                 *, users_hist: np.ndarray | None = None, cap_norm: np.ndarray | None = None,
                 phase: np.ndarray | None = None) -> np.ndarray:
    """(B, size) graph observations of B clusters (`cap_norm` is unused: capacities are
    absolute here, in pods)."""
    st = layout.cache.get("static")
    if st is None or st.spec is not spec:
        st = layout.cache["static"] = _Static(spec, layout)
    b, d = len(state.slot), spec.n_deployments
    if phase is None:
        phase = 2.0 * np.pi * (state.slot % spec.n_slots) / spec.n_slots
    mp = float(spec.max_pods)
    rows = np.repeat(st.rows[None], b, axis=0)
    rows[:, :d, 0] = m.users[:, st.station] * st.scale
    rows[:, :d, 1] = state.replicas / mp
    rows[:, :d, 2] = core.ready_counts(state, core.now_s(spec, state)) / mp
    rows[:, :d, 3] = np.minimum(m.node_avg_latency_ms[:, st.home],
                                spec.failed_latency_ms) / LATENCY_UNIT_MS
    ready = rows[:, :d, 2] * mp
    rows[:, :d, 7] = rows[:, :d, 0] * mp / np.maximum(ready, 1.0)
    windows = layout.meta.get("history_windows", ())
    k = layout.meta.get("history", 0)
    if windows or k:
        if users_hist is None or users_hist.shape[1] < layout.meta["history_length"]:
            raise ValueError(f"the observation has users' history: it needs the users of the "
                             f"last {layout.meta['history_length']} slots per station")
        past, summary = summaries(users_hist * st.scale, k, windows)
        at = len(STATION_COLUMNS)
        for i in range(len(windows)):
            rows[:, :d, at:at + 2] = summary[:, st.station, i, :]
            at += 2
        rows[:, :d, at:at + k] = past[:, st.station, :]
    out = np.repeat(st.out[None], b, axis=0)
    out[:, layout["stations"].slice] = np.minimum(rows, CAP).reshape(b, -1)
    phase = np.asarray(phase, np.float64)
    out[:, layout["time_of_day"].slice] = np.stack([np.sin(phase), np.cos(phase)], -1)
    return out


def graph_model_config(layout: ObsLayout) -> dict:
    """Where a station-shared network finds the graph blocks in the flat observation
    (`model_config["graph"]`): offsets and shapes of `stations`, `station_mask`,
    `allowed` and `time_of_day`."""
    st, al = layout["stations"], layout["allowed"]
    return {"rows": st.shape[0], "columns": st.shape[1], "values": al.shape[1],
            "stations": st.start, "station_mask": layout["station_mask"].start,
            "allowed": al.start, "time_of_day": layout["time_of_day"].start}
