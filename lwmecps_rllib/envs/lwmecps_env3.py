"""LWMECPSEnv3: scale each base station's server deployment."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from lwmecps_rllib.cluster import core, kernels
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement
from lwmecps_rllib.envs.base import MAX_USERS, ClusterEnv
from lwmecps_rllib.envs.graph import graph_encode, graph_layout, graph_rows
from lwmecps_rllib.envs.history import history_blocks, history_meta, write_history
from lwmecps_rllib.envs.layout import ObsLayout
from lwmecps_rllib.scenarios import Scenario, load_scenario
from lwmecps_rllib.spec import EnvOptions

POD_FIELDS = ("CPU_usage", "RAM_usage", "TX_usage", "RX_usage")
NODE_FIELDS = ("CPU", "RAM", "TX", "RX")


NODE_COLUMNS = ("cpu", "ram", "tx", "rx", "latency")


def env3_spec(scenario: Scenario) -> ClusterSpec:
    """One pinned deployment per station."""
    return ClusterSpec.build(scenario, pinned=True)


def env3_layout(spec: ClusterSpec, options: EnvOptions | None = None) -> ObsLayout:
    """LWMECPSEnv3's flat observation (see the class docstring), with the users' history
    the options ask for (:mod:`lwmecps_rllib.envs.history`); the graph form's with
    `obs_format="graph"` (:mod:`lwmecps_rllib.envs.graph`)."""
    if options is not None and options.obs_format == "graph":
        return graph_layout(spec, options)
    n, d, s = spec.n_nodes, spec.n_deployments, spec.n_stations
    return ObsLayout([("nodes", (n, len(NODE_COLUMNS)), 0.0, 1.0, NODE_COLUMNS),
                      ("replicas", d, 0.0, 1.0), ("ready", d, 0.0, 1.0),
                      ("users", s, 0.0, 1.0), ("time_of_day", 2, -1.0, 1.0, ("sin", "cos")),
                      *history_blocks(s, options)], history_meta(options))


def env3_encode(spec: ClusterSpec, layout: ObsLayout, state: ClusterState, m: Measurement,
                *, users_hist: np.ndarray | None = None, cap_norm: np.ndarray | None = None,
                phase: np.ndarray | None = None) -> np.ndarray:
    """(B, size) flat observations of B clusters, in the layout's bounds.

    Args:
        spec: The cluster.
        layout: :func:`env3_layout` of `spec`.
        state: The clusters' states.
        m: Their last measurement.
        users_hist: (B, H, S) users of the last measured slots, newest last (needed when
            the layout has history blocks).
        cap_norm: (N, 4) node capacity over the largest, to use instead of the scenario's.
        phase: (B,) time of day in radians, instead of the one of the state's slot.
    """
    if layout.meta.get("graph"):
        return graph_encode(spec, layout, state, m, users_hist=users_hist, phase=phase)
    if phase is None:
        phase = 2.0 * np.pi * (state.slot % spec.n_slots) / spec.n_slots
    offsets = box_offsets(layout)
    out = np.empty((len(state.slot), layout.size), np.float32)
    kernels.env3_obs(state.replicas, state.ready_at, state.slot, m.data,
                     spec.cap_norm if cap_norm is None else cap_norm, spec.max_pods,
                     spec.failed_latency_ms, spec.max_users, spec.scenario.slot_s,
                     np.asarray(phase, np.float64), offsets, out)
    write_history(layout, out, users_hist, spec.max_users)
    return out


def box_offsets(layout: ObsLayout) -> np.ndarray:
    """Where the box kernel writes each block of the layout (kept on the layout)."""
    offsets = layout.cache.get("offsets")
    if offsets is None:
        offsets = layout.cache["offsets"] = np.array(
            [layout[name].start for name in
             ("nodes", "replicas", "ready", "users", "time_of_day")], np.int64)
    return offsets


def env3_head_views(spec: ClusterSpec, layout: ObsLayout) -> list[list[int]]:
    """Per deployment, the indices of the box observation that describe it alone.

    For deployment `d` (served from node `h`, serving station `s`): the users of `s`,
    the replicas and the ready replicas of `d`, and the latency of `h`, in that order;
    then, when observed, the users' history of `s` and its windows (mean, max).
    Algorithms that factorise the action per deployment can look at these few features
    (tabular Q-learning's shared table) or share one network across deployments.
    """
    views = []
    for d in range(spec.n_deployments):
        station = int(np.flatnonzero(spec.station_deployment == d)[0])
        view = [layout.index("users", station), layout.index("replicas", d),
                layout.index("ready", d), layout.index("nodes", int(spec.home_node[d]),
                                                       "latency")]
        if "users_history" in layout:
            view += [layout.index("users_history", station, j)
                     for j in range(layout["users_history"].shape[1])]
        if "users_window" in layout:
            view += [layout.index("users_window", station, w, c)
                     for w in range(layout["users_window"].shape[1]) for c in range(2)]
        views.append(view)
    return views


def env3_action_costs(spec: ClusterSpec, bounds: np.ndarray | None = None) -> np.ndarray | None:
    """The reward's part fixed by the action alone, for every joint action.

    Returns a (prod(nvec),) array, joint actions in C order of the replica counts
    (`np.ravel_multi_index`): `replica_cost * replicas + imbalance_weight *
    imbalance`, what the step's reward subtracts besides the latency term. The
    deployments are pinned, so the counts alone fix both terms. None when some joint
    action (within `bounds`, per deployment, when given: a policy masks the rest) does
    not fit the nodes: such a step gets `invalid_action_reward` instead, so the reward is
    not latency plus this cost for every action.
    """
    n_d = spec.n_deployments
    counts = np.indices((spec.max_pods + 1,) * n_d).reshape(n_d, -1).T.copy()
    nodes = np.broadcast_to(spec.home_node, counts.shape).copy()
    allowed = np.ones(len(counts), bool) if bounds is None else np.all(counts <= bounds, 1)
    if not core.fits(spec, counts[allowed], nodes[allowed]).all():
        return None
    quiet = Measurement.zeros(len(counts), spec.n_nodes, spec.n_stations)
    return -core.step_metrics(spec, quiet, counts, nodes)[:, kernels.M_REWARD]


def _scalar(high: float) -> spaces.Box:
    return spaces.Box(0.0, np.float32(high), shape=(), dtype=np.float32)


class LWMECPSEnv3(ClusterEnv):
    """Scale the server deployment of every base station of an edge cluster.

    ## Description

    Each base station's users send a burst of GET requests every 10-second slot to
    the server Deployment of their station, pinned to the station's node. The agent
    sets the replica count of every deployment; more replicas spread a burst over
    more pods and avoid the server's throttling, but cost resources. Requests that
    time out (0.4 s) or reach a station without ready pods fail over to the next
    station in ring order. The cluster is a digital twin (numpy core) replaying a
    real 24-hour user trace, or a real Kubernetes cluster behind the same backend
    interface.

    ## Action Space

    `MultiDiscrete([max_replicas + 1] * n_deployments)`: the replica count of each
    station's deployment (station order of the scenario).

    ## Observation Space

    `obs_format="dict"` (the reference's nested form, default):

    - `nodes[node]`: `CPU`, `RAM`, `TX`, `RX` (node capacity), `avg_latency` (ms, mean
      latency of the requests the node answered in the last step) and `deployments`:
      for each deployment pinned to this node its `CPU_usage`, `RAM_usage`,
      `TX_usage`, `RX_usage` (replicas x observed per-pod use) and `Replicas`.
    - `users`: users each station saw in the last slot.
    - `time_of_day`: `[sin, cos]` of the slot's phase in the day.

    `obs_format="box"` (for RLlib), `Box` of size `5N + 2D + S + 2` in [0, 1]:
    per node capacity (CPU, RAM, TX, RX) over the scenario's largest and latency
    over `failed_latency_ms`; per deployment replicas and ready replicas over
    `max_replicas`; users per station over the scenario's most; sin/cos of time of day.

    ## Rewards

    `-latency_weight * latency - replica_cost * total_replicas - imbalance_weight *
    imbalance` (weights 1.0, 0.1, 0.1). `latency` is the mean latency in ms of all
    requests of the step, a failed request counting `failed_latency_ms` (one timeout
    per station). `imbalance` sums over CPU, RAM, TX and RX the variance across nodes
    of utilisation in % of capacity. An action that does not fit the nodes' CPU or
    memory gets `invalid_action_reward` (-100) and is not applied.

    Differences from the reference: it wrote every deployment's replica count into
    every node, so it counted replicas `n_nodes` times and always saw zero imbalance;
    here each deployment lives on its own node, is counted once, and imbalance is
    real. The reference averaged only successful requests, which rewards serving
    nobody; here failed requests are charged.

    ## Starting State

    One ready replica per deployment, at a uniformly random slot of the day (seeded
    by `reset(seed=...)`, or `options={"start_slot": k}`); the slot before it is
    measured for the first observation.

    ## Episode End

    Terminated when a step's reward is below `termination_reward` (-500); truncated
    after `episode_length` steps (scenario knob, 5 on the testbed). The episode
    length is scenario data, so the env truncates itself rather than relying on a
    registration-time `max_episode_steps`.

    ## Arguments

    - `scenario`: shipped name (`testbed-4bs`, `testbed-4bs-peak`, `metro-16`,
      `city-64`), a YAML path, or a `Scenario`.
    - `trace`: `a` (training day) or `b` (evaluation day).
    - `backend`: `"sim"`, `"k8s"` (a real cluster, see `backend_config`), a backend
      object or a factory `(spec, trace) -> backend`.
    - `backend_config`: for `"k8s"`, the `KubernetesConfig` fields (namespace,
      deployments, timeouts, metrics provider, dry_run ...).
    - `episode_length`: override of the scenario's.
    - `obs_format`: `"dict"` or `"box"`.
    - `render_mode`: `None` or `"ansi"`.
    - `shuffle_stations`: training augmentation (simulator only): episodes replay the
      day with the stations' user columns in one of their orders (all 24 for 4
      stations), so a policy cannot memorise which station is busy at which hour of
      the training day. See `lwmecps_rllib.envs.base.augmented_trace`.
    - `load_jitter`: training augmentation (simulator only), j in [0, 1): episodes
      replay copies of the day with each station's users scaled by its own factor in
      [1 - j, 1 / (1 - j)].
    """

    action_kind = "replicas"
    has_graph = True
    layout_of = staticmethod(env3_layout)
    encoder = staticmethod(env3_encode)

    def __init__(self, options: EnvOptions | None = None, /, **fields: Any) -> None:
        super().__init__(options, **fields)
        spec = self.spec_
        heads = (graph_rows(spec, self.options) if self.obs_format == "graph"
                 else spec.n_deployments)
        self.action_space = spaces.MultiDiscrete([spec.max_pods + 1] * heads)
        if self.obs_format in ("box", "graph"):
            self.observation_space = self.layout.space()
        else:
            self.observation_space = self._dict_space()
        self._action_shape = (heads,)

    @property
    def _fast(self) -> bool:
        """Whether a step may run as one compiled call (see :meth:`step`)."""
        return (self.obs_format == "box" and self._replay is not None  # the simulator
                and not self._hist_len and not self.options.record_latency)

    def _use_scenario(self, scenario: Scenario) -> None:
        """The cluster's layout, home nodes and deployments per node, besides the base's."""
        super()._use_scenario(scenario)
        spec = self.spec_
        self.layout = env3_layout(spec, self.options)
        self._home = spec.home_node[None, :].copy()
        self._deps_on = [np.flatnonzero(spec.home_node == n) for n in range(spec.n_nodes)]

    @classmethod
    def build_spec(cls, scenario: Scenario, options: EnvOptions) -> ClusterSpec:
        """One pinned deployment per station."""
        return env3_spec(scenario)

    @classmethod
    def head_views(cls, options: EnvOptions) -> list[list[int]] | None:
        """See :func:`env3_head_views` (None for the graph form: its rows are the views)."""
        if options.obs_format == "graph":
            return None
        spec = env3_spec(load_scenario(options.scenario))
        return env3_head_views(spec, env3_layout(spec, options))

    @classmethod
    def action_costs(cls, options: EnvOptions, limit: int = 4096,
                     masked: bool = False) -> list[float] | None:
        """See :func:`env3_action_costs`; None above `limit` joint actions or when some
        joint action (of the values :meth:`action_mask` allows, when `masked`) does not
        fit (and for the graph form)."""
        spec = env3_spec(load_scenario(options.scenario))
        if options.obs_format == "graph" or (spec.max_pods + 1) ** spec.n_deployments > limit:
            return None
        costs = env3_action_costs(spec, core.replica_bounds(spec) if masked else None)
        return None if costs is None else costs.tolist()

    @classmethod
    def action_mask(cls, options: EnvOptions) -> list[list[bool]] | None:
        """Replica counts up to each deployment's share of its node, so that any
        combination fits (:func:`lwmecps_rllib.cluster.core.replica_bounds`). None for
        the graph form, whose observation carries the mask (block `allowed`)."""
        if options.obs_format == "graph":
            return None
        spec = env3_spec(load_scenario(options.scenario))
        values = np.arange(spec.max_pods + 1)
        return [(values <= b).tolist() for b in core.replica_bounds(spec)]

    def _dict_space(self) -> spaces.Dict:
        spec, sc = self.spec_, self.scenario
        nodes = {}
        for n_idx, node in enumerate(sc.nodes):
            deps = {}
            for d in np.flatnonzero(spec.home_node == n_idx):
                deps[sc.deployment_names[d]] = spaces.Dict({
                    **{f: _scalar(sc.max_replicas * spec.pod_usage[i])
                       for i, f in enumerate(POD_FIELDS)},
                    "Replicas": _scalar(sc.max_replicas),
                })
            nodes[node.name] = spaces.Dict({
                **{f: _scalar(spec.node_cap[n_idx, i]) for i, f in enumerate(NODE_FIELDS)},
                "avg_latency": _scalar(sc.failed_latency_ms),
                "deployments": spaces.Dict(deps),
            })
        return spaces.Dict({
            "nodes": spaces.Dict(nodes),
            "users": spaces.Box(0.0, MAX_USERS, shape=(spec.n_stations,), dtype=np.float32),
            "time_of_day": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
            **self._history_spaces(),
        })

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """As every env's step; on the simulator with the plain box observation the
        simulation, reward terms and observation run in one compiled call
        (:func:`lwmecps_rllib.cluster.kernels.env3_sim_step`, the same kernels in the
        same order)."""
        if not self._fast or self.state is None:
            return super().step(action)
        replicas, _ = self._decode(action)
        spec, st = self.spec_, self.state
        slot, ready_at = st.slot.copy(), st.ready_at.copy()
        m = Measurement.zeros(1, spec.n_nodes, spec.n_stations)
        metrics = np.empty((1, kernels.N_METRICS))
        obs = np.empty((1, self.layout.size), np.float32)
        key = self.np_random.bit_generator.random_raw() >> 1
        valid = bool(kernels.env3_sim_step(
            replicas, self._home, st.replicas, slot, ready_at, st.node_of, st.move_to,
            st.move_at, self._replay, spec.station_deployment, spec.delay_s, spec.params,
            core.slot_counts(1, spec.scenario.slots_per_step), key, core.no_latency_hist(1),
            spec.pod_request, spec.node_cap,
            float(spec.scenario.pod_startup_s), spec.pod_usage, spec.failed_latency_ms,
            spec.weights, spec.cap_norm, spec.max_pods, spec.max_users, spec.n_slots,
            box_offsets(self.layout), m.data, metrics, obs))
        reps = replicas.astype(np.int64) if valid else st.replicas
        self.state = ClusterState(slot, reps, ready_at, st.node_of, st.move_to, st.move_at)
        self.last = m
        reward, terminated, truncated, info = self._outcome(metrics[0], valid, None, None)
        return obs[0], reward, terminated, truncated, info

    def _decode(self, action: Any) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(action, dtype=np.int64)
        if a.shape != self._action_shape or not kernels.in_range(a, self.spec_.max_pods):
            raise ValueError(f"action must give {self._action_shape[0]} replica counts in "
                             f"[0, {self.spec_.max_pods}], got {action!r}")
        return a[:self.spec_.n_deployments].reshape(1, -1), self._home

    def _reward(self, metrics: np.ndarray) -> float:
        return float(metrics[kernels.M_REWARD])

    def _terminated(self, reward: float) -> bool:
        thr = self.scenario.termination_reward
        return thr is not None and reward < thr

    def _observe(self) -> Any:
        if self.obs_format in ("box", "graph"):
            return env3_encode(self.spec_, self.layout, self.state, self.last,
                               users_hist=self._users_hist)[0]
        spec, sc, m = self.spec_, self.scenario, self.last
        replicas = self.state.replicas[0]
        lat = np.minimum(m.node_avg_latency_ms[0], sc.failed_latency_ms)
        f32 = np.float32
        nodes = {}
        for n_idx, node in enumerate(sc.nodes):
            deps = {}
            for d in self._deps_on[n_idx]:
                r = replicas[d]
                deps[sc.deployment_names[d]] = {
                    **{f: np.array(r * spec.pod_usage[i], f32) for i, f in enumerate(POD_FIELDS)},
                    "Replicas": np.array(r, f32),
                }
            nodes[node.name] = {
                **{f: np.array(spec.node_cap[n_idx, i], f32) for i, f in enumerate(NODE_FIELDS)},
                "avg_latency": np.array(lat[n_idx], f32),
                "deployments": deps,
            }
        phase = 2.0 * np.pi * (self.state.slot[0] % sc.n_slots) / sc.n_slots
        return {"nodes": nodes, "users": m.users[0].astype(f32),
                "time_of_day": np.array([np.sin(phase), np.cos(phase)], f32),
                **self._history_dict()}
