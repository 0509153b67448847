"""The gymnasium envs, registered under their reference names.

`import lwmecps_rllib` registers `LWMECPSEnv`, `LWMECPSEnv2` and `LWMECPSEnv3` with
gymnasium (LWMECPSEnv3 with its batched `vector_entry_point`) without loading them;
:func:`register_rllib_envs` registers the same names with RLlib's env registry. The
classes and helpers below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from lwmecps_rllib.envs.names import (
    ENV_MODULES,
    ENV_NAMES,
    VECTOR_ENTRY_POINTS,
    register_gym_envs,
)

_LAZY = {
    **ENV_MODULES,
    "LWMECPSEnv3Vector": "lwmecps_rllib.envs.vector",
    "ClusterEnv": "lwmecps_rllib.envs.base",
    "ObsLayout": "lwmecps_rllib.envs.layout",
    "action_mask": "lwmecps_rllib.envs.registration",
    "action_costs": "lwmecps_rllib.envs.registration",
    "env_class": "lwmecps_rllib.envs.registration",
    "env_options": "lwmecps_rllib.envs.registration",
    "graph_config": "lwmecps_rllib.envs.registration",
    "head_views": "lwmecps_rllib.envs.registration",
    "make_env": "lwmecps_rllib.envs.registration",
    "register_rllib_envs": "lwmecps_rllib.envs.registration",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_gym_envs()

__all__ = ["ENV_NAMES", "VECTOR_ENTRY_POINTS", *_LAZY, "register_gym_envs"]
