"""A new algorithm for lwmecps_rllib in one module: vanilla policy gradient (REINFORCE).

Register it, then use it by name everywhere (train, tune, the agent facade):

    from lwmecps_rllib.algorithms import register_algorithm
    from my_vpg import VPG
    register_algorithm("my-vpg", VPG)

    python -m lwmecps_rllib.train --algo my-vpg ...   (after the import above, e.g. in a plugin)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.connectors.learner import ComputeReturnsToGo
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, LEARNER_RESULTS

from lwmecps_rllib.algorithms.config_base import LWMECPSAlgorithmConfig
from lwmecps_rllib.algorithms.networks import action_dims, mlp


class VPGModule(TorchRLModule):
    """Policy MLP; one categorical per action dimension."""

    @override(TorchRLModule)
    def setup(self) -> None:
        dims = action_dims(self.action_space)
        self.pi = mlp(int(np.prod(self.observation_space.shape)), [64], sum(dims))
        self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=dims)

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(batch[Columns.OBS])}


class VPGLearner(TorchLearner):
    """Loss: minus log-probability times the (scaled) return-to-go."""

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        self._learner_connector.prepend(ComputeReturnsToGo(gamma=self.config.gamma))

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self.module[module_id]
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        returns = batch[Columns.RETURNS_TO_GO] * 0.01
        returns = returns - returns.mean()
        return -torch.mean(dist.logp(batch[Columns.ACTIONS]) * returns)


class VPGConfig(LWMECPSAlgorithmConfig):
    """VPG settings: the common ones (`learning_rate`, `discount_factor`) are enough."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or VPG)
        self.lr = 1e-3
        self.batch_mode = "complete_episodes"
        self.train_batch_size_per_learner = 512

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=VPGModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        return VPGLearner


class VPG(Algorithm):
    """Sample complete episodes, one gradient step, sync weights."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> VPGConfig:
        return VPGConfig()

    @override(Algorithm)
    def training_step(self) -> None:
        episodes, metrics = synchronous_parallel_sample(
            worker_set=self.env_runner_group, max_env_steps=self.config.total_train_batch_size,
            _uses_new_env_runners=True, _return_metrics=True)
        self.metrics.aggregate(metrics, key=ENV_RUNNER_RESULTS)
        results = self.learner_group.update(episodes=episodes)
        self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                           inference_only=True)
