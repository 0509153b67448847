"""The pure-numpy cluster core shared by every env, backend, baseline and the oracle."""

from lwmecps_rllib.cluster.core import ClusterSpec, ClusterState, Measurement

__all__ = ["ClusterSpec", "ClusterState", "Measurement"]
