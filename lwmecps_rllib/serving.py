"""Placement decisions over HTTP: a policy object, its Ray Serve deployment, the app builder.

* :class:`PlacementPolicy` turns a cluster state (JSON, in the env's terms) into a
  decision with a trained checkpoint; it needs no Serve:

      policy = PlacementPolicy.load("production")               # from the model registry
      policy.decide([PlacementRequest(**body)])

* :class:`PlacementService` is the Serve deployment around it (FastAPI ingress):
  `POST /v1/placement`, `POST /v1/placement:batch`, `GET /v1/model`, `GET /healthz`;
  requests are batched into one forward pass (`@serve.batch`). A new model rolls out
  through `user_config` (`reconfigure`) without dropping requests; every answer names
  the model that made it.
* :func:`app_builder` builds the application from typed arguments (`serve/config.yaml`).

The request carries the cluster in the env's observation terms: nodes (capacity, usage,
the latency of the requests each answered), deployments (replicas, ready replicas, node),
users per station, time of day. For LWMECPSEnv3 the answer is the replica count of each
deployment; for LWMECPSEnv/LWMECPSEnv2 the node of each deployment. Bad input gets a 4xx
naming the field: 413 for a body over `max_body_bytes`, 422 for anything else.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lwmecps_rllib.envs import ENV_NAMES

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


# --------------------------------------------------------------------------- request/response

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
    time_of_day_s: float = Field(0.0, ge=0, lt=DAY_S, description="Seconds since midnight.")


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


# --------------------------------------------------------------------------- the policy


def _users_array(req: PlacementRequest, stations: list[str], max_users: float) -> np.ndarray:
    unknown = sorted(set(req.users) - set(stations))
    if unknown:
        raise RequestError(f"users.{unknown[0]}", f"unknown station; the model knows {stations}")
    missing = [s for s in stations if s not in req.users]
    if missing:
        raise RequestError("users", f"missing station {missing[0]!r}; give all of {stations}")
    out = np.empty(len(stations), np.float32)
    for i, s in enumerate(stations):
        v = req.users[s]
        if v < 0:
            raise RequestError(f"users.{s}", f"must be >= 0, got {v}")
        out[i] = min(v / max_users, 1.0)
    return out


def _index(items: list[Any], names: list[str], what: str) -> list[int]:
    """Position in `names` of each item's name; errors name the item."""
    if len(items) != len(names):
        raise RequestError(what, f"the model was trained for {len(names)} {what}, "
                                 f"got {len(items)}")
    pos = {n: i for i, n in enumerate(names)}
    seen: set[str] = set()
    out = []
    for k, item in enumerate(items):
        if item.name not in pos:
            raise RequestError(f"{what}[{k}].name", f"unknown {what[:-1]} {item.name!r}; "
                                                    f"the model knows {names}")
        if item.name in seen:
            raise RequestError(f"{what}[{k}].name", f"duplicate {what[:-1]} {item.name!r}")
        seen.add(item.name)
        out.append(pos[item.name])
    return out


class PlacementPolicy:
    """A trained checkpoint answering placement requests (no Serve needed).

    Args:
        module: The trained RLModule.
        env: Env it was trained on (`LWMECPSEnv3`, `LWMECPSEnv`, `LWMECPSEnv2`).
        scenario: Scenario name or path (node, deployment and station names, scales).
        model_id: Id reported with every decision.
        info: What `GET /v1/model` shows.
    """

    def __init__(self, module: Any, env: str, scenario: str, model_id: str,
                 info: dict[str, Any] | None = None) -> None:
        from lwmecps_rllib.envs import make_env

        if env not in ENV_NAMES:
            raise ValueError(f"env must be one of {list(ENV_NAMES)}, got {env!r}")
        self.module = module
        self.env_name = env
        self.model_id = model_id
        self.info = {"model_id": model_id, "env": env, "scenario": scenario, **(info or {})}
        e = make_env(env, {"scenario": scenario})
        self.spec = e.unwrapped.spec_
        self.sc = e.unwrapped.scenario
        self.obs_dim = int(e.observation_space.shape[0])
        e.close()
        self.pinned = env == "LWMECPSEnv3"
        self.node_names = list(self.sc.node_names)
        self.dep_names = list(self.sc.deployment_names[: self.spec.n_deployments])
        self.stations = [s.name for s in self.sc.stations]
        self._cap = np.array([[n.cpu, n.ram_mb, n.tx_mbps, n.rx_mbps, n.disk_read_mbps,
                               n.disk_write_mbps] for n in self.sc.nodes], np.float64)
        self._cap_max = self._cap.max(axis=0)
        self._pod_use = np.array([self.sc.pod.cpu_request, self.sc.pod.ram_request_mb,
                                  self.sc.pod.tx_usage_mbps, self.sc.pod.rx_usage_mbps,
                                  self.sc.pod.disk_read_usage_mbps,
                                  self.sc.pod.disk_write_usage_mbps])
        probe = np.zeros((1, self.obs_dim), np.float32)
        try:
            self.actions(probe)
        except RuntimeError as exc:
            raise ValueError(f"checkpoint {model_id!r} does not take {env} observations of "
                             f"scenario {scenario!r} ({self.obs_dim} values): {exc}") from exc

    # -- loading

    @classmethod
    def from_checkpoint(cls, path: str | Path, env: str = "LWMECPSEnv3",
                        scenario: str = "testbed-4bs", model_id: str | None = None,
                        info: dict[str, Any] | None = None) -> "PlacementPolicy":
        """A policy from an algorithm (or module) checkpoint folder."""
        from lwmecps_rllib.algorithms.inference import load_module

        module = load_module(path)
        return cls(module, env, scenario, model_id or f"checkpoint:{Path(path).name}",
                   {"checkpoint": str(path), **(info or {})})

    @classmethod
    def load(cls, model: str, registry: str | Path | None = None, env: str | None = None,
             scenario: str | None = None) -> "PlacementPolicy":
        """A checkpoint path, or a registry model id or stage (`production`, `candidate`).

        Raises:
            ValueError: when neither resolves (the message says what was tried).
        """
        from lwmecps_rllib.model_registry import ModelRegistry, RegistryError

        if Path(model).is_dir():
            return cls.from_checkpoint(model, env or "LWMECPSEnv3", scenario or "testbed-4bs")
        reg = ModelRegistry(registry)
        try:
            rec = reg.get(model)
            path = reg.checkpoint_path(rec.id)
        except RegistryError as exc:
            raise ValueError(f"model {model!r} is neither a checkpoint folder nor usable in "
                             f"the registry: {exc}") from exc
        info = {"algorithm": rec.algorithm, "stage": rec.stage, "metrics": rec.metrics,
                "config": rec.config, "created_at": rec.created_at}
        return cls.from_checkpoint(path, rec.env, rec.scenario, rec.id, info)

    # -- encoding

    def encode(self, req: PlacementRequest) -> np.ndarray:
        """The env's flat observation for a request (raises RequestError naming the field)."""
        node_pos = _index(req.nodes, self.node_names, "nodes")
        dep_pos = _index(req.deployments, self.dep_names, "deployments")
        users = _users_array(req, self.stations, float(self.sc.max_users))
        n = len(self.node_names)
        cap = self._cap.copy()
        latency = np.zeros(n)
        for k, node in enumerate(req.nodes):
            i = node_pos[k]
            for j, field in enumerate(Resources.model_fields):
                v = getattr(node.capacity, field)
                if v is not None:
                    if v <= 0:
                        raise RequestError(f"nodes[{k}].capacity.{field}", f"must be > 0, got {v}")
                    cap[i, j] = v
            latency[i] = min(node.avg_latency_ms / self.sc.failed_latency_ms, 1.0)
        if self.pinned:
            return self._encode_env3(req, node_pos, dep_pos, cap, latency, users)
        return self._encode_placement(req, node_pos, dep_pos, cap, latency, users)

    def _encode_env3(self, req: PlacementRequest, node_pos: list[int], dep_pos: list[int],
                     cap: np.ndarray, latency: np.ndarray, users: np.ndarray) -> np.ndarray:
        max_pods = float(self.spec.max_pods)
        n, d = len(self.node_names), len(self.dep_names)
        replicas, ready = np.zeros(d), np.zeros(d)
        for k, dep in enumerate(req.deployments):
            if dep.node is not None:
                raise RequestError(f"deployments[{k}].node",
                                   "LWMECPSEnv3 deployments are pinned; leave node out")
            r = dep.replicas if dep.ready_replicas is None else dep.ready_replicas
            if r > dep.replicas:
                raise RequestError(f"deployments[{k}].ready_replicas",
                                   f"must be <= replicas ({dep.replicas}), got {r}")
            replicas[dep_pos[k]] = dep.replicas / max_pods
            ready[dep_pos[k]] = r / max_pods
        per_node = np.concatenate([np.minimum(cap[:, :4] / self._cap_max[:4], 1.0),
                                   latency[:, None]], axis=1).reshape(n * 5)
        phase = 2.0 * math.pi * req.time_of_day_s / DAY_S
        return np.concatenate([per_node, np.minimum(replicas, 1.0), np.minimum(ready, 1.0),
                               users, [math.sin(phase), math.cos(phase)]]).astype(np.float32)

    def _encode_placement(self, req: PlacementRequest, node_pos: list[int], dep_pos: list[int],
                          cap: np.ndarray, latency: np.ndarray, users: np.ndarray) -> np.ndarray:
        n, d = len(self.node_names), len(self.dep_names)
        name_to_node = {name: i for i, name in enumerate(self.node_names)}
        onehot = np.zeros((n, d))
        pods = np.zeros(n)
        for k, dep in enumerate(req.deployments):
            if dep.node is None:
                raise RequestError(f"deployments[{k}].node", "required: the node it runs on")
            if dep.node not in name_to_node:
                raise RequestError(f"deployments[{k}].node", f"unknown node {dep.node!r}; "
                                                            f"the model knows {self.node_names}")
            onehot[name_to_node[dep.node], dep_pos[k]] = 1.0
            pods[name_to_node[dep.node]] += dep.replicas
        used = pods[:, None] * self._pod_use[None, :]
        for k, node in enumerate(req.nodes):
            if node.usage is not None:
                i = node_pos[k]
                for j, field in enumerate(Resources.model_fields):
                    v = getattr(node.usage, field)
                    if v is not None:
                        used[i, j] = v
        free = np.clip(1.0 - used / cap, 0.0, 1.0)
        per_node = np.concatenate([free, latency[:, None], onehot], axis=1).reshape(-1)
        return np.concatenate([per_node, users]).astype(np.float32)

    # -- deciding

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions (B, D) for flat observations (B, obs_dim)."""
        from lwmecps_rllib.algorithms.inference import greedy_actions

        a = np.asarray(greedy_actions(self.module, obs))
        return a.reshape(len(obs), -1)

    def to_decisions(self, action: np.ndarray) -> list[Decision]:
        """The decision per deployment for one action."""
        if self.pinned:
            return [Decision(deployment=name, replicas=int(a))
                    for name, a in zip(self.dep_names, action, strict=True)]
        return [Decision(deployment=name, node=self.node_names[int(a)])
                for name, a in zip(self.dep_names, action, strict=True)]

    def decide(self, requests: list[PlacementRequest]) -> list[PlacementResponse]:
        """Decisions for many clusters in one forward pass."""
        t0 = time.perf_counter()
        obs = np.stack([self.encode(r) for r in requests])
        acts = self.actions(obs)
        ms = (time.perf_counter() - t0) * 1e3
        return [PlacementResponse(decisions=self.to_decisions(a), model_id=self.model_id,
                                  env=self.env_name, decision_time_ms=ms) for a in acts]


def request_from_env(env: Any) -> dict[str, Any]:
    """The request body describing an env's current cluster (what a client would send).

    The policy encodes it to exactly the env's own observation, which is what the tests
    and the load benchmark use it for.
    """
    from lwmecps_rllib.cluster import core

    u = env.unwrapped
    spec, sc, st, m = u.spec_, u.scenario, u.state, u.last
    t = st.slot * sc.slot_s
    ready = core.ready_counts(st, t)[0]
    node_lat = m.node_avg_latency_ms[0]
    nodes = []
    for i, node in enumerate(sc.nodes):
        nodes.append({"name": node.name, "avg_latency_ms": float(node_lat[i]),
                      "capacity": {"cpu": node.cpu, "ram_mb": node.ram_mb,
                                   "tx_mbps": node.tx_mbps, "rx_mbps": node.rx_mbps}})
    deps = []
    for d in range(spec.n_deployments):
        item: dict[str, Any] = {"name": sc.deployment_names[d],
                                "replicas": int(st.replicas[0, d])}
        if u.pinned:
            item["ready_replicas"] = int(ready[d])
        else:
            item["node"] = sc.node_names[int(st.node_of[0, d])]
        deps.append(item)
    users = {s.name: float(m.users[0, i]) for i, s in enumerate(sc.stations)}
    return {"nodes": nodes, "deployments": deps, "users": users,
            "time_of_day_s": float((st.slot[0] % sc.n_slots) * sc.slot_s)}


# --------------------------------------------------------------------------- Serve


class ServeArgs(BaseModel):
    """Arguments of the Serve application (`args:` in `serve/config.yaml`)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("production", description="Checkpoint folder, registry model id, or "
                                                 "registry stage (`production`, `candidate`).")
    registry: str | None = Field(None, description="Registry SQLite file (default "
                                                   "$LWMECPS_REGISTRY or "
                                                   "runs/models/registry.sqlite).")
    env: str = Field("LWMECPSEnv3", description="Env of a bare checkpoint folder.")
    scenario: str = Field("testbed-4bs", description="Scenario of a bare checkpoint folder.")
    max_body_bytes: int = Field(MAX_BODY_BYTES, gt=0, description="Largest request body.")
    max_batch_size: int = Field(64, ge=1, description="Requests per forward pass.")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="Wait for a fuller batch.")


def _error(status: int, field: str, message: str) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={
        "error": f"{field}: {message}" if field else message,
        "detail": [{"field": field, "message": message}]})


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _make_api() -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError

    api = FastAPI(title="lwmecps_rllib placement", version="1",
                  description="Replica counts (LWMECPSEnv3) or nodes (LWMECPSEnv, "
                              "LWMECPSEnv2) for the managed deployments of an edge cluster, "
                              "from a trained policy.")

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        errs = exc.errors()
        if not errs:
            return _error(422, "body", "invalid request")
        first = errs[0]
        field = _field(tuple(first.get("loc", ())))
        msg = first.get("msg", "invalid")
        if first.get("type") == "json_invalid":
            field, msg = "body", f"not valid JSON: {first.get('ctx', {}).get('error', msg)}"
        return _error(422, field, msg)

    @api.exception_handler(RequestError)
    async def _bad(request: Request, exc: RequestError) -> Any:
        return _error(422, exc.field, exc.message)

    @api.middleware("http")
    async def _limit(request: Request, call_next: Any) -> Any:
        limit = getattr(api.state, "max_body_bytes", MAX_BODY_BYTES)
        size = request.headers.get("content-length")
        if size is not None:
            if not size.isdigit():
                return _error(400, "content-length", f"not a number: {size!r}")
            if int(size) > limit:
                return _error(413, "body", f"{size} bytes is over the limit of {limit}")
        elif request.method == "POST":
            body = await request.body()
            if len(body) > limit:
                return _error(413, "body", f"{len(body)} bytes is over the limit of {limit}")
        return await call_next(request)

    return api


api = _make_api()


def _deployment() -> Any:
    from ray import serve

    @serve.deployment(name="PlacementService", max_ongoing_requests=128,
                      ray_actor_options={"num_cpus": 1})
    @serve.ingress(api)
    class PlacementService:
        """The Serve deployment: a :class:`PlacementPolicy`, batched, swappable."""

        def __init__(self, args: dict[str, Any]) -> None:
            import torch

            torch.set_num_threads(1)
            self.args = ServeArgs(**args)
            api.state.max_body_bytes = self.args.max_body_bytes
            self.policy = PlacementPolicy.load(self.args.model, self.args.registry,
                                               self.args.env, self.args.scenario)
            self._model_ref = self.args.model
            self._decide.set_max_batch_size(self.args.max_batch_size)
            self._decide.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)

        def reconfigure(self, user_config: dict[str, Any]) -> None:
            """Roll out `user_config["model"]` (and batching settings) in place.

            The new policy is loaded before it replaces the old one, so requests keep
            being answered (by the old model until the swap).
            """
            user_config = dict(user_config or {})
            unknown = sorted(set(user_config) - {"model", "max_batch_size",
                                                 "batch_wait_timeout_s"})
            if unknown:
                raise ValueError(f"unknown user_config key {unknown[0]!r}; allowed: "
                                 "model, max_batch_size, batch_wait_timeout_s")
            model = user_config.get("model") or self.args.model
            if model != self._model_ref:
                self.policy = PlacementPolicy.load(model, self.args.registry, self.args.env,
                                                   self.args.scenario)
                self._model_ref = model
            if "max_batch_size" in user_config:
                self._decide.set_max_batch_size(int(user_config["max_batch_size"]))
            if "batch_wait_timeout_s" in user_config:
                self._decide.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
        async def _decide(self, items: list[tuple[PlacementPolicy, np.ndarray]]
                          ) -> list[tuple[PlacementPolicy, np.ndarray]]:
            """One forward pass per policy over every queued observation."""
            out: list[Any] = [None] * len(items)
            groups: dict[int, list[int]] = {}
            for i, (pol, _) in enumerate(items):
                groups.setdefault(id(pol), []).append(i)
            for idx in groups.values():
                pol = items[idx[0]][0]
                acts = pol.actions(np.stack([items[i][1] for i in idx]))
                for i, a in zip(idx, acts, strict=True):
                    out[i] = (pol, a)
            return out

        async def _one(self, req: PlacementRequest) -> PlacementResponse:
            t0 = time.perf_counter()
            policy = self.policy
            obs = policy.encode(req)
            pol, action = await self._decide((policy, obs))
            return PlacementResponse(decisions=pol.to_decisions(action), model_id=pol.model_id,
                                     env=pol.env_name,
                                     decision_time_ms=(time.perf_counter() - t0) * 1e3)

        @api.post("/v1/placement", response_model=PlacementResponse,
                  response_model_exclude_none=True)
        async def placement(self, body: PlacementRequest) -> PlacementResponse:
            """The decision for one cluster."""
            return await self._one(body)

        @api.post("/v1/placement:batch", response_model=BatchResponse,
                  response_model_exclude_none=True)
        async def placement_batch(self, body: BatchRequest) -> BatchResponse:
            """Decisions for many clusters (one forward pass)."""
            policy = self.policy
            errors = []
            obs = []
            for k, req in enumerate(body.clusters):
                try:
                    obs.append(policy.encode(req))
                except RequestError as exc:
                    errors.append(RequestError(f"clusters[{k}].{exc.field}", exc.message))
            if errors:
                raise errors[0]
            t0 = time.perf_counter()
            acts = policy.actions(np.stack(obs))
            ms = (time.perf_counter() - t0) * 1e3
            return BatchResponse(results=[
                PlacementResponse(decisions=policy.to_decisions(a), model_id=policy.model_id,
                                  env=policy.env_name, decision_time_ms=ms) for a in acts])

        @api.get("/v1/model")
        async def model(self) -> dict[str, Any]:
            """The model answering now: id, algorithm, env, scenario, metrics, checkpoint."""
            return json.loads(json.dumps(self.policy.info, default=str))

        @api.get("/healthz")
        async def healthz(self) -> dict[str, Any]:
            """Liveness: the replica is up and has a model."""
            return {"status": "ok", "model_id": self.policy.model_id}

    return PlacementService


def app_builder(args: dict[str, Any] | ServeArgs) -> Any:
    """The Serve application (`import_path: lwmecps_rllib.serving:app_builder`).

    A relative registry or checkpoint path is resolved against the current folder here,
    where `serve run` / the builder runs, so replicas find it wherever they start.
    """
    a = args if isinstance(args, ServeArgs) else ServeArgs(**(args or {}))
    registry = a.registry or os.environ.get("LWMECPS_REGISTRY")
    if registry:
        a = a.model_copy(update={"registry": str(Path(registry).resolve())})
    else:
        from lwmecps_rllib.model_registry import default_registry_path

        a = a.model_copy(update={"registry": str(default_registry_path().resolve())})
    if Path(a.model).is_dir():
        a = a.model_copy(update={"model": str(Path(a.model).resolve())})
    return _deployment().bind(a.model_dump())
