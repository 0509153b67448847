"""DQN for LWMECPS: config with fluent setters and the replay-based training step."""

from __future__ import annotations

from typing import Any

import numpy as np
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
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer

from lwmecps_rllib.algorithms.config_base import FactorisedQConfig, check_flag, check_param


class DQNConfig(FactorisedQConfig):
    """Deep Q-learning with replay, a target network, epsilon-greedy and double Q.

    Example:
        >>> config = (DQNConfig().environment("LWMECPSEnv3")
        ...           .training(learning_rate=5e-4, discount_factor=0.95, epsilon=0.05))
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or DQN)
        self.lr = 5e-4
        """Adam step size (`learning_rate`)."""
        self.gamma = 0.95
        """Discount (`discount_factor`)."""
        self.epsilon = 0.05
        """Final exploration rate (`epsilon`)."""
        self.double_q = True
        """Pick next actions with the online net, value them with the target net."""
        self.replay_capacity = 50000
        """Transitions kept in the replay buffer."""
        self.learning_starts = 1000
        """Env steps before the first update."""
        self.target_network_update_freq = 1000
        """Env steps between target-network copies."""
        self.updates_per_iteration = 8
        """Gradient steps per training iteration."""
        self.train_batch_size_per_learner = 256
        """Transitions per gradient step."""
        self.rollout_fragment_length = 64
        """Env steps sampled per runner per iteration."""
        self.grad_clip = 10.0
        """Global gradient-norm clip."""
        self._model_config = {"hidden": [128, 128]}

    @override(FactorisedQConfig)
    def training(self, *, double_q: bool = NotProvided, replay_capacity: int = NotProvided,
                 learning_starts: int = NotProvided, target_network_update_freq: int = NotProvided,
                 updates_per_iteration: int = NotProvided, **kwargs: Any) -> DQNConfig:
        """DQN settings plus the common ones (`learning_rate`, `discount_factor`, `epsilon`,
        the exploration schedule, `reward_scale`, `action_costs`)."""
        super().training(**kwargs)
        if double_q is not NotProvided:
            self.double_q = check_flag("double_q", double_q)
        for name, value, low in (("replay_capacity", replay_capacity, 1),
                                 ("learning_starts", learning_starts, 0),
                                 ("target_network_update_freq", target_network_update_freq, 1),
                                 ("updates_per_iteration", updates_per_iteration, 1)):
            if value is not NotProvided:
                check_param(name, value, low, integer=True)
                setattr(self, name, int(value))
        return self

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from lwmecps_rllib.algorithms.dqn.module import DQNModule

        return RLModuleSpec(module_class=DQNModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from lwmecps_rllib.algorithms.dqn.learner import DQNLearner

        return DQNLearner


class DQN(Algorithm):
    """Sample, store in replay, then a few TD updates on replayed transitions."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> DQNConfig:
        return DQNConfig()

    @override(Algorithm)
    def setup(self, config: DQNConfig) -> None:
        super().setup(config)
        self.replay = EpisodeReplayBuffer(capacity=self.config.replay_capacity)
        # RLlib's buffer draws from an unseeded generator; seeded, a run is reproducible.
        self.replay.rng = np.random.default_rng(self.config.seed)

    @override(Algorithm)
    def training_step(self) -> None:
        cfg = self.config
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_metrics = synchronous_parallel_sample(
                worker_set=self.env_runner_group, concat=True,
                sample_timeout_s=cfg.sample_timeout_s, _uses_new_env_runners=True,
                _return_metrics=True)
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        self.replay.add(episodes)
        now = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        if now < cfg.learning_starts:
            return
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            for _ in range(cfg.updates_per_iteration):
                batch = self.replay.sample(num_items=cfg.total_train_batch_size, n_step=1,
                                           gamma=cfg.gamma, sample_episodes=True)
                results = self.learner_group.update(
                    episodes=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: now})
                self.metrics.aggregate(results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True)
