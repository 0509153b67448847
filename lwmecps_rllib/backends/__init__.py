"""Backends: the simulator and a real Kubernetes cluster behind one interface (the
Kubernetes backend loads on use: `lwmecps_rllib.backends.kubernetes`)."""

from lwmecps_rllib.backends.base import Backend, BackendError, GuardRailError
from lwmecps_rllib.backends.sim import SimBackend

__all__ = ["Backend", "BackendError", "GuardRailError", "SimBackend"]
