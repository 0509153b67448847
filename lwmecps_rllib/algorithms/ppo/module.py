"""PPO's RLModule: a policy MLP (one categorical per action dimension) and a value MLP."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import (
    TorchCategorical,
    TorchMultiCategorical,
)
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from lwmecps_rllib.algorithms.distributions import (
    allowed_values,
    mask_logits,
    sample_categoricals,
)
from lwmecps_rllib.algorithms.networks import action_dims, heads_mlp, hidden_sizes, value_net


class PPOModule(TorchRLModule, ValueFunctionAPI):
    """Separate policy and value networks over the flat observation.

    `model_config`: `hidden` (list of layer sizes, default `[128, 128]`). A
    MultiDiscrete action (replicas or node per deployment) is a product of independent
    categoricals, one per deployment, whose logits the policy net outputs side by side.
    When acting, the module draws the actions itself (and their log-probability, which
    the loss needs); training reads the logits through `action_dist_cls`.

    With `action_mask` (per head the values the env allows: a deployment's share of its
    node, or the nodes within their quota) the logits of the other values are masked: no
    joint action it samples or picks exceeds a node.

    With `head_features` (one list of observation indices per head, `views="local"`)
    the policy is one network shared by all heads: head `d` reads its own features
    followed by the whole observation and outputs its `nvec[d]` logits. What the policy
    learns at one deployment holds at every other.

    With `graph` (the env's `obs_format="graph"`) both are
    :class:`~lwmecps_rllib.algorithms.networks.StationNet`: one network per station row
    with pooled context, the same weights for any number of stations, masked by the
    observation's own `allowed` block.
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        obs_dim = int(np.prod(self.observation_space.shape))
        hidden = hidden_sizes(self.model_config)
        self._dims = action_dims(self.action_space)
        self._discrete = len(self._dims) == 1 and not self.action_space.shape
        self.pi = heads_mlp(self.model_config, self._dims, obs_dim, hidden)
        allowed = allowed_values(self._dims, self.model_config.get("action_mask"))
        self.register_buffer("_allowed", allowed, persistent=False)
        self.vf = value_net(self.model_config, obs_dim, hidden)
        if self._discrete:
            self.action_dist_cls = TorchCategorical
        else:
            self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(
                input_lens=self._dims)

    def set_heads(self, dims: list[int]) -> None:
        """Act with these action heads from now on (a station-shared module fitted to
        another cluster size; the graph observation carries its own mask)."""
        self._dims = list(dims)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, sum(nvec)) action logits, the heads side by side; the values `action_mask`
        forbids masked, so they are never sampled or picked."""
        return mask_logits(self.pi(obs.flatten(1)), self._allowed)

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.logits(batch[Columns.OBS])}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            actions, logp = sample_categoricals(self.logits(batch[Columns.OBS]),
                                                self._dims, self._discrete)
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp}

    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            actions, _ = sample_categoricals(self.logits(batch[Columns.OBS]),
                                             self._dims, self._discrete, greedy=True)
        return {Columns.ACTIONS: actions}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any],
                       embeddings: Any = None) -> torch.Tensor:
        return self.vf(batch[Columns.OBS].flatten(1)).squeeze(-1)
