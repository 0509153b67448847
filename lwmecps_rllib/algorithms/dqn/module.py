"""DQN's RLModule: one Q head per action dimension, combined additively, with a target copy."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.target_network_api import TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from lwmecps_rllib.algorithms.common import action_dims, mlp

QF = "qf_preds"
QF_NEXT = "qf_next_preds"
QF_NEXT_TARGET = "qf_next_target_preds"


def linear_epsilon(t: int, start: float, end: float, steps: int) -> float:
    """Epsilon decaying linearly from `start` to `end` over `steps` env steps."""
    if steps <= 0:
        return end
    frac = min(1.0, max(0.0, t / steps))
    return start + frac * (end - start)


class DQNModule(TorchRLModule, TargetNetworkAPI):
    """Factorised Q-network: `Q(s, a) = mean_d Q_d(s, a_d)` over the action dimensions.

    A MultiDiscrete action (one replica count or node per deployment) would have
    `prod(nvec)` joint actions (625 on the testbed, 5^64 on city-64); the additive
    factorisation keeps one head of `nvec[d]` values per dimension, and the joint greedy
    action is the per-head argmax. `model_config`: `hidden` (layer sizes),
    `epsilon_start`, `epsilon` (final), `epsilon_timesteps` (linear decay).
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        obs_dim = int(np.prod(self.observation_space.shape))
        self._dims = action_dims(self.action_space)
        self._discrete = len(self._dims) == 1 and not self.action_space.shape
        self.qf = mlp(obs_dim, list(self.model_config.get("hidden", [128, 128])),
                      sum(self._dims))
        self._eps = (float(self.model_config.get("epsilon_start", 1.0)),
                     float(self.model_config.get("epsilon", 0.05)),
                     int(self.model_config.get("epsilon_timesteps", 20000)))

    def q_heads(self, net: torch.nn.Module, obs: torch.Tensor) -> list[torch.Tensor]:
        """Q-values of every head: a list of (B, nvec[d]) tensors."""
        return list(torch.split(net(obs.flatten(1)), self._dims, dim=-1))

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        acts = torch.stack([q.argmax(-1) for q in self.q_heads(self.qf, obs)], dim=-1)
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
            eps = linear_epsilon(t, *self._eps)
            rand = torch.stack([torch.randint(0, n, (greedy.shape[0],)) for n in self._dims], -1)
            if self._discrete:
                rand = rand[:, 0]
            explore = torch.rand(greedy.shape[0]) < eps
            if not self._discrete:
                explore = explore[:, None]
            return {Columns.ACTIONS: torch.where(explore, rand, greedy)}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        out = {QF: self.q_heads(self.qf, batch[Columns.OBS])}
        if Columns.NEXT_OBS in batch:
            out[QF_NEXT] = self.q_heads(self.qf, batch[Columns.NEXT_OBS])
            with torch.no_grad():
                out[QF_NEXT_TARGET] = self.q_heads(self._target_qf, batch[Columns.NEXT_OBS])
        return out

    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        self._target_qf = copy.deepcopy(self.qf)
        for p in self._target_qf.parameters():
            p.requires_grad_(False)

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.qf, self._target_qf)]

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {QF_NEXT_TARGET: self.q_heads(self._target_qf, batch[Columns.NEXT_OBS])}

    @override(TorchRLModule)
    def get_inference_action_dist_cls(self) -> None:
        return None

    @override(TorchRLModule)
    def get_exploration_action_dist_cls(self) -> None:
        return None

    @override(TorchRLModule)
    def get_train_action_dist_cls(self) -> None:
        return None
