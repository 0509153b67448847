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
