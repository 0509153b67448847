"""lwmecps_rllib: train, tune and serve RL policies for edge (MEC) Kubernetes clusters.

Importing the package registers the envs with gymnasium (`gym.make("LWMECPSEnv3")`);
it imports neither Ray nor the envs themselves until they are used.
"""

from lwmecps_rllib.envs.names import register_gym_envs

register_gym_envs()

__version__ = "0.1.0"
