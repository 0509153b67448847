"""LWMECPSEnv2: place several server deployments on nodes."""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from lwmecps_rllib.envs.lwmecps_env import PlacementEnv
from lwmecps_rllib.spec import EnvOptions


class LWMECPSEnv2(PlacementEnv):
    """Place several edge server deployments on the cluster's nodes.

    ## Description

    LWMECPSEnv with `n_deployments` deployments of one pod each (default: one per
    station). Station `s` is served by deployment `s mod n_deployments`; the agent
    picks the node of every deployment. Latency, throttling and fail-over are those
    of the shared cluster core.

    ## Action Space

    `MultiDiscrete([n_nodes] * n_deployments)`: the node of each deployment.

    ## Observation Space

    `obs_format="box"` (default): `Box` in [0, 1] of size `n_nodes * (7 +
    n_deployments) + n_stations`: per node the free fraction of CPU, RAM, TX, RX,
    disk read and disk write, the latency of the requests it answered over
    `failed_latency_ms`, and which deployments run on it (one-hot); then users per
    station over the scenario's most. `obs_format="dict"`: as LWMECPSEnv.

    ## Rewards

    `-latency` as LWMECPSEnv; -100 for a placement that does not fit.

    ## Starting State

    Every deployment on its station's node, at a random slot of the day.

    ## Episode End

    Truncated after `episode_length` steps; never terminated.

    ## Arguments

    As LWMECPSEnv, plus `n_deployments` (1..n_stations).
    """

    default_obs_format = "box"
    has_n_deployments = True

    def __init__(self, options: EnvOptions | None = None, /, **fields: Any) -> None:
        super().__init__(options, **fields)
        self.action_space = spaces.MultiDiscrete([self.spec_.n_nodes] * self.spec_.n_deployments)
