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

from lwmecps_rllib.algorithms.factorised_q import QF, QF_NEXT, picked_q
from lwmecps_rllib.algorithms.qlearning.module import Q_ROWS


class QLearningLearner(TorchLearner):
    """`Q(s,a) <- Q(s,a) + lr * (r + gamma * max_a' Q(s',a') - Q(s,a))` through SGD.

    With `Q(s,a) = mean_d Q_d(s, a_d)` and TD error `td = Q(s,a) - target` (target held
    fixed), the loss is the semi-gradient surrogate `sum_{i,d} Q_d(s_i, a_id) *
    td_i / n(i,d)`, where `n(i,d)` counts how often the table entry of sample `i`'s
    head `d` occurs in the batch. Its gradient on each touched entry is the mean TD
    error over the entry's occurrences, so one SGD step of size `lr` is exactly the
    tabular update with step `lr` — also when many samples (or, with a shared table,
    many heads) hit the same entry, which a summed squared error would over-step.
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
                                # lr (a value or an RLlib schedule) is set on registration
                                optimizer=torch.optim.SGD(params, lr=0.0),
                                params=params, lr_or_lr_schedule=config.lr)

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        heads = fwd_out[QF]
        module = self._module[module_id].unwrapped()
        picked = picked_q(heads, batch[Columns.ACTIONS])
        q_sa = picked.mean(-1) - module.known_cost(batch[Columns.ACTIONS])
        with torch.no_grad():
            best = module.best_actions(fwd_out[QF_NEXT])
            done = batch[Columns.TERMINATEDS].float()
            target = (batch[Columns.REWARDS] * config.reward_scale
                      + config.gamma * (1 - done) * module.q_value(fwd_out[QF_NEXT], best))
        td = q_sa - target
        entries = module.entry_ids(fwd_out[Q_ROWS], batch[Columns.ACTIONS])
        _, inverse, counts = torch.unique(entries, return_inverse=True, return_counts=True)
        weight = (td[:, None] / counts[inverse]).detach()
        loss = torch.sum(picked * weight)
        self.metrics.log_dict({"td_loss": 0.5 * (td.detach() ** 2).mean(),
                               "td_error_abs": td.detach().abs().mean(),
                               "q_mean": q_sa.detach().mean()}, key=module_id, window=1)
        return loss
