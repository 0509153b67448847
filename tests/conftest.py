"""Shared fixtures. Unit tests need no Ray; integration tests are marked `integration`."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "offline")

SCENARIOS = ("testbed-4bs", "testbed-4bs-peak", "metro-16", "city-64")


@pytest.fixture(params=SCENARIOS)
def scenario_name(request: pytest.FixtureRequest) -> str:
    """Every shipped scenario."""
    return request.param


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all integration tests of the session (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
