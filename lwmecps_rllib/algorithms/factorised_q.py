"""Acting with a factorised Q-function (DQN, Q-learning): the module base and its helpers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from lwmecps_rllib.algorithms.distributions import allowed_values
from lwmecps_rllib.algorithms.networks import action_dims

#: Training forward output: the heads' Q-values of the observations (list of (B, nvec[d])).
QF = "qf_preds"
#: Training forward output: the heads' Q-values of the next observations (online network).
QF_NEXT = "qf_next_preds"
#: Training forward output: the heads' Q-values of the next observations (target network).
QF_NEXT_TARGET = "qf_next_target_preds"


def linear_epsilon(t: int, start: float, end: float, steps: int) -> float:
    """Epsilon decaying linearly from `start` to `end` over `steps` env steps.

    Args:
        t: Env steps sampled so far.
        start: Epsilon at step 0.
        end: Epsilon from step `steps` on.
        steps: Length of the decay; 0 or less: `end` throughout.
    """
    if steps <= 0:
        return end
    frac = min(1.0, max(0.0, t / steps))
    return start + frac * (end - start)


def picked_q(heads: list[torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """(B, heads) `Q_d(s, a_d)` of the taken actions.

    Args:
        heads: Q-values of every head, a list of (B, nvec[d]) tensors.
        actions: The taken actions, (B,) or (B, heads).
    """
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

    With `model_config["action_mask"]` (per head the values the env allows) the greedy
    and the exploring actions take only allowed values, so no joint action exceeds a node.

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
        mask = self.model_config.get("action_mask")
        self._allowed: list[torch.Tensor | None] = [None] * len(self._dims)
        # Exploration draws an index into each head's allowed values.
        self._choices = [torch.arange(n) for n in self._dims]
        if allowed_values(self._dims, mask) is not None:
            self._allowed = [torch.as_tensor([bool(x) for x in m]) for m in mask]
            self._choices = [torch.nonzero(ok).flatten() for ok in self._allowed]
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
            within = np.ones(len(joint), bool)
            for d, ok in enumerate(self._allowed):
                if ok is not None:
                    within &= ok.numpy()[joint[:, d]]
            self._joint_allowed = None if within.all() else torch.as_tensor(within)

    def set_heads(self, dims: list[int]) -> None:
        """Act with these action heads from now on (a station-shared module fitted to
        another cluster size; the graph observation carries its own mask, and no
        `action_costs` are known for it)."""
        self._dims = list(dims)
        self._allowed = [None] * len(dims)
        self._choices = [torch.arange(n) for n in dims]

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
            return torch.stack([(q if ok is None else q.masked_fill(~ok, -torch.inf)).argmax(-1)
                                for q, ok in zip(heads, self._allowed, strict=True)], -1)
        total = sum(q[:, self._joint[:, d]] for d, q in enumerate(heads)) / len(heads)
        value = total - self._cost
        if self._joint_allowed is not None:
            value = value.masked_fill(~self._joint_allowed, -torch.inf)
        return self._joint[value.argmax(-1)]

    def heads(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """Q-values of every head: a list of (B, nvec[d]) tensors."""
        raise NotImplementedError

    def random_actions(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        """(n, heads) uniformly random allowed values (what exploration takes)."""
        return torch.stack([c[torch.randint(0, len(c), (n,))] for c in self._choices], -1)

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
            rand = self.random_actions(batch[Columns.OBS], n)
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
