"""Backends: the simulator and (later) a real Kubernetes cluster behind one interface."""

from lwmecps_rllib.backends.base import Backend, BackendError, GuardRailError
from lwmecps_rllib.backends.sim import SimBackend

__all__ = ["Backend", "BackendError", "GuardRailError", "SimBackend"]
