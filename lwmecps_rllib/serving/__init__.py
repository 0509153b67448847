"""Placement decisions over HTTP: the request schema, a policy object, its Ray Serve app.

* :mod:`~lwmecps_rllib.serving.schema`: request and response bodies, the app's arguments.
* :mod:`~lwmecps_rllib.serving.policy`: :class:`PlacementPolicy`, a trained checkpoint
  that encodes a request with the env's own encoder and decides (no Serve needed).
* :mod:`~lwmecps_rllib.serving.app`: the Serve deployment and `app_builder`
  (`import_path: lwmecps_rllib.serving:app_builder`).
"""

from lwmecps_rllib.serving.app import api, app_builder
from lwmecps_rllib.serving.policy import PlacementPolicy, request_from_env, request_from_view
from lwmecps_rllib.serving.schema import (
    DAY_S,
    MAX_BATCH_CLUSTERS,
    MAX_BODY_BYTES,
    BatchRequest,
    BatchResponse,
    Decision,
    DeploymentState,
    NodeState,
    PlacementRequest,
    PlacementResponse,
    RequestError,
    Resources,
    ServeArgs,
)

__all__ = [
    "DAY_S",
    "MAX_BATCH_CLUSTERS",
    "MAX_BODY_BYTES",
    "BatchRequest",
    "BatchResponse",
    "Decision",
    "DeploymentState",
    "NodeState",
    "PlacementPolicy",
    "PlacementRequest",
    "PlacementResponse",
    "RequestError",
    "Resources",
    "ServeArgs",
    "api",
    "app_builder",
    "request_from_env",
    "request_from_view",
]
