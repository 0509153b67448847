"""The Kubernetes backend's settings (`backend_config`): what it manages and how it waits.

Plain data, checked on construction; nothing here imports or contacts Kubernetes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from lwmecps_rllib.validation import Spec

METRICS_TYPES = ("loadgen", "prometheus")


class ScaleDownPolicy(Spec):
    """How far a deployment may scale down within a period (as an HPA behavior policy).

    `pods`: at most `value` pods fewer than at the period's start; `percent`: at most
    `value` percent fewer (rounded so that at least one pod may go).
    """

    type: Literal["pods", "percent"]
    """What `value` counts."""
    value: int = Field(ge=1)
    """Pods, or percent (1..100), per period."""
    period_s: float = Field(gt=0)
    """Length of the look-back window, seconds."""

    @model_validator(mode="after")
    def _percent(self) -> ScaleDownPolicy:
        if self.type == "percent" and self.value > 100:
            raise ValueError(f"value must be <= 100 for a percent policy, got {self.value}")
        return self


def _default_policies() -> list[ScaleDownPolicy]:
    return [ScaleDownPolicy(type="pods", value=1, period_s=60.0),
            ScaleDownPolicy(type="percent", value=50, period_s=60.0)]


class ScaleDownBehavior(Spec):
    """The scale-down rate limit (HPA's `behavior.scaleDown`, without its stabilisation
    window: the policy decides, not a metric).

    By default a deployment loses at most one pod or half its pods per minute, whichever
    is more.
    """

    policies: list[ScaleDownPolicy] = Field(default_factory=_default_policies)
    """The limits."""
    select: Literal["max", "min", "disabled"] = "max"
    """`max`: the policy allowing the largest change applies; `min`: the smallest;
    `disabled`: never scale down."""

    @field_validator("policies")
    @classmethod
    def _some(cls, v: list[ScaleDownPolicy]) -> list[ScaleDownPolicy]:
        if not v:
            raise ValueError("must list at least one policy (`select: disabled` stops "
                             "scaling down)")
        return v


class KubernetesConfig(Spec):
    """What the backend manages and how it waits (`backend_config`; errors name the key)."""

    error_prefix: ClassVar[str] = "backend_config"

    namespace: str = "lwmecps-testapp"
    """The only namespace touched."""
    deployments: dict[str, str] = Field(default_factory=dict)
    """Scenario deployment name -> Deployment name in the cluster (default: the same)."""
    nodes: dict[str, str] = Field(default_factory=dict)
    """Scenario node name -> Kubernetes node name (default: the same)."""
    min_replicas: int = Field(1, ge=0)
    """Lowest replica count ever sent (0 lets the agent take a station's service away)."""
    max_replicas: int | None = Field(None, ge=0)
    """Highest replica count ever sent (default: the scenario's `max_replicas`)."""
    scale_down: ScaleDownBehavior = Field(default_factory=ScaleDownBehavior)
    """The scale-down rate limit."""
    timezone: str = "UTC"
    """IANA time zone of the cluster's day (the slot is its local time of day)."""
    rollout_timeout_s: float = Field(30.0, ge=0)
    """How long to wait for ready replicas after a change."""
    poll_interval_s: float = Field(2.0, ge=0)
    """Poll period while waiting for a rollout."""
    stabilization_time_s: float = Field(10.0, ge=0)
    """Wait after the rollout before reading metrics."""
    request_timeout_s: float = Field(10.0, ge=0)
    """Timeout of each API request."""
    retries: int = Field(5, ge=0)
    """Retries of a transient API error."""
    backoff_s: float = Field(0.5, ge=0)
    """First retry delay (doubles each retry)."""
    backoff_max_s: float = Field(8.0, ge=0)
    """Longest retry delay."""
    dry_run: bool = False
    """Log the patches instead of sending them."""
    kubeconfig: str | None = None
    """Kubeconfig file (default: `$KUBECONFIG` or ~/.kube/config)."""
    context: str | None = None
    """Kubeconfig context."""
    in_cluster: bool = False
    """Use the pod's service account instead of a kubeconfig."""
    metrics: dict[str, Any] = Field(default_factory=lambda: {
        "type": "loadgen", "base_url": "http://127.0.0.1:8080"})
    """Metrics provider: `{type: loadgen, base_url}` or `{type: prometheus, url,
    latency_query, ...}` (see `lwmecps_rllib.backends.metrics`)."""

    @field_validator("metrics")
    @classmethod
    def _metrics_type(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type") not in METRICS_TYPES:
            raise ValueError(f"backend_config.metrics.type must be one of "
                             f"{list(METRICS_TYPES)}, got {v.get('type')!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"backend_config.timezone must be an IANA time zone name "
                             f"(e.g. 'Europe/Moscow', 'UTC'), got {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _bounds(self) -> KubernetesConfig:
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"backend_config.max_replicas must be >= min_replicas "
                             f"({self.min_replicas}), got {self.max_replicas}")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> KubernetesConfig:
        """Checked config from a mapping (same as :meth:`parse`)."""
        return cls.parse(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a backend config file holds)."""
        return self.model_dump()
