"""The base config of our algorithms: the reference's hyper-parameter names, checked early.

`LWMECPSAlgorithmConfig` is what every algorithm's config subclasses (PPO directly);
`FactorisedQConfig` adds what the factorised-Q algorithms (DQN, Q-learning) share.
`check_param` and `check_flag` validate a setting when it is set, with a message
naming it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.utils.annotations import override

from lwmecps_rllib.algorithms.metrics import EnvMetricsCallback

#: The reference's hyper-parameter names (RLlib's `lr`, `gamma`, and the algorithm's epsilon).
REFERENCE_PARAMS = ("learning_rate", "discount_factor", "epsilon")
#: Allowed `views` settings (None: the algorithm's default).
VIEWS = (None, "local", "global")


def check_param(name: str, value: Any, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, integer: bool = False) -> None:
    """Raise ValueError naming `name` unless `value` is a number in the allowed range."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        rng = " and ".join(x for x in (lo, hi) if x)
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}{' ' + rng if rng else ''}, got {value!r}")


def check_flag(name: str, value: Any) -> bool:
    """`value` if it is a bool (numpy's too); else ValueError naming `name`."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


class LWMECPSAlgorithmConfig(AlgorithmConfig):
    """Base config of our algorithms: the reference's hyper-parameter names, checked early.

    `training(learning_rate=..., discount_factor=..., epsilon=...)` set RLlib's `lr`,
    `gamma` and the algorithm's epsilon (exploration for Q-learning and DQN, the clip
    range for PPO). Values are checked when set, so a bad one fails before anything is
    built, with a message naming the parameter.
    """

    max_learners: ClassVar[int | None] = None
    """Most learners the algorithm trains correctly with (None: any number)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        self.epsilon = 0.1
        self.callbacks_class = EnvMetricsCallback
        self.num_env_runners = 0
        # Our actions are Discrete/MultiDiscrete: nothing to unsquash or clip, so the
        # env runner need not copy every action batch to do it.
        self.normalize_actions = False
        self.clip_actions = False
        self.mask_actions = True
        """Never sample or pick a value the env's action mask forbids
        (`lwmecps_rllib.envs.action_mask`: replica counts above a deployment's share of
        its node, nodes beyond their quota), so no joint action exceeds a node's CPU or
        memory. False: the reference's penalty path (the env answers an action that does
        not fit with `invalid_action_reward`)."""
        self.views: str | None = None
        """How the module reads the observation per action head. `"local"`: each head
        (deployment) gets its own features (`lwmecps_rllib.envs.head_views`: its
        station's users, its replicas and ready replicas, its node's latency) and the
        heads share parameters; `"global"`: one function of the whole
        observation. None: the algorithm's default."""

    def _set_epsilon(self, value: float) -> None:
        check_param("epsilon", value, 0.0, 1.0)
        self.epsilon = float(value)

    @override(AlgorithmConfig)
    def training(self, *, learning_rate: float = NotProvided, discount_factor: float = NotProvided,
                 epsilon: float = NotProvided, views: str | None = NotProvided,
                 mask_actions: bool = NotProvided, **kwargs: Any) -> LWMECPSAlgorithmConfig:
        """Training settings; `learning_rate`, `discount_factor` and `epsilon` as in LWMECPS."""
        if learning_rate is not NotProvided:
            kwargs["lr"] = learning_rate
        if discount_factor is not NotProvided:
            kwargs["gamma"] = discount_factor
        if "lr" in kwargs and not isinstance(kwargs["lr"], list):
            check_param("learning_rate", kwargs["lr"], 0.0, low_open=True)
        if "gamma" in kwargs:
            check_param("discount_factor", kwargs["gamma"], 0.0, 1.0)
        if epsilon is not NotProvided:
            self._set_epsilon(epsilon)
        if mask_actions is not NotProvided:
            self.mask_actions = check_flag("mask_actions", mask_actions)
        if views is not NotProvided:
            if views not in VIEWS:
                raise ValueError(f"views must be one of {list(VIEWS)}, got {views!r}")
            self.views = views
        super().training(**kwargs)
        return self

    def head_features(self, default: str) -> list[list[int]] | None:
        """Per-head observation indices for the `views` setting, or None for global.

        Args:
            default: The algorithm's choice when `views` is None: `"local"` where the
                env defines per-head views (LWMECPSEnv3, else global), or `"global"`.

        Raises:
            ValueError: `views="local"` on an env without per-head views.
        """
        views = self.views or default
        if views == "global":
            return None
        from lwmecps_rllib.envs import head_views

        env = self.env if isinstance(self.env, str) else None
        found = head_views(env, self.env_config) if env else None
        if found is None and self.views == "local":
            raise ValueError(f"views='local' needs an env with per-head views (LWMECPSEnv3), "
                             f"got env {self.env!r}; use views='global'")
        return found

    @override(AlgorithmConfig)
    def update_from_dict(self, config_dict: dict[str, Any]) -> LWMECPSAlgorithmConfig:
        """As RLlib's, plus the reference names, applied last through :meth:`training`.

        So a Tune search space (or a saved config) may use `learning_rate`,
        `discount_factor` and `epsilon`, and their values are checked like any other.
        """
        rest = dict(config_dict)
        ref = {k: rest.pop(k) for k in REFERENCE_PARAMS if k in rest}
        super().update_from_dict(rest)
        if ref:
            self.training(**ref)
        return self

    @property
    def learning_rate(self) -> float:
        """The reference's name for `lr`."""
        return self.lr

    @property
    def discount_factor(self) -> float:
        """The reference's name for `gamma`."""
        return self.gamma


def known_action_costs(config: Any) -> list[float] | None:
    """The env's cost of every joint action when `config.action_costs` is set, else None.

    Raises:
        ValueError: `action_costs=True` on an env that defines no such costs (only
            LWMECPSEnv3 with at most 4096 joint actions, all fitting the nodes, does).
    """
    if not getattr(config, "action_costs", False):
        return None
    from lwmecps_rllib.envs import action_costs

    env = config.env if isinstance(config.env, str) else None
    masked = bool(getattr(config, "mask_actions", False))
    costs = action_costs(env, config.env_config, masked=masked) if env else None
    if costs is None:
        scenario = (config.env_config or {}).get("scenario", "testbed-4bs")
        scenario = getattr(scenario, "name", scenario)
        raise ValueError(f"action_costs=True needs an env with known action costs "
                         f"(LWMECPSEnv3 with at most 4096 joint actions, all fitting the "
                         f"nodes), got env {config.env!r} on scenario {scenario!r}; "
                         f"use action_costs=False")
    return costs


def known_action_mask(config: Any) -> list[list[bool]] | None:
    """The env's per-head action mask when `config.mask_actions` is set and the env has
    one."""
    if not getattr(config, "mask_actions", False) or not isinstance(config.env, str):
        return None
    from lwmecps_rllib.envs import action_mask
    from lwmecps_rllib.envs.names import ENV_NAMES

    return action_mask(config.env, config.env_config) if config.env in ENV_NAMES else None


def known_graph(config: Any) -> dict[str, int] | None:
    """Where the env's graph observation keeps its blocks (`model_config["graph"]`), when
    its `env_config` asks for `obs_format="graph"`; else None."""
    if not isinstance(config.env, str):
        return None
    from lwmecps_rllib.envs import graph_config
    from lwmecps_rllib.envs.names import ENV_NAMES

    return graph_config(config.env, config.env_config) if config.env in ENV_NAMES else None


class FactorisedQConfig(LWMECPSAlgorithmConfig):
    """Settings shared by the algorithms acting with a :class:`FactorisedQModule` (DQN,
    Q-learning): the exploration schedule, the reward scale and the known action costs,
    and what of them the module reads from `model_config`."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        self.epsilon_start = 1.0
        """Initial exploration rate."""
        self.epsilon_timesteps = 20000
        """Env steps of the linear decay from `epsilon_start` to `epsilon`."""
        self.reward_scale = 0.01
        """Rewards are multiplied by this inside the TD target (keeps Q-values O(1))."""
        self.action_costs = False
        """Add the env's known cost of each joint action to Q exactly (see
        `lwmecps_rllib.envs.action_costs`) and act by the argmax over joint actions."""

    @override(LWMECPSAlgorithmConfig)
    def training(self, *, epsilon_start: float = NotProvided,
                 epsilon_timesteps: int = NotProvided, reward_scale: float = NotProvided,
                 action_costs: bool = NotProvided, **kwargs: Any) -> FactorisedQConfig:
        """Exploration schedule, reward scale and action costs, plus the common settings."""
        super().training(**kwargs)
        if action_costs is not NotProvided:
            self.action_costs = check_flag("action_costs", action_costs)
        if epsilon_start is not NotProvided:
            check_param("epsilon_start", epsilon_start, 0.0, 1.0)
            self.epsilon_start = float(epsilon_start)
        if epsilon_timesteps is not NotProvided:
            check_param("epsilon_timesteps", epsilon_timesteps, 0, integer=True)
            self.epsilon_timesteps = int(epsilon_timesteps)
        if reward_scale is not NotProvided:
            check_param("reward_scale", reward_scale, 0.0, low_open=True)
            self.reward_scale = float(reward_scale)
        return self

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {"epsilon_start": self.epsilon_start, "epsilon": self.epsilon,
                "epsilon_timesteps": self.epsilon_timesteps,
                "head_features": self.head_features(default="local"),
                "reward_scale": self.reward_scale, "action_costs": known_action_costs(self),
                "action_mask": known_action_mask(self), "graph": known_graph(self)}
