"""PPO for LWMECPS: config with fluent setters and the algorithm's training step."""

from __future__ import annotations

from typing import Any

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

from lwmecps_rllib.algorithms.config_base import (
    LWMECPSAlgorithmConfig,
    check_param,
    known_action_mask,
    known_graph,
)


class PPOConfig(LWMECPSAlgorithmConfig):
    """Proximal Policy Optimisation (clipped surrogate, GAE, entropy bonus, minibatch epochs).

    Example:
        >>> config = (PPOConfig().environment("LWMECPSEnv3")
        ...           .training(learning_rate=3e-4, discount_factor=0.99, epsilon=0.2))
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or PPO)
        self.lr = 3e-4
        """Adam step size (`learning_rate`)."""
        self.gamma = 0.99
        """Discount (`discount_factor`)."""
        self.lambda_ = 0.95
        """GAE lambda."""
        self.clip_param = 0.2
        """Surrogate clip range; `epsilon` in the reference's terms."""
        self.epsilon = 0.2
        self.vf_loss_coeff = 0.5
        """Weight of the value loss."""
        self.vf_clip_param = 1e4
        """Clip of the squared value error."""
        self.entropy_coeff = 0.01
        """Weight of the entropy bonus."""
        self.train_batch_size_per_learner = 2048
        """Env steps per training iteration."""
        self.rollout_fragment_length = "auto"
        """Steps per env and sample; `"auto"`: one sample is exactly the train batch."""
        self.minibatch_size = 256
        """SGD minibatch size."""
        self.num_epochs = 8
        """Passes over each batch."""
        self.grad_clip = 0.5
        """Global gradient-norm clip."""
        self.reward_scale = 0.01
        """Rewards are multiplied by this before GAE (keeps values of order one)."""
        self._model_config = {"hidden": [128, 128]}

    @override(LWMECPSAlgorithmConfig)
    def _set_epsilon(self, value: float) -> None:
        check_param("epsilon", value, 0.0, 1.0, low_open=True)
        self.epsilon = self.clip_param = float(value)

    @override(LWMECPSAlgorithmConfig)
    def training(self, *, lambda_: float = NotProvided, clip_param: float = NotProvided,
                 vf_loss_coeff: float = NotProvided, vf_clip_param: float = NotProvided,
                 entropy_coeff: float = NotProvided, reward_scale: float = NotProvided,
                 **kwargs: Any) -> PPOConfig:
        """PPO settings plus the common ones (`learning_rate`, `discount_factor`, `epsilon`)."""
        super().training(**kwargs)
        if lambda_ is not NotProvided:
            check_param("lambda_", lambda_, 0.0, 1.0)
            self.lambda_ = lambda_
        if clip_param is not NotProvided:
            self._set_epsilon(clip_param)
        if vf_loss_coeff is not NotProvided:
            check_param("vf_loss_coeff", vf_loss_coeff, 0.0)
            self.vf_loss_coeff = vf_loss_coeff
        if vf_clip_param is not NotProvided:
            check_param("vf_clip_param", vf_clip_param, 0.0, low_open=True)
            self.vf_clip_param = vf_clip_param
        if reward_scale is not NotProvided:
            check_param("reward_scale", reward_scale, 0.0, low_open=True)
            self.reward_scale = float(reward_scale)
        if entropy_coeff is not NotProvided:
            check_param("entropy_coeff", entropy_coeff, 0.0)
            self.entropy_coeff = entropy_coeff
        return self

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {"head_features": self.head_features(default="global"),
                "action_mask": known_action_mask(self), "graph": known_graph(self)}

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from lwmecps_rllib.algorithms.ppo.module import PPOModule

        return RLModuleSpec(module_class=PPOModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from lwmecps_rllib.algorithms.ppo.learner import PPOLearner

        return PPOLearner


class PPO(Algorithm):
    """Sample a batch, run minibatch epochs of the PPO loss, sync weights to the runners."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> PPOConfig:
        return PPOConfig()

    @override(Algorithm)
    def training_step(self) -> None:
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_metrics = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=self.config.total_train_batch_size,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        if not episodes:
            return
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME))},
                num_epochs=self.config.num_epochs,
                minibatch_size=self.config.minibatch_size,
                shuffle_batch_per_epoch=True,
            )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True)
