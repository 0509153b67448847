"""The native batched LWMECPSEnv3: many independent clusters stepped by one numpy call."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lwmecps_rllib.cluster import core, kernels
from lwmecps_rllib.envs.base import replay_trace
from lwmecps_rllib.envs.graph import graph_rows
from lwmecps_rllib.envs.history import history_length, initial_history, push
from lwmecps_rllib.envs.lwmecps_env3 import env3_encode, env3_layout, env3_spec
from lwmecps_rllib.scenarios import load_scenario
from lwmecps_rllib.spec import EnvOptions, check_choice

INFO_COLUMNS = {"latency": kernels.M_LATENCY, "latency_term_ms": kernels.M_LATENCY_TERM,
                "pod_count": kernels.M_PODS, "resource_usage": kernels.M_USAGE,
                "imbalance": kernels.M_IMBALANCE, "requests": kernels.M_REQUESTS,
                "failed_requests": kernels.M_FAILED}


class LWMECPSEnv3Vector(VectorEnv):
    """`num_envs` LWMECPSEnv3 clusters (flat `box` observations) in one set of arrays.

    Registered as the gymnasium `vector_entry_point` of `LWMECPSEnv3`, so
    `gym.make_vec("LWMECPSEnv3", num_envs=N, vectorization_mode="vector_entry_point")`
    and RLlib's `env_runners(num_envs_per_env_runner=N,
    gym_env_vectorize_mode="vector_entry_point")` use it. Each sub-env follows exactly
    the rules of :class:`LWMECPSEnv3`; sub-envs reset automatically on the step after
    their episode ends (`AutoresetMode.NEXT_STEP`).

    Args:
        num_envs: Number of clusters.
        options: Env options (:class:`~lwmecps_rllib.spec.EnvOptions`), or their fields
            as keyword arguments. Only the simulator and the `box` form are batched.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, options: EnvOptions | None = None,
                 **fields: Any) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        opts = EnvOptions.build(options, **fields)
        check_choice("obs_format", opts.obs_format or "box", ("box", "graph"))
        check_choice("backend", opts.backend, ("sim",))
        if opts.scenario_family is not None:
            raise ValueError("scenario_family is not an option of the batched env (it "
                             "replays one scenario); use LWMECPSEnv3")
        if opts.render_mode is not None:
            raise ValueError(f"render_mode must be None for the batched env, "
                             f"got {opts.render_mode!r}")
        self.options = opts = opts.replace(obs_format=opts.obs_format or "box")
        self.scenario = load_scenario(opts.scenario)
        self.trace = replay_trace(self.scenario, opts)
        self.num_envs = num_envs
        self.episode_length = opts.episode_length or self.scenario.episode_length
        self.spec_ = env3_spec(self.scenario)
        self.layout = env3_layout(self.spec_, opts)
        self._hist_len = history_length(opts)
        self._users_hist: np.ndarray | None = None
        self.single_observation_space = self.layout.space()
        self._heads = (graph_rows(self.spec_, opts) if opts.obs_format == "graph"
                       else self.spec_.n_deployments)
        self.single_action_space = spaces.MultiDiscrete([self.spec_.max_pods + 1] * self._heads)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = None
        self.state: core.ClusterState | None = None
        self.last: core.Measurement | None = None
        self.steps = np.zeros(num_envs, np.int64)
        self._autoreset = np.zeros(num_envs, bool)
        # Constant per env: what a reset at each slot of the trace starts with, the home
        # nodes, and the slots each cluster advances per step.
        self._start_replicas = core.initial_replicas(
            self.spec_, self.trace, np.arange(len(self.trace))).astype(
                np.min_scalar_type(self.spec_.max_pods))
        self._home = np.broadcast_to(self.spec_.home_node, (num_envs, self.spec_.n_deployments))
        self._step_slots = np.full(num_envs, self.scenario.slots_per_step, np.int64)

    def _starts(self, k: int) -> np.ndarray:
        """`k` random slots one before an episode's start (its first observed slot)."""
        return self.np_random.integers(len(self.trace), size=k) - 1

    def _start_reps(self, slots: np.ndarray) -> np.ndarray:
        """(B, D) replicas of clusters reset at `slots` (`core.initial_replicas`)."""
        return self._start_replicas[slots % len(self.trace)]

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every cluster (`options["start_slot"]` pins all starts)."""
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        if options and "start_slot" in options:
            slots = np.full(self.num_envs, int(options["start_slot"]) - 1)
        else:
            slots = self._starts(self.num_envs)
        state = core.initial_state(self.spec_, slots, self._start_reps(slots))
        self.state, self.last = core.advance(self.spec_, state, self.trace, self.np_random,
                                             n_slots=1)
        self.steps[:] = 0
        self._autoreset[:] = False
        if self._hist_len:
            self._users_hist = initial_history(self.trace, self.state.slot - 1, self._hist_len)
        return env3_encode(self.spec_, self.layout, self.state, self.last,
                           users_hist=self._users_hist), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[str, Any]]:
        """Step every cluster; clusters whose episode ended last step are reset instead."""
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        spec, sc = self.spec_, self.scenario
        a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs, self._heads)
        a = a[:, :spec.n_deployments]
        replicas = np.minimum(np.maximum(a, 0), spec.max_pods)
        home = self._home
        valid = core.fits(spec, replicas, home)
        replicas = np.where(valid[:, None], replicas, self.state.replicas)
        state = core.apply_replicas(spec, self.state, replicas)
        # Clusters whose episode ended last step start afresh (their action is ignored):
        # they are advanced by one slot, for their first observation, in the same call
        # that advances the others by a step.
        reset_rows = np.flatnonzero(self._autoreset)
        n_slots = self._step_slots
        if reset_rows.size:
            state = core.ClusterState(state.slot.copy(), state.replicas, state.ready_at,
                                      state.node_of.copy(), state.move_to.copy(),
                                      state.move_at.copy())
            slots = self._starts(reset_rows.size)
            core.put_initial(self.spec_, state, reset_rows, slots, self._start_reps(slots))
            n_slots = n_slots.copy()
            n_slots[reset_rows] = 1
        state, m = core.advance(spec, state, self.trace, self.np_random, n_slots=n_slots)
        self.steps += 1
        metrics = core.step_metrics(spec, m, state.replicas, home)
        reward = np.where(valid, metrics[:, kernels.M_REWARD], sc.invalid_action_reward)
        thr = sc.termination_reward
        terminated = reward < thr if thr is not None else np.zeros(self.num_envs, bool)
        truncated = (self.steps >= self.episode_length) & ~terminated
        if self.options.reward_per_station:
            reward = reward / spec.n_stations
        if reset_rows.size:
            reward[reset_rows] = 0.0
            terminated[reset_rows] = False
            truncated[reset_rows] = False
            self.steps[reset_rows] = 0
        self.state, self.last = state, m
        self._autoreset = terminated | truncated
        infos = self._infos(metrics, valid, reset_rows)
        if self._users_hist is not None:
            push(self._users_hist, m.users)
            if reset_rows.size:
                self._users_hist[reset_rows] = initial_history(
                    self.trace, state.slot[reset_rows] - 1, self._hist_len)
        obs = env3_encode(spec, self.layout, state, m, users_hist=self._users_hist)
        return obs, reward.astype(np.float64), terminated, truncated, infos

    def _infos(self, metrics: np.ndarray, valid: np.ndarray,
               reset_rows: np.ndarray) -> dict[str, Any]:
        mask = np.ones(self.num_envs, bool)
        mask[reset_rows] = False
        infos: dict[str, Any] = {"valid_action": valid, "_valid_action": mask}
        for key, col in INFO_COLUMNS.items():
            infos[key] = metrics[:, col]
            infos[f"_{key}"] = mask
        return infos
