"""Q-learning's update: plain SGD on a summed TD loss, which is the tabular update."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.connectors.common.add_observations_from_episodes_to_batch import (
    AddObservationsFromEpisodesToBatch,
)
from ray.rllib.connectors.learner import AddNextObservationsFromEpisodesToTrainBatch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from lwmecps_rllib.algorithms.dqn.learner import joint_q
from lwmecps_rllib.algorithms.dqn.module import QF, QF_NEXT


class QLearningLearner(TorchLearner):
    """`Q(s,a) <- Q(s,a) + lr * (r + gamma * max_a' Q(s',a') - Q(s,a))` through SGD.

    The loss is `0.5 * n_heads * sum_batch (Q(s,a) - target)^2` with the target held
    fixed; with `Q(s,a) = mean_d Q[s,d,a_d]`, its gradient on each touched entry is the
    TD error, so one SGD step of size `lr` is exactly the tabular update with step `lr`
    (for a state-action that appears once in the batch).
    """

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.insert_after(AddObservationsFromEpisodesToBatch,
                                                 AddNextObservationsFromEpisodesToTrainBatch())

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        params = self.get_parameters(self._module[module_id])
        self.register_optimizer(module_id=module_id,
                                optimizer=torch.optim.SGD(params, lr=config.lr),
                                params=params, lr_or_lr_schedule=config.lr)

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        heads = fwd_out[QF]
        q_sa = joint_q(heads, batch[Columns.ACTIONS])
        with torch.no_grad():
            best = torch.stack([q.argmax(-1) for q in fwd_out[QF_NEXT]], -1)
            done = batch[Columns.TERMINATEDS].float()
            target = (batch[Columns.REWARDS] * config.reward_scale
                      + config.gamma * (1 - done) * joint_q(fwd_out[QF_NEXT], best))
        td = q_sa - target
        loss = 0.5 * len(heads) * torch.sum(td**2)
        self.metrics.log_dict({"td_loss": loss.detach() / max(1, td.shape[0]),
                               "td_error_abs": td.detach().abs().mean(),
                               "q_mean": q_sa.detach().mean()}, key=module_id, window=1)
        return loss
