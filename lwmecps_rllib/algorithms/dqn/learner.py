"""DQN's loss: Huber TD error of the factorised Q, with a target network and double-Q option."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.connectors.common.add_observations_from_episodes_to_batch import (
    AddObservationsFromEpisodesToBatch,
)
from ray.rllib.connectors.learner import AddNextObservationsFromEpisodesToTrainBatch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.apis.target_network_api import TargetNetworkAPI
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from lwmecps_rllib.algorithms.factorised_q import QF, QF_NEXT, QF_NEXT_TARGET


class DQNLearner(TorchLearner):
    """TD learning on replayed transitions.

    Target: `r + gamma * (1 - terminated) * Q_target(s', a*)`, with `a*` the greedy action
    of the online network (double Q) or of the target network. `Q` and the greedy action
    are the module's (:meth:`FactorisedQModule.q_value`, `best_actions`): the mean of the
    heads (less the known action cost with `action_costs`), and the per-head (or joint)
    argmax. The target network is copied from the online one every
    `target_network_update_freq` env steps.
    """

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        self.module.foreach_module(
            lambda mid, mod: mod.make_target_networks()
            if isinstance(mod, TargetNetworkAPI) else None)
        self._last_target_update = 0
        if self._learner_connector is not None:
            self._learner_connector.insert_after(AddObservationsFromEpisodesToBatch,
                                                 AddNextObservationsFromEpisodesToTrainBatch())

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        q_sa = module.q_value(fwd_out[QF], batch[Columns.ACTIONS])
        with torch.no_grad():
            best = module.best_actions(fwd_out[QF_NEXT] if config.double_q
                                       else fwd_out[QF_NEXT_TARGET])
            q_next = module.q_value(fwd_out[QF_NEXT_TARGET], best)
            done = batch[Columns.TERMINATEDS].float()
            gamma_n = config.gamma ** batch.get("n_step", torch.ones_like(done))
            target = batch[Columns.REWARDS] * config.reward_scale + gamma_n * (1 - done) * q_next
        td = q_sa - target
        loss = torch.nn.functional.huber_loss(q_sa, target, reduction="mean")
        self.metrics.log_dict({"td_loss": loss.detach(), "q_mean": q_sa.detach().mean(),
                               "td_error_abs": td.detach().abs().mean()},
                              key=module_id, window=1)
        return loss

    @override(TorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        now = timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)
        if now - self._last_target_update >= self.config.target_network_update_freq:
            for mid, module in self.module._rl_modules.items():
                for main, target in module.unwrapped().get_target_network_pairs():
                    target.load_state_dict(main.state_dict())
                self.metrics.log_value((mid, "last_target_update_ts"), now, window=1)
            self._last_target_update = now
