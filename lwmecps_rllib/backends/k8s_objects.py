"""The fields of Kubernetes objects the backend uses, parsed from the API's JSON.

The backend asks the official client for the raw answer (`_preload_content=False`) and
parses only these fields: the client's model classes (every field of a Deployment, its
pod template and containers, validated) cost most of a control period's CPU on a
64-station cluster. Absent fields read as the client's models read them (None, here 0 or
Kubernetes' defaults).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lwmecps_rllib.backends.base import BackendError

HOSTNAME_LABEL = "kubernetes.io/hostname"


def parse_json(what: str, data: bytes) -> dict[str, Any]:
    """The JSON object of an API answer (a clear error for anything else)."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise BackendError(f"{what}: the Kubernetes API answered no JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise BackendError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _map(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`obj[k1][k2]...`, `{}` where a level is absent or null."""
    for k in keys:
        obj = obj.get(k) or {}
    return obj


@dataclass(frozen=True)
class Deployment:
    """A Deployment's spec and status, as far as the backend reads them."""

    name: str
    generation: int
    replicas: int
    """What its spec asks for (Kubernetes' default: 1)."""
    node: str | None
    """The node its pod template selects by hostname (None: none)."""
    match_labels: dict[str, str]
    ready_replicas: int
    status_replicas: int
    updated_replicas: int
    observed_generation: int

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Deployment:
        """From the API's JSON of a Deployment."""
        meta, spec, status = _map(obj, "metadata"), _map(obj, "spec"), _map(obj, "status")
        n = spec.get("replicas")
        return cls(name=meta.get("name") or "", generation=int(meta.get("generation") or 0),
                   replicas=1 if n is None else int(n),
                   node=_map(spec, "template", "spec", "nodeSelector").get(HOSTNAME_LABEL),
                   match_labels=dict(_map(spec, "selector", "matchLabels")),
                   ready_replicas=int(status.get("readyReplicas") or 0),
                   status_replicas=int(status.get("replicas") or 0),
                   updated_replicas=int(status.get("updatedReplicas") or 0),
                   observed_generation=int(status.get("observedGeneration") or 0))


def ready_pod_nodes(pod_list: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """Nodes of the ready pods of a PodList's JSON that carry all of `labels`."""
    nodes = []
    for pod in pod_list.get("items") or []:
        own = _map(pod, "metadata", "labels")
        if any(own.get(k) != v for k, v in labels.items()):
            continue  # the server should have filtered; never trust another's pod
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in _map(pod, "status").get("conditions") or [])
        node = _map(pod, "spec").get("nodeName")
        if ready and node:
            nodes.append(node)
    return nodes


def node_info(node_list: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Capacity, allocatable and labels of each node of a NodeList's JSON, by name."""
    return {_map(n, "metadata").get("name"): {
        "capacity": dict(_map(n, "status", "capacity")),
        "allocatable": dict(_map(n, "status", "allocatable")),
        "labels": dict(_map(n, "metadata", "labels"))} for n in node_list.get("items") or []}
