"""Tabular Q-learning for LWMECPS: config with fluent setters and the online training step."""

from __future__ import annotations

from typing import Any, ClassVar

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from lwmecps_rllib.algorithms.config_base import FactorisedQConfig, check_param


class QLearningConfig(FactorisedQConfig):
    """Tabular Q-learning with epsilon-greedy exploration over a discretised observation.

    Example:
        >>> config = (QLearningConfig().environment("LWMECPSEnv3")
        ...           .training(learning_rate=0.1, discount_factor=0.9, epsilon=0.05, bins=10))
    """

    max_learners: ClassVar[int | None] = 1
    """One learner: its SGD step is the exact tabular update only over the whole batch
    (DDP would average each entry's update with the other learners' zero gradients)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or QLearning)
        self.lr = 0.1
        """Tabular step size (`learning_rate`)."""
        self.gamma = 0.9
        """Discount (`discount_factor`)."""
        self.epsilon = 0.05
        """Final exploration rate (`epsilon`)."""
        self.bins = 10
        """Bins per observation feature."""
        self.table_size = 16384
        """Rows of the Q-table (exact up to `bins^features`, else hashed)."""
        self.rollout_fragment_length = 32
        """Env steps sampled per runner env per iteration; each is learned from once."""
        self.train_batch_size_per_learner = 32
        self.grad_clip = None

    @override(FactorisedQConfig)
    def training(self, *, bins: int = NotProvided, table_size: int = NotProvided,
                 **kwargs: Any) -> QLearningConfig:
        """Q-learning settings plus the common ones (the exploration schedule,
        `reward_scale`, `action_costs`, and `views`: local by default, so each
        deployment's head looks up its own features in one shared table)."""
        super().training(**kwargs)
        for name, value in (("bins", bins), ("table_size", table_size)):
            if value is not NotProvided:
                check_param(name, value, 1, integer=True)
                setattr(self, name, int(value))
        return self

    @property
    @override(FactorisedQConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        if (self.env_config or {}).get("obs_format") == "graph":
            raise ValueError("obs_format='graph' (one policy for any cluster size) is for "
                             "the network algorithms (ppo, dqn), not the Q-table of qlearning")
        return {**super()._model_config_auto_includes,
                "bins": self.bins, "table_size": self.table_size}

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from lwmecps_rllib.algorithms.qlearning.module import QTableModule

        return RLModuleSpec(module_class=QTableModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from lwmecps_rllib.algorithms.qlearning.learner import QLearningLearner

        return QLearningLearner


class QLearning(Algorithm):
    """Sample a fragment with epsilon-greedy actions, one tabular update on it, sync."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> QLearningConfig:
        return QLearningConfig()

    @override(Algorithm)
    def training_step(self) -> None:
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_metrics = synchronous_parallel_sample(
                worker_set=self.env_runner_group, concat=True,
                sample_timeout_s=self.config.sample_timeout_s, _uses_new_env_runners=True,
                _return_metrics=True)
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            results = self.learner_group.update(
                episodes=episodes,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME))})
        self.metrics.aggregate(results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True)
