"""The envs as RLlib sees them: registered names, env runners, the batched entry point.

RLlib 2.60 has no single-agent `check_env` any more; the equivalent check is to let
RLlib's own `SingleAgentEnvRunner` build the env from its registered name and sample
from it with its default module and connectors.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ppo_config():
    from ray.rllib.algorithms.ppo import PPOConfig

    from lwmecps_rllib.envs import register_rllib_envs

    register_rllib_envs()
    return PPOConfig


@pytest.mark.parametrize("env_name", ["LWMECPSEnv", "LWMECPSEnv2", "LWMECPSEnv3"])
@pytest.mark.parametrize("scenario", ["testbed-4bs", "testbed-4bs-peak", "metro-16", "city-64"])
def test_rllib_env_runner_samples(ppo_config, env_name: str, scenario: str) -> None:
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    config = (ppo_config().environment(env_name, env_config={"scenario": scenario})
              .env_runners(num_env_runners=0, num_envs_per_env_runner=2))
    runner = SingleAgentEnvRunner(config=config)
    episodes = runner.sample(num_timesteps=12, random_actions=False)
    assert sum(len(e) for e in episodes) >= 12
    runner.stop()


def test_rllib_uses_the_batched_entry_point(ppo_config) -> None:
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from lwmecps_rllib.envs import LWMECPSEnv3Vector

    config = (ppo_config().environment("LWMECPSEnv3", env_config={"scenario": "testbed-4bs-peak"})
              .env_runners(num_env_runners=0, num_envs_per_env_runner=16,
                           gym_env_vectorize_mode="vector_entry_point"))
    runner = SingleAgentEnvRunner(config=config)
    assert isinstance(runner.env.unwrapped, LWMECPSEnv3Vector)
    episodes = runner.sample(num_timesteps=64, random_actions=True)
    assert sum(len(e) for e in episodes) >= 64
    runner.stop()
