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

from lwmecps_rllib.algorithms.factorised_q import QF, QF_NEXT, QF_NEXT_TARGET, FactorisedQModule
from lwmecps_rllib.algorithms.networks import StationNet, heads_mlp, hidden_sizes


class DQNModule(FactorisedQModule, TargetNetworkAPI):
    """Factorised Q-network: `Q(s, a) = mean_d Q_d(s, a_d)` over the action dimensions.

    A MultiDiscrete action (one replica count or node per deployment) would have
    `prod(nvec)` joint actions (625 on the testbed, 5^64 on city-64); the additive
    factorisation keeps one head of `nvec[d]` values per dimension, and the joint greedy
    action is the per-head argmax. `model_config`: `hidden` (layer sizes),
    `head_features` (`views="local"`: one network shared by the heads, each reading its
    own features followed by the whole observation), `epsilon_start`, `epsilon`
    (final), `epsilon_timesteps` (linear decay), `action_costs` and `reward_scale`
    (the known cost of each joint action, added to Q exactly; see
    :class:`~lwmecps_rllib.algorithms.factorised_q.FactorisedQModule`). With `graph`
    (`obs_format="graph"`) the heads are one
    :class:`~lwmecps_rllib.algorithms.networks.StationNet` over the station rows, its
    disallowed values at -1e9, and exploration draws among the observation's allowed
    values.
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        self.setup_actions()
        obs_dim = int(np.prod(self.observation_space.shape))
        self.qf = heads_mlp(self.model_config, self._dims, obs_dim,
                            hidden_sizes(self.model_config))

    def q_heads(self, net: torch.nn.Module, obs: torch.Tensor) -> list[torch.Tensor]:
        """Q-values of every head of `net`: a list of (B, nvec[d]) tensors."""
        return list(torch.split(net(obs.flatten(1)), self._dims, dim=-1))

    @override(FactorisedQModule)
    def heads(self, obs: torch.Tensor) -> list[torch.Tensor]:
        return self.q_heads(self.qf, obs)

    @override(FactorisedQModule)
    def random_actions(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        """Among the values the graph observation's own mask allows, per station."""
        if not isinstance(self.qf, StationNet):
            return super().random_actions(obs, n)
        allowed = self.qf.blocks(obs.flatten(1))[2].float()
        return torch.multinomial(allowed.view(-1, allowed.shape[-1]), 1).view(n, -1)

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        out = {QF: self.heads(batch[Columns.OBS])}
        if Columns.NEXT_OBS in batch:
            out[QF_NEXT] = self.heads(batch[Columns.NEXT_OBS])
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
