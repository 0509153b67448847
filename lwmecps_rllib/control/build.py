"""Assembling a controller from its options: the backend, the policy client, the
fallback rule, the metrics and the log. Nothing connects here; the first period does."""

from __future__ import annotations

import threading
from typing import Any

from lwmecps_rllib.backends.config import KubernetesConfig
from lwmecps_rllib.control.controller import Controller, interruptible_sleep
from lwmecps_rllib.control.decision_log import DecisionLog
from lwmecps_rllib.control.options import ControlOptions
from lwmecps_rllib.control.policies import HttpPolicy, LocalPolicy, PolicyClient
from lwmecps_rllib.control.telemetry import Telemetry


def make_policy(options: ControlOptions) -> PolicyClient:
    """The Serve endpoint (`policy_url`) or the model loaded in process (`model`)."""
    if options.policy_url is not None:
        return HttpPolicy(options.policy_url, options.timeout_s)
    return LocalPolicy.load(options.model, options.registry, options.scenario)


def make_fallback(name: str) -> Any:
    """The fallback rule by name (`hpa`, `threshold`), or None for `none`."""
    if name == "none":
        return None
    from lwmecps_rllib.baselines import make_baseline

    return make_baseline(name, "LWMECPSEnv3")


def period_of(options: ControlOptions, scenario: Any) -> float:
    """The control period: the option, else the scenario's step."""
    return options.period_s if options.period_s is not None else scenario.stabilization_time_s


def build_controller(options: ControlOptions, backend_config: KubernetesConfig,
                     stop: threading.Event, *, policy: PolicyClient | None = None,
                     api_client: Any = None, metrics: Any = None) -> Controller:
    """A controller for the options.

    Args:
        options: What to run.
        backend_config: The Kubernetes backend's config (`--backend-config`).
        stop: Set to stop (a retry's back-off ends at once).
        policy: A policy client (default: from the options).
        api_client: A Kubernetes `ApiClient` (default: the backend makes one on first use).
        metrics: A metrics provider (default: from `backend_config.metrics`).
    """
    from lwmecps_rllib.backends.kubernetes import KubernetesBackend
    from lwmecps_rllib.envs.lwmecps_env3 import LWMECPSEnv3
    from lwmecps_rllib.scenarios import load_scenario
    from lwmecps_rllib.spec import EnvOptions

    scenario = load_scenario(options.scenario)
    spec = LWMECPSEnv3.build_spec(scenario, EnvOptions(scenario=options.scenario))
    backend = KubernetesBackend(spec, scenario.trace("a"), backend_config,
                                api_client=api_client, metrics=metrics,
                                sleep=interruptible_sleep(stop))
    return Controller(backend, policy if policy is not None else make_policy(options),
                      make_fallback(options.fallback), options.mode,
                      Telemetry(period_of(options, scenario)), DecisionLog(options.decision_log))
