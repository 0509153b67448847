"""PPO's loss: clipped surrogate, clipped value loss and an entropy bonus, on GAE advantages."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.connectors.learner import (
    AddOneTsToEpisodesAndTruncate,
    GeneralAdvantageEstimation,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override

from lwmecps_rllib.algorithms.connectors import ScaleRewards
from lwmecps_rllib.algorithms.distributions import categorical_logp_entropy


class PPOLearner(TorchLearner):
    """Computes the PPO loss of one module.

    The learner connector first adds one artificial timestep to every episode chunk
    (so the value net can bootstrap at truncation), scales rewards by `reward_scale`
    (values of order one), then computes GAE advantages and
    value targets with RLlib's `GeneralAdvantageEstimation`. The artificial steps are
    masked out of the loss.
    """

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.prepend(AddOneTsToEpisodesAndTruncate())
            self._learner_connector.append(ScaleRewards(scale=self.config.reward_scale))
            self._learner_connector.append(
                GeneralAdvantageEstimation(gamma=self.config.gamma, lambda_=self.config.lambda_))

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        mask = batch.get(Columns.LOSS_MASK)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return x[mask].mean() if mask is not None else x.mean()

        logp, entropy = categorical_logp_entropy(fwd_out[Columns.ACTION_DIST_INPUTS],
                                                 module._dims, batch[Columns.ACTIONS])
        ratio = torch.exp(logp - batch[Columns.ACTION_LOGP])
        adv = batch[Postprocessing.ADVANTAGES]
        clip = config.clip_param
        surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip, 1 + clip))
        values = module.compute_values(batch)
        vf_err = torch.pow(values - batch[Postprocessing.VALUE_TARGETS], 2.0)
        vf_loss = torch.clamp(vf_err, 0, config.vf_clip_param)
        total = mean(-surrogate + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy)
        with torch.no_grad():
            clipped = (torch.abs(ratio - 1.0) > clip).float()
            self.metrics.log_dict({
                "policy_loss": -mean(surrogate),
                "vf_loss": mean(vf_loss),
                "entropy": mean(entropy),
                "clip_fraction": mean(clipped),
            }, key=module_id, window=1)
        return total
