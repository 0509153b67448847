"""Connector pieces our learners add to RLlib's pipelines."""

from __future__ import annotations

from typing import Any

from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override


class ScaleRewards(ConnectorV2):
    """Learner connector piece: multiply every module's batch rewards by `scale`.

    Args:
        input_observation_space: As for any `ConnectorV2`.
        input_action_space: As for any `ConnectorV2`.
        scale: The factor (PPO's `reward_scale`).
    """

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
