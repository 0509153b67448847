"""The controller's settings: which policy, which fallback rule, how often, what it may do.

Plain data, checked on construction (errors name the option and the allowed values);
nothing here connects anywhere.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from lwmecps_rllib.validation import Spec

MODES = ("shadow", "live")
FALLBACKS = ("hpa", "threshold", "none")


class ControlOptions(Spec):
    """What the controller runs (the command line's flags)."""

    error_prefix: ClassVar[str] = "control"

    policy_url: str | None = None
    """Base URL of the placement endpoint (`serve run serve/config.yaml`), e.g.
    `http://127.0.0.1:8000`."""
    model: str | None = None
    """A model loaded in process instead: a checkpoint folder, a registry id or a stage."""
    registry: str | None = None
    """Registry of `model` (default runs/models/registry.sqlite)."""
    scenario: str = "testbed-4bs"
    """The cluster's scenario (names, capacities; the policy must be trained on it)."""
    mode: Literal["shadow", "live"] = "shadow"
    """`shadow`: decide and log, apply nothing; `live`: apply through the guard rails."""
    fallback: Literal["hpa", "threshold", "none"] = "hpa"
    """The rule deciding when the policy cannot (`none`: leave the cluster as it is)."""
    period_s: float | None = Field(None, gt=0)
    """Seconds between decisions (default: the scenario's step, `stabilization_time_s`)."""
    timeout_s: float = Field(2.0, gt=0)
    """How long to wait for the policy's answer over HTTP."""
    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus `/metrics` and `/healthz` server."""
    metrics_port: int | None = Field(9108, ge=0, le=65535)
    """Its port (0: a free one; None: no server)."""
    decision_log: str | None = None
    """JSON-lines file of every period's decision (None: standard output)."""
    periods: int | None = Field(None, ge=1)
    """Stop after this many periods (None: until SIGTERM or SIGINT)."""

    @model_validator(mode="after")
    def _one_policy(self) -> ControlOptions:
        if (self.policy_url is None) == (self.model is None):
            raise ValueError("give exactly one of policy_url (the Serve endpoint) or model "
                             "(loaded in process)")
        if self.policy_url is not None and not self.policy_url.startswith(("http://",
                                                                          "https://")):
            raise ValueError(f"policy_url must start with http:// or https://, got "
                             f"{self.policy_url!r}")
        return self
