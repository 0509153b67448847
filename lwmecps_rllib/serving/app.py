"""The Serve deployment of a :class:`PlacementPolicy` and the app builder.

* :class:`PlacementService` is the Serve deployment around it (FastAPI ingress):
  `POST /v1/placement`, `POST /v1/placement:batch`, `GET /v1/model`, `GET /healthz`;
  requests are batched into one forward pass (`@serve.batch`). A new model rolls out
  through `user_config` (`reconfigure`) without dropping requests; every answer names
  the model that made it.
* :func:`app_builder` builds the application from typed arguments (`serve/config.yaml`).

Bad input gets a 4xx naming the field: 413 for a body over `max_body_bytes`, 422 for
anything else.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lwmecps_rllib.serving.policy import PlacementPolicy
from lwmecps_rllib.serving.schema import (
    MAX_BODY_BYTES,
    BatchRequest,
    BatchResponse,
    PlacementRequest,
    PlacementResponse,
    RequestError,
    ServeArgs,
)


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
            self.args = ServeArgs.parse(args)
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
    from lwmecps_rllib.model_registry import registry_location

    a = ServeArgs.parse(args)
    a = a.model_copy(update={"registry": registry_location(a.registry or None)})
    if Path(a.model).is_dir():
        a = a.model_copy(update={"model": str(Path(a.model).resolve())})
    return _deployment().bind(a.model_dump())
