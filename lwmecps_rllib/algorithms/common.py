"""What our three algorithms share: reference hyper-parameter names, checks, metrics, networks."""

from __future__ import annotations

import collections
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

#: Step-info keys averaged per episode and reported under `env/`.
ENV_METRICS = ("latency", "resource_usage", "pod_count", "failed_requests")
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

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        self.epsilon = 0.1
        self.callbacks_class = EnvMetricsCallback
        self.num_env_runners = 0
        # Our actions are Discrete/MultiDiscrete: nothing to unsquash or clip, so the
        # env runner need not copy every action batch to do it.
        self.normalize_actions = False
        self.clip_actions = False
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
                 epsilon: float = NotProvided, **kwargs: Any) -> LWMECPSAlgorithmConfig:
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
        views = kwargs.pop("views", NotProvided)
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
    costs = action_costs(env, config.env_config) if env else None
    if costs is None:
        scenario = (config.env_config or {}).get("scenario", "testbed-4bs")
        scenario = getattr(scenario, "name", scenario)
        raise ValueError(f"action_costs=True needs an env with known action costs "
                         f"(LWMECPSEnv3 with at most 4096 joint actions, all fitting the "
                         f"nodes), got env {config.env!r} on scenario {scenario!r}; "
                         f"use action_costs=False")
    return costs


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
                "reward_scale": self.reward_scale, "action_costs": known_action_costs(self)}


class EnvMetricsCallback(RLlibCallback):
    """Per-episode means of the env's step metrics, logged next to RLlib's episode stats.

    Each env runner keeps the means of its last `window` episodes and logs their
    average once per `sample()` call, rather than four values per episode: the same
    figure as RLlib's own `window=100` episode stats, at a fraction of the logging cost
    when episodes are short.
    """

    def __init__(self, window: int = 100) -> None:
        super().__init__()
        self._recent = {key: collections.deque(maxlen=window) for key in ENV_METRICS}

    @override(RLlibCallback)
    def on_episode_end(self, *, episode: Any, prev_episode_chunks: list | None = None,
                       **kwargs: Any) -> None:
        """Average `latency`, `resource_usage`, `pod_count`, `failed_requests` over the episode."""
        infos = [info for chunk in [*(prev_episode_chunks or []), episode]
                 for info in chunk.get_infos() if "latency" in info]
        if infos:
            for key, recent in self._recent.items():
                recent.append(sum(info[key] for info in infos) / len(infos))

    @override(RLlibCallback)
    def on_sample_end(self, *, metrics_logger: Any = None, **kwargs: Any) -> None:
        """Log the average over the recent episodes."""
        if metrics_logger is None:
            return
        for key, recent in self._recent.items():
            if recent:
                metrics_logger.log_value(key, float(sum(recent)) / len(recent), reduce="mean",
                                         window=1)

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm: Any, metrics_logger: Any = None,
                        result: dict[str, Any], **kwargs: Any) -> None:
        """Add the fixed names (`env/total_reward`, `losses/...`) to every result.

        Tune, its loggers and W&B then show `env/total_reward`, `env/steps`,
        `env/latency`, `env/resource_usage`, `env/pod_count` and `losses/...`.
        """
        for key, value in flat_metrics(result).items():
            group, name = key.split("/", 1)
            result.setdefault(group, {})[name] = value


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """An algorithm's result as the platform's fixed metric names.

    `env/total_reward`, `env/steps`, `env/latency`, `env/resource_usage`,
    `env/pod_count`, `env/failed_requests`, `env/env_steps_lifetime`, and every scalar
    learner stat of the default module as `losses/<name>`.
    """
    env = result.get("env_runners", {})
    out = {
        "env/total_reward": env.get("episode_return_mean", float("nan")),
        "env/steps": env.get("episode_len_mean", float("nan")),
        "env/env_steps_lifetime": env.get("num_env_steps_sampled_lifetime", 0),
        "env/episodes_lifetime": env.get("num_episodes_lifetime", 0),
    }
    for key in ENV_METRICS:
        out[f"env/{key}"] = env.get(key, float("nan"))
    learner = result.get("learners", {}).get("default_policy", {})
    for key, value in learner.items():
        if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
            out[f"losses/{key}"] = float(value)
    return {k: float(v) for k, v in out.items()}


def action_dims(space: gym.Space) -> list[int]:
    """Choices per action dimension: `[n]` for Discrete, `nvec` for MultiDiscrete."""
    if isinstance(space, gym.spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [int(n) for n in np.asarray(space.nvec).ravel()]
    raise ValueError(f"action space must be Discrete or MultiDiscrete, got {space}")


def mlp(in_dim: int, hidden: list[int], out_dim: int) -> torch.nn.Sequential:
    """A ReLU MLP."""
    layers: list[torch.nn.Module] = []
    last = in_dim
    for h in hidden:
        layers += [torch.nn.Linear(last, h), torch.nn.ReLU()]
        last = h
    layers.append(torch.nn.Linear(last, out_dim))
    return torch.nn.Sequential(*layers)


def head_feature_index(views: Any, dims: list[int], obs_dim: int) -> np.ndarray | None:
    """`model_config["head_features"]` checked against the spaces: (heads, k) or None.

    Raises:
        ValueError: unless it gives, for each action head (all of one size), the same
            number of indices into the flat observation.
    """
    if views is None:
        return None
    arr = np.asarray(views, dtype=np.int64)
    if (arr.ndim != 2 or arr.shape[0] != len(dims) or len(set(dims)) != 1
            or arr.min() < 0 or arr.max() >= obs_dim):
        raise ValueError(f"head_features must give, for each of the {len(dims)} action heads "
                         f"(all of one size), the same number of observation indices in "
                         f"[0, {obs_dim}), got {views!r}")
    return arr


class SharedHeadMLP(torch.nn.Module):
    """One MLP shared by the action heads: head `d` reads its own features
    (`views[d]`), then the whole observation, and outputs its `n` values.

    `forward` returns (B, heads * n), the heads side by side, the layout of a plain
    MLP with `sum(nvec)` outputs.
    """

    def __init__(self, views: np.ndarray, obs_dim: int, hidden: list[int], n: int) -> None:
        super().__init__()
        self.register_buffer("views", torch.tensor(views))
        self.net = mlp(views.shape[1] + obs_dim, hidden, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, obs_dim) -> (B, heads * n)."""
        per_head = torch.cat([x[:, self.views],
                              x[:, None, :].expand(-1, self.views.shape[0], -1)], -1)
        return self.net(per_head).flatten(1)


def heads_mlp(model_config: dict[str, Any], dims: list[int], obs_dim: int,
              hidden: list[int]) -> torch.nn.Module:
    """The network of the action heads: (B, obs_dim) -> (B, sum(dims)).

    A plain MLP over the whole observation, or with `model_config["head_features"]`
    (`views="local"`) a :class:`SharedHeadMLP`.
    """
    views = head_feature_index(model_config.get("head_features"), dims, obs_dim)
    if views is None:
        return mlp(obs_dim, hidden, sum(dims))
    return SharedHeadMLP(views, obs_dim, hidden, dims[0])


def head_groups(logits: torch.Tensor, dims: list[int]) -> list[torch.Tensor]:
    """Side-by-side logits as (B, k, n) groups of equal-sized heads, in head order.

    One group of all heads when every dimension has the same number of choices (one
    `log_softmax` or `argmax` call for all), else one group per head.
    """
    if len(set(dims)) == 1:
        return [logits.view(logits.shape[0], len(dims), dims[0])]
    return [x[:, None, :] for x in torch.split(logits, dims, dim=-1)]


def sample_categoricals(logits: torch.Tensor, dims: list[int], discrete: bool,
                        greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (or take the argmax of) one categorical per action dimension, with logp.

    The same draw as RLlib's `TorchMultiCategorical` (independent categoricals over
    side-by-side logits), in a few tensor ops: Gumbel-max sampling, log-probabilities
    from one `log_softmax`. Returning actions from the module spares the env runner
    building a distribution object per step.

    Args:
        logits: (B, sum(dims)) logits.
        dims: Choices per action dimension.
        discrete: Whether the action space is a single Discrete ((B,) actions).
        greedy: Argmax instead of sampling.

    Returns:
        Actions (B,) or (B, len(dims)) int64, and their log-probability (B,).
    """
    acts, logp = [], 0.0
    for lg in head_groups(logits, dims):
        if greedy:
            a = lg.argmax(-1)
        else:
            u = torch.rand_like(lg).clamp_(1e-20, 1.0)
            a = (lg - torch.log(-torch.log(u))).argmax(-1)
        logp = logp + torch.log_softmax(lg, -1).gather(-1, a[..., None]).squeeze(-1).sum(-1)
        acts.append(a)
    actions = torch.cat(acts, dim=1)
    return (actions[:, 0] if discrete else actions), logp


def categorical_logp_entropy(logits: torch.Tensor, dims: list[int],
                             actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of `actions` and entropy, summed over the action dimensions.

    The values of RLlib's `TorchMultiCategorical` (`logp`, `entropy`) from one
    `log_softmax`, without building a distribution object per head: the loss runs
    once per minibatch, and four `torch.distributions.Categorical` objects cost more
    than the network itself.

    Args:
        logits: (B, sum(dims)) logits, the heads side by side.
        dims: Choices per action dimension.
        actions: (B,) for a single Discrete space, else (B, len(dims)).

    Returns:
        `logp` (B,) and `entropy` (B,).
    """
    groups = head_groups(logits, dims)
    acts = actions.long().reshape(logits.shape[0], len(dims))
    picks = torch.split(acts, [g.shape[1] for g in groups], dim=1)
    logp = entropy = 0.0
    for lg, a in zip(groups, picks, strict=True):
        lsm = torch.log_softmax(lg, -1)
        logp = logp + lsm.gather(-1, a[..., None]).squeeze(-1).sum(-1)
        entropy = entropy - (lsm.exp() * lsm).sum(-1).sum(-1)
    return logp, entropy


class ScaleRewards(ConnectorV2):
    """Learner connector piece: multiply every module's batch rewards by `scale`."""

    def __init__(self, input_observation_space: Any = None, input_action_space: Any = None,
                 *, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.scale = scale

    @override(ConnectorV2)
    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: Any,
                 **kwargs: Any) -> dict[str, Any]:
        for module_batch in batch.values():
            if Columns.REWARDS in module_batch:
                module_batch[Columns.REWARDS] = module_batch[Columns.REWARDS] * self.scale
        return batch


def linear_epsilon(t: int, start: float, end: float, steps: int) -> float:
    """Epsilon decaying linearly from `start` to `end` over `steps` env steps."""
    if steps <= 0:
        return end
    frac = min(1.0, max(0.0, t / steps))
    return start + frac * (end - start)


def picked_q(heads: list[torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """(B, heads) `Q_d(s, a_d)` of the taken actions ((B,) or (B, heads))."""
    if actions.dim() == 1:
        actions = actions[:, None]
    picked = [q.gather(-1, actions[:, d:d + 1].long()).squeeze(-1) for d, q in enumerate(heads)]
    return torch.stack(picked, -1)


def joint_q(heads: list[torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """`mean_d Q_d(s, a_d)` for the taken actions."""
    return picked_q(heads, actions).mean(-1)


class FactorisedQModule(TorchRLModule):
    """Acting with a factorised Q-function `Q(s, a) = mean_d Q_d(s, a_d)` (DQN, Q-learning).

    Subclasses implement :meth:`heads`; this class provides the greedy action (the
    per-head argmax, which maximises the factorised Q exactly) and epsilon-greedy
    exploration with the linear schedule of `model_config` (`epsilon_start`, `epsilon`,
    `epsilon_timesteps`). Actions are returned directly, so no action distribution.

    With `model_config["action_costs"]` (one cost per joint action, in C order of the
    action dimensions, from :func:`lwmecps_rllib.envs.action_costs`) the value is
    `Q(s, a) = mean_d Q_d(s, a_d) - reward_scale * cost(a)` and the greedy action is the
    argmax over every joint action (:meth:`q_value`, :meth:`best_actions`).
    """

    def setup_actions(self) -> None:
        """Read the action dimensions and the exploration schedule (call from `setup`)."""
        self._dims = action_dims(self.action_space)
        self._discrete = len(self._dims) == 1 and not self.action_space.shape
        self._eps = (float(self.model_config.get("epsilon_start", 1.0)),
                     float(self.model_config.get("epsilon", 0.05)),
                     int(self.model_config.get("epsilon_timesteps", 20000)))
        costs = self.model_config.get("action_costs")
        self._costed = costs is not None
        if self._costed:
            n = int(np.prod(self._dims))
            costs = torch.as_tensor(costs, dtype=torch.float32)
            if costs.shape != (n,):
                raise ValueError(f"action_costs must give one cost per joint action ({n}), "
                                 f"got shape {tuple(costs.shape)}")
            scale = float(self.model_config.get("reward_scale", 1.0))
            joint = np.indices(self._dims).reshape(len(self._dims), -1).T
            strides = np.cumprod([1, *self._dims[::-1]])[:-1][::-1]
            self.register_buffer("_cost", costs * scale, persistent=False)
            self.register_buffer("_joint", torch.as_tensor(joint.copy()), persistent=False)
            self.register_buffer("_strides", torch.as_tensor(strides.copy()), persistent=False)

    def q_value(self, heads: list[torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        """(B,) `Q(s, a)` of the taken actions: the heads' mean, less the known cost.

        With `action_costs`, `Q(s, a) = mean_d Q_d(s, a_d) - reward_scale * cost(a)`:
        the part of the reward that the action alone fixes is added exactly, and the
        heads learn only the rest of the return.
        """
        return joint_q(heads, actions) - self.known_cost(actions)

    def known_cost(self, actions: torch.Tensor) -> torch.Tensor | float:
        """(B,) `reward_scale * cost(a)` of the taken actions; 0 without `action_costs`."""
        if not self._costed:
            return 0.0
        idx = (actions.long().reshape(len(actions), -1) * self._strides).sum(-1)
        return self._cost[idx]

    def best_actions(self, heads: list[torch.Tensor]) -> torch.Tensor:
        """(B, heads) actions maximising `Q(s, .)`.

        The per-head argmax, or with `action_costs` the argmax over every joint action
        (the cost couples the heads).
        """
        if not self._costed:
            return torch.stack([q.argmax(-1) for q in heads], -1)
        total = sum(q[:, self._joint[:, d]] for d, q in enumerate(heads)) / len(heads)
        return self._joint[(total - self._cost).argmax(-1)]

    def heads(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """Q-values of every head: a list of (B, nvec[d]) tensors."""
        raise NotImplementedError

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        acts = self.best_actions(self.heads(obs))
        return acts[:, 0] if self._discrete else acts

    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self._greedy(batch[Columns.OBS])}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], t: int = 0,
                             **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            greedy = self._greedy(batch[Columns.OBS])
            n = greedy.shape[0]
            rand = torch.stack([torch.randint(0, k, (n,)) for k in self._dims], -1)
            explore = torch.rand(n) < linear_epsilon(t, *self._eps)
            if self._discrete:
                rand = rand[:, 0]
            else:
                explore = explore[:, None]
            return {Columns.ACTIONS: torch.where(explore, rand, greedy)}

    @override(TorchRLModule)
    def get_inference_action_dist_cls(self) -> None:
        return None

    @override(TorchRLModule)
    def get_exploration_action_dist_cls(self) -> None:
        return None

    @override(TorchRLModule)
    def get_train_action_dist_cls(self) -> None:
        return None
