"""Scenarios: the cluster, its stations, the server model and the user traces, as data."""

from lwmecps_rllib.scenarios.loader import (
    daily_shape,
    from_dict,
    list_scenarios,
    load_scenario,
    scenario_to_dict,
)
from lwmecps_rllib.scenarios.scenario import (
    NodeSpec,
    PodSpec,
    Scenario,
    ScenarioError,
    ServerModel,
    StationSpec,
)

__all__ = [
    "NodeSpec",
    "PodSpec",
    "Scenario",
    "ScenarioError",
    "ServerModel",
    "StationSpec",
    "daily_shape",
    "from_dict",
    "list_scenarios",
    "load_scenario",
    "scenario_to_dict",
]
