"""The placement API's request and response bodies, and the Serve app's arguments.

The request carries the cluster in the env's observation terms: nodes (capacity, usage,
the latency of the requests each answered), deployments (replicas, ready replicas, node),
users per station, time of day. For LWMECPSEnv3 the answer is the replica count of each
deployment; for LWMECPSEnv/LWMECPSEnv2 the node of each deployment.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from lwmecps_rllib.validation import Spec

DAY_S = 86400.0
#: Largest request body accepted (bytes) unless configured.
MAX_BODY_BYTES = 1 << 20
#: Most clusters in one `/v1/placement:batch` request.
MAX_BATCH_CLUSTERS = 1024


class RequestError(ValueError):
    """Input that does not fit the model; `field` names where (e.g. `nodes[2].name`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class Resources(BaseModel):
    """Amounts of node resources (capacity or usage). Omitted capacities are taken from
    the model's scenario for that node."""

    model_config = _STRICT
    cpu: float | None = Field(None, ge=0, description="CPU cores.")
    ram_mb: float | None = Field(None, ge=0, description="Memory, MB.")
    tx_mbps: float | None = Field(None, ge=0, description="Network out, Mbit/s.")
    rx_mbps: float | None = Field(None, ge=0, description="Network in, Mbit/s.")
    disk_read_mbps: float | None = Field(None, ge=0, description="Disk read, MB/s.")
    disk_write_mbps: float | None = Field(None, ge=0, description="Disk write, MB/s.")


class NodeState(BaseModel):
    """One node of the cluster."""

    model_config = _STRICT
    name: str = Field(min_length=1, max_length=253, description="Node name (as trained).")
    capacity: Resources = Field(default_factory=Resources, description="Allocatable.")
    usage: Resources | None = Field(None, description="In use now (placement envs; "
                                                      "LWMECPSEnv3 does not observe it).")
    avg_latency_ms: float = Field(0.0, ge=0, description="Mean latency of the requests "
                                                         "this node answered last step.")


class DeploymentState(BaseModel):
    """One managed deployment."""

    model_config = _STRICT
    name: str = Field(min_length=1, max_length=253, description="Deployment name.")
    replicas: int = Field(1, ge=0, le=10_000, description="Desired replicas now.")
    ready_replicas: int | None = Field(None, ge=0, le=10_000,
                                       description="Ready replicas (default: replicas).")
    node: str | None = Field(None, description="Node it runs on (placement envs).")


class PlacementRequest(BaseModel):
    """The state of one cluster."""

    model_config = _STRICT
    nodes: list[NodeState] = Field(min_length=1, max_length=4096)
    deployments: list[DeploymentState] = Field(min_length=1, max_length=4096)
    users: dict[str, float] = Field(description="Users per base station in the last slot.")
    users_history: dict[str, list[float]] | None = Field(
        None, description="Users per base station in the slots before `users`, oldest "
                          "first. Needed by models that observe the users' history: at "
                          "least their `history_slots` (`GET /v1/model`) values each; the "
                          "request stays stateless.")
    time_of_day_s: float = Field(0.0, ge=0, lt=DAY_S, description="Seconds since midnight.")
    scenario: str | None = Field(
        None, min_length=1, max_length=253,
        description="The cluster this request describes (a shipped scenario name, e.g. "
                    "`metro-16`; its nodes, deployments and stations are the names used "
                    "above). Default: the model's own. A size-general model (`GET "
                    "/v1/model`: `size_general`, `stations`) answers for any scenario whose "
                    "station count is in its range; others only for their own.")


class BatchRequest(BaseModel):
    """Many clusters at once."""

    model_config = _STRICT
    clusters: list[PlacementRequest] = Field(min_length=1, max_length=MAX_BATCH_CLUSTERS)


class Decision(BaseModel):
    """What one deployment should become."""

    deployment: str
    replicas: int | None = None
    node: str | None = None


class PlacementResponse(BaseModel):
    """The decision for one cluster and who made it."""

    decisions: list[Decision]
    model_id: str
    env: str
    decision_time_ms: float


class BatchResponse(BaseModel):
    """Decisions for every cluster of a batch request, in order."""

    results: list[PlacementResponse]


class ServeArgs(Spec):
    """Arguments of the Serve application (`args:` in `serve/config.yaml`); errors name
    the key as `args.<key>`."""

    error_prefix: ClassVar[str] = "args"
    model: str = Field("production", description="Checkpoint folder, registry model id, or "
                                                 "registry stage (`production`, `candidate`).")
    registry: str | None = Field(None, description="Registry SQLite file (default "
                                                   "$LWMECPS_REGISTRY or "
                                                   "runs/models/registry.sqlite).")
    env: Literal["LWMECPSEnv", "LWMECPSEnv2", "LWMECPSEnv3"] = Field(
        "LWMECPSEnv3", description="The app's env: a registry model of another env is "
                                   "refused; a bare checkpoint folder is taken as this env's.")
    scenario: str = Field("testbed-4bs", description="The app's scenario (as `env`).")
    max_body_bytes: int = Field(MAX_BODY_BYTES, gt=0, description="Largest request body.")
    max_batch_size: int = Field(64, ge=1, description="Requests per forward pass.")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="Wait for a fuller batch.")


class RolloutConfig(Spec):
    """The deployment's `user_config` (what a rollout changes in place); errors name the
    key as `user_config.<key>`."""

    error_prefix: ClassVar[str] = "user_config"
    model: str | None = Field(None, description="Model reference to serve: a registry model "
                                                "id, a stage (`production`, `candidate`) or "
                                                "a checkpoint folder (default: args.model).")
    revision: str | None = Field(None, description="Any label; changing it makes Serve roll "
                                                   "out again, so a stage is resolved anew "
                                                   "(e.g. the id just promoted).")
    max_batch_size: int | None = Field(None, ge=1, description="Requests per forward pass.")
    batch_wait_timeout_s: float | None = Field(None, ge=0,
                                               description="Wait for a fuller batch.")
