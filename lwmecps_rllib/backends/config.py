"""The Kubernetes backend's settings (`backend_config`): what it manages and how it waits.

Plain data, checked on construction; nothing here imports or contacts Kubernetes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from lwmecps_rllib.validation import Spec

METRICS_TYPES = ("loadgen", "prometheus")


class KubernetesConfig(Spec):
    """What the backend manages and how it waits (`backend_config`; errors name the key)."""

    error_prefix: ClassVar[str] = "backend_config"

    namespace: str = "lwmecps-testapp"
    """The only namespace touched."""
    deployments: dict[str, str] = Field(default_factory=dict)
    """Scenario deployment name -> Deployment name in the cluster (default: the same)."""
    nodes: dict[str, str] = Field(default_factory=dict)
    """Scenario node name -> Kubernetes node name (default: the same)."""
    min_replicas: int = Field(0, ge=0)
    """Lowest replica count ever sent."""
    max_replicas: int | None = Field(None, ge=0)
    """Highest replica count ever sent (default: the scenario's `max_replicas`)."""
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
