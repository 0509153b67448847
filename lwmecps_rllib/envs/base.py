"""The step logic shared by the three envs: apply, wait, measure, reward, observe."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from lwmecps_rllib.backends import Backend, BackendError, GuardRailError, SimBackend
from lwmecps_rllib.backends.config import KubernetesConfig
from lwmecps_rllib.cluster import core, kernels
from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement
from lwmecps_rllib.cluster.view import ClusterView
from lwmecps_rllib.envs.history import history_length, initial_history, push, summaries
from lwmecps_rllib.envs.layout import ObsLayout
from lwmecps_rllib.scenarios import Scenario, ScenarioError, load_scenario
from lwmecps_rllib.scenarios.family import ScenarioFamily, load_family
from lwmecps_rllib.spec import EnvOptions

#: Upper bound of the users-per-station observation in the dict forms.
MAX_USERS = 1e6
#: 1-ms bins of `info["latency_hist"]` (`record_latency`); the last holds the rest.
LATENCY_BINS = 2000


#: Station orders of a shuffled trace when the stations have more than 24 orders.
MAX_STATION_ORDERS = 8
#: Jittered copies of the day per station order (`load_jitter` with `shuffle_stations`).
JITTER_COPIES = 2
#: Jittered copies of the day without `shuffle_stations`.
JITTER_DAYS = 16


def augmented_trace(trace: np.ndarray, shuffle_stations: bool = False,
                    load_jitter: float = 0.0) -> np.ndarray:
    """Training days made from `trace`, end to end: station orders and load jitter.

    A training augmentation. An episode starting at a random slot of the result replays
    a variant of the day:

    - `shuffle_stations`: the stations' user columns in another order, so a policy
      cannot learn which station is busy at which hour of the training day and must
      read the users it observes. All orders when there are at most 24 (4 stations),
      else the identity and `MAX_STATION_ORDERS - 1` fixed random orders.
    - `load_jitter` = j > 0: each station's users of a copy scaled by its own factor,
      uniform in [1 - j, 1 / (1 - j)], rounded; `JITTER_COPIES` copies per order
      (`JITTER_DAYS` without shuffling). Stations get busier or quieter than on the
      training day, and busy stations end up side by side, as on other days.

    The variants are fixed (seeded by the number of stations), the episode's start slot
    picks one; an episode that starts in the last minutes of a variant runs on into the
    next. Time of day is unchanged: the envs take it modulo the day's length, and users
    above the scenario's most saturate their observation at 1.

    Args:
        trace: (T, S) users per slot and station.
        shuffle_stations: Reorder the stations.
        load_jitter: Scale range j in [0, 1).

    Returns:
        (P * T, S) users; the first block is the day itself.
    """
    n_st = trace.shape[1]
    rng = np.random.default_rng(n_st)
    orders = [list(range(n_st))]
    if shuffle_stations:
        if math.factorial(n_st) <= 24:
            orders = [list(p) for p in itertools.permutations(range(n_st))]
        else:
            orders += [list(rng.permutation(n_st)) for _ in range(MAX_STATION_ORDERS - 1)]
    if not load_jitter:
        return np.ascontiguousarray(np.concatenate([trace[:, o] for o in orders]))
    copies = JITTER_COPIES if shuffle_stations else JITTER_DAYS
    days = [trace]
    for k, o in enumerate(o for o in orders for _ in range(copies)):
        if k == 0:
            continue
        scale = rng.uniform(1.0 - load_jitter, 1.0 / (1.0 - load_jitter), size=n_st)
        days.append(np.rint(trace[:, o] * scale).astype(trace.dtype))
    return np.ascontiguousarray(np.concatenate(days))


def make_backend(options: EnvOptions, spec: ClusterSpec, trace: np.ndarray) -> Backend:
    """The backend the options ask for.

    Args:
        options: `backend` is `"sim"`, `"k8s"` (a Kubernetes backend from
            `backend_config`), a backend object, or a factory `(spec, trace) -> backend`.
        spec: The env's compiled cluster.
        trace: The trace the env replays.
    """
    backend = options.backend
    if backend == "k8s":
        from lwmecps_rllib.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(spec, trace, options.backend_config or KubernetesConfig())
    if backend == "sim":
        return SimBackend(spec, trace)
    if isinstance(backend, Backend):
        return backend
    return backend(spec, trace)


def replay_trace(scenario: Scenario, options: EnvOptions) -> np.ndarray:
    """The (T, S) users an env replays: the options' trace, augmented as they ask.

    Raises:
        ScenarioError: for a trace the scenario does not have.
    """
    if options.trace not in scenario.traces:
        raise ScenarioError(f"trace must be one of {sorted(scenario.traces)}, "
                            f"got {options.trace!r}")
    trace = scenario.trace(options.trace)
    if options.augmented:
        trace = augmented_trace(trace, options.shuffle_stations, options.load_jitter)
    return trace


def metrics_info(metrics: np.ndarray, valid: bool, slot: int) -> dict[str, Any]:
    """The info dict of one step, with the platform's metric names.

    Args:
        metrics: One row of :func:`lwmecps_rllib.cluster.core.step_metrics`.
        valid: Whether the action fitted the nodes (and was applied).
        slot: The next slot of the trace.
    """
    m = metrics.tolist()
    return {
        "latency": m[kernels.M_LATENCY],
        "latency_term_ms": m[kernels.M_LATENCY_TERM],
        "pod_count": int(m[kernels.M_PODS]),
        "resource_usage": m[kernels.M_USAGE],
        "imbalance": m[kernels.M_IMBALANCE],
        "requests": int(m[kernels.M_REQUESTS]),
        "failed_requests": int(m[kernels.M_FAILED]),
        "valid_action": valid,
        "slot": slot,
    }


def family_options(options: EnvOptions) -> tuple[ScenarioFamily | None, EnvOptions]:
    """The options' scenario family (None without one), and the options with
    `max_stations` defaulting to the family's most stations.

    Raises:
        ValueError: a family without `obs_format="graph"`, or `max_stations` below the
            family's most stations.
    """
    if options.scenario_family is None:
        return None, options
    if options.obs_format != "graph":
        raise ValueError(f"scenario_family needs obs_format='graph', got "
                         f"{options.obs_format!r}")
    family = load_family(options.scenario_family)
    if options.max_stations is None:
        return family, options.replace(max_stations=family.max_stations)
    if options.max_stations < family.max_stations:
        raise ValueError(f"max_stations must be at least the family's "
                         f"{family.max_stations} stations, got {options.max_stations}")
    return family, options


class ClusterEnv(gym.Env):
    """Base of LWMECPSEnv, LWMECPSEnv2 and LWMECPSEnv3 (see their docstrings).

    Subclasses define the action decoding, the reward and the observation; the
    step sequence (fit check, apply, wait, measure, episode end) lives here once.
    """

    metadata = {"render_modes": ["ansi"]}
    #: What an action sets: `"replicas"` per deployment (pinned) or `"placement"`.
    action_kind: ClassVar[str] = "replicas"
    #: The observation form when the options name none.
    default_obs_format: ClassVar[str] = "dict"
    #: Whether the env takes the `n_deployments` option.
    has_n_deployments: ClassVar[bool] = False
    #: Whether the env has the size-independent `graph` observation.
    has_graph: ClassVar[bool] = False
    #: The layout of the flat (`box`) observation of a compiled cluster.
    layout_of: ClassVar[Callable[[ClusterSpec], ObsLayout]]
    #: `(spec, layout, state, measurement, **overrides) -> (B, size)` box observations.
    encoder: ClassVar[Callable[..., np.ndarray]]

    def __init__(self, options: EnvOptions | None = None, /, **fields: Any) -> None:
        opts = EnvOptions.build(options, **fields)
        if opts.obs_format is None:
            opts = opts.replace(obs_format=self.default_obs_format)
        if opts.n_deployments is not None and not self.has_n_deployments:
            raise ValueError(f"n_deployments is only an option of LWMECPSEnv2, not "
                             f"{type(self).__name__}")
        if opts.max_stations is not None and opts.obs_format != "graph":
            raise ValueError("max_stations is only an option of obs_format='graph'")
        if opts.obs_format == "graph" and not self.has_graph:
            raise ValueError(f"obs_format must be one of ['dict', 'box'] for "
                             f"{type(self).__name__} (only LWMECPSEnv3 has 'graph')")
        self.family, opts = family_options(opts)
        self.options = opts
        self.trace_name = opts.trace
        self.obs_format = opts.obs_format
        self.render_mode = opts.render_mode
        self._use_scenario(self.family.member(0) if self.family is not None
                           else load_scenario(opts.scenario))
        self._member: int | None = 0 if self.family is not None else None
        self.state: ClusterState | None = None
        self.last: Measurement | None = None
        self.steps = 0
        self._hist_len = history_length(opts)
        self._users_hist: np.ndarray | None = None

    def _use_scenario(self, scenario: Scenario) -> None:
        """Build the cluster, its replayed day and the backend for `scenario` (once, or
        per episode with a scenario family). Subclasses add what they derive from it."""
        self.scenario = scenario
        self.episode_length = self.options.episode_length or scenario.episode_length
        self.spec_ = self.build_spec(scenario, self.options)
        replay = replay_trace(scenario, self.options)
        self._start_slots = len(replay)
        self.backend: Backend = make_backend(self.options, self.spec_, replay)
        self._replay = replay if isinstance(self.backend, SimBackend) else None

    # -------------------------------------------------------------- subclass hooks
    @classmethod
    def build_spec(cls, scenario: Scenario, options: EnvOptions) -> ClusterSpec:
        """The env's compiled cluster for a scenario."""
        raise NotImplementedError

    @classmethod
    def box_layout(cls, spec: ClusterSpec, options: EnvOptions | None = None) -> ObsLayout:
        """The layout of the flat (`box`) observation (with the options' history)."""
        return cls.layout_of(spec, options)

    @classmethod
    def encode_box(cls, spec: ClusterSpec, state: ClusterState, m: Measurement,
                   options: EnvOptions | None = None, **overrides: Any) -> np.ndarray:
        """(B, size) box observations of B clusters; `overrides` are the encoder's (the
        users' history `users_hist`, or capacity or time of day given by a request
        instead of the scenario's)."""
        return cls.encoder(spec, cls.layout_of(spec, options), state, m, **overrides)

    def _history_dict(self) -> dict[str, np.ndarray]:
        """The history entries of the dict observation (raw users), if observed."""
        opts = self.options
        if not self._hist_len:
            return {}
        past, summary = summaries(self._users_hist, opts.history, opts.history_windows)
        out: dict[str, np.ndarray] = {}
        if opts.history:
            out["users_history"] = past[0].astype(np.float32)
        if opts.history_windows:
            out["users_window"] = summary[0].astype(np.float32)
        return out

    def _history_spaces(self) -> dict[str, gym.spaces.Box]:
        """The spaces of :meth:`_history_dict`."""
        s, opts = self.spec_.n_stations, self.options
        out = {}
        if opts.history:
            out["users_history"] = gym.spaces.Box(0.0, MAX_USERS, (s, opts.history), np.float32)
        if opts.history_windows:
            out["users_window"] = gym.spaces.Box(0.0, MAX_USERS,
                                                 (s, len(opts.history_windows), 2), np.float32)
        return out

    @classmethod
    def head_views(cls, options: EnvOptions) -> list[list[int]] | None:
        """Per action head, the box-observation indices that describe it alone (or None)."""
        return None

    @classmethod
    def action_costs(cls, options: EnvOptions, limit: int = 4096,
                     masked: bool = False) -> list[float] | None:
        """Per joint action, the part of a step's cost the action alone fixes (or None);
        `masked`: only the joint actions :meth:`action_mask` allows need to fit."""
        return None

    @classmethod
    def action_mask(cls, options: EnvOptions) -> list[list[bool]] | None:
        """Per action head, which of its values a policy may pick, such that any joint
        action of allowed values fits the nodes (None: no such factorisation)."""
        return None

    def _decode(self, action: Any) -> tuple[np.ndarray, np.ndarray]:
        """(1, D) replicas and (1, D) nodes asked for by `action`."""
        raise NotImplementedError

    def _reward(self, metrics: np.ndarray) -> float:
        """The step's reward from its metrics row (`kernels.M_*` columns)."""
        raise NotImplementedError

    def _observe(self) -> Any:
        raise NotImplementedError

    def _terminated(self, reward: float) -> bool:
        return False

    # ------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode at a random slot of the day (or `options["start_slot"]`)."""
        super().reset(seed=seed)
        options = options or {}
        if self.family is not None:
            member = int(options.get("member", self.np_random.integers(self.family.pool)))
            if member != self._member:
                self._use_scenario(self.family.member(member))
                self._member = member
        if "start_slot" in options:
            start = int(options["start_slot"])
        else:
            start = int(self.np_random.integers(self._start_slots))
        self.state, self.last = self.backend.reset(start, self.np_random)
        self.steps = 0
        if self._hist_len:
            if self._replay is not None:  # the slots before, from the replayed day
                self._users_hist = initial_history(self._replay, self.state.slot - 1,
                                                   self._hist_len)
            else:  # a real cluster: its first measurement stands for the slots before
                self._users_hist = np.repeat(self.last.users[:, None, :], self._hist_len, 1)
        return self._observe(), {"slot": int(self.state.slot[0])}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Apply the action (if it fits), wait the stabilisation time, measure, reward."""
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        replicas, nodes = self._decode(action)
        valid = bool(core.fits(self.spec_, replicas, nodes)[0])
        errors = [self._backend_call(self._apply, replicas, nodes)] if valid else []
        hist = np.zeros((1, LATENCY_BINS)) if self.options.record_latency else None
        extra = {} if hist is None else {"latency_hist": hist}
        errors.append(self._backend_call(self._advance, **extra))
        error = "; ".join(e for e in errors if e is not None) or None
        if self._users_hist is not None:
            push(self._users_hist, self.last.users)
        metrics = core.step_metrics(self.spec_, self.last, self.state.replicas,
                                    self._current_nodes())[0]
        reward, terminated, truncated, info = self._outcome(metrics, valid, error, hist)
        return self._observe(), reward, terminated, truncated, info

    def _apply(self, replicas: np.ndarray, nodes: np.ndarray) -> None:
        self.state = self.backend.apply(self.state, replicas, nodes)

    def _advance(self, **kwargs: Any) -> None:
        self.state, self.last = self.backend.advance(self.state, self.np_random, **kwargs)

    def _backend_call(self, call: Callable[..., None], *args: Any, **kwargs: Any) -> str | None:
        """`call(*args, **kwargs)` (which updates the cluster state); a `BackendError`
        (never a `GuardRailError`) is the step's failure: returned as text, with the
        state set to the error's (when it has one).

        The cluster did not do what was asked (a rollout never became ready, an API read
        or the metrics failed): the step is penalised and reports why, the env stays
        usable. A failed measurement leaves the last one in place (the observation
        repeats it; the reward is the penalty).
        """
        try:
            call(*args, **kwargs)
        except GuardRailError:
            raise
        except BackendError as exc:
            if exc.state is not None:
                self.state = exc.state
            return str(exc)
        return None

    def _outcome(self, metrics: np.ndarray, valid: bool, error: str | None,
                 hist: np.ndarray | None) -> tuple[float, bool, bool, dict[str, Any]]:
        """A measured step's reward, episode end and info (counts the step)."""
        self.steps += 1
        reward = (self._reward(metrics) if valid and error is None
                  else float(self.scenario.invalid_action_reward))
        info = metrics_info(metrics, valid, int(self.state.slot[0]))
        if hist is not None:
            info["latency_hist"] = hist[0]
        if error is not None:
            info["error"] = error
        terminated = self._terminated(reward)
        truncated = self.steps >= self.episode_length and not terminated
        if self.options.reward_per_station:
            reward /= self.spec_.n_stations
        return reward, terminated, truncated, info

    def cluster_view(self) -> ClusterView:
        """The cluster as policies may see it: read-only copies, no access to the backend."""
        return ClusterView.of(self.spec_, self.action_space, self.state, self.last,
                              self._replay, self._users_hist)

    def _current_nodes(self) -> np.ndarray:
        """(1, D) node of each deployment, or the node it is moving to."""
        return core.current_nodes(self.spec_, self.state)

    def render(self) -> str | None:
        """A text line with the replicas, nodes and latency (render_mode="ansi")."""
        if self.render_mode != "ansi" or self.state is None:
            return None
        m = self.last
        return (f"slot={int(self.state.slot[0])} replicas={self.state.replicas[0].tolist()} "
                f"nodes={self._current_nodes()[0].tolist()} "
                f"latency={float(m.avg_latency_ms[0]):.1f}ms failed={int(m.failed[0])}")

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()
