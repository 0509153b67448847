"""The envs' names and where they live: what gymnasium registration needs, and no more.

Importing this module (as `import lwmecps_rllib` does) loads no env, no numba and no Ray.
"""

from __future__ import annotations

#: The envs, by their reference names.
ENV_NAMES = ("LWMECPSEnv", "LWMECPSEnv2", "LWMECPSEnv3")
#: Module of each env class.
ENV_MODULES = {"LWMECPSEnv": "lwmecps_rllib.envs.lwmecps_env",
               "LWMECPSEnv2": "lwmecps_rllib.envs.lwmecps_env2",
               "LWMECPSEnv3": "lwmecps_rllib.envs.lwmecps_env3"}
#: Envs with a native batched form: gymnasium's `vector_entry_point`.
VECTOR_ENTRY_POINTS = {"LWMECPSEnv3": "lwmecps_rllib.envs.vector:LWMECPSEnv3Vector"}


def register_gym_envs() -> None:
    """Register the envs with gymnasium (`gym.make("LWMECPSEnv3", ...)`), once."""
    import gymnasium as gym

    for name in ENV_NAMES:
        if name not in gym.registry:
            gym.register(name, entry_point=f"{ENV_MODULES[name]}:{name}",
                         vector_entry_point=VECTOR_ENTRY_POINTS.get(name))
