"""LWMECPSEnv2: place several server deployments on nodes."""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from lwmecps_rllib.envs.lwmecps_env import PlacementEnv
from lwmecps_rllib.scenarios import Scenario


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

    def __init__(self, scenario: str | Scenario = "testbed-4bs", trace: str = "a",
                 backend: Any = "sim", episode_length: int | None = None,
                 obs_format: str = "box", render_mode: str | None = None,
                 n_deployments: int | None = None,
                 backend_config: dict[str, Any] | None = None,
                 shuffle_stations: bool = False, load_jitter: float = 0.0) -> None:
        super().__init__(scenario, trace, backend, episode_length, obs_format, render_mode,
                         n_deployments=n_deployments, backend_config=backend_config,
                         shuffle_stations=shuffle_stations, load_jitter=load_jitter)
        self.action_space = spaces.MultiDiscrete([self.spec_.n_nodes] * self.spec_.n_deployments)
