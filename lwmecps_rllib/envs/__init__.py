"""The gymnasium envs, registered under their reference names.

`import lwmecps_rllib.envs` registers `LWMECPSEnv`, `LWMECPSEnv2` and `LWMECPSEnv3`
with gymnasium (LWMECPSEnv3 with its batched `vector_entry_point`);
:func:`register_rllib_envs` registers the same names with RLlib's env registry.
"""

import gymnasium as gym

from lwmecps_rllib.envs.lwmecps_env import LWMECPSEnv
from lwmecps_rllib.envs.lwmecps_env2 import LWMECPSEnv2
from lwmecps_rllib.envs.lwmecps_env3 import LWMECPSEnv3
from lwmecps_rllib.envs.registration import (
    ENV_NAMES,
    action_costs,
    head_views,
    make_env,
    register_rllib_envs,
)
from lwmecps_rllib.envs.vector import LWMECPSEnv3Vector

for _name in ENV_NAMES:
    if _name not in gym.registry:
        gym.register(
            _name,
            entry_point=f"lwmecps_rllib.envs:{_name}",
            vector_entry_point=("lwmecps_rllib.envs:LWMECPSEnv3Vector"
                                if _name == "LWMECPSEnv3" else None),
        )

__all__ = [
    "ENV_NAMES",
    "LWMECPSEnv",
    "LWMECPSEnv2",
    "LWMECPSEnv3",
    "LWMECPSEnv3Vector",
    "action_costs",
    "head_views",
    "make_env",
    "register_rllib_envs",
]
