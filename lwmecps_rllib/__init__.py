"""lwmecps_rllib: train, tune and serve RL policies for edge (MEC) Kubernetes clusters."""

__version__ = "0.1.0"
