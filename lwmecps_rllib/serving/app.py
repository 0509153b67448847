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
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lwmecps_rllib.serving.policy import PlacementPolicy, grouped_actions
from lwmecps_rllib.serving.schema import (
    MAX_BODY_BYTES,
    BatchRequest,
    BatchResponse,
    PlacementRequest,
    PlacementResponse,
    RequestError,
    RolloutConfig,
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


def _error_bytes(status: int, field: str, message: str) -> tuple[dict, bytes]:
    """An error as a raw ASGI response start message and body (for the middleware)."""
    body = json.dumps({"error": f"{field}: {message}" if field else message,
                       "detail": [{"field": field, "message": message}]}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, body


class BodyLimit:
    """ASGI middleware: a request body is counted as it arrives and refused (413) as soon
    as it passes the limit, whether or not it declared a Content-Length; the app sees the
    body only once it is complete and within the limit.

    Args:
        app: The wrapped ASGI app.
        limit: Returns the largest body accepted, in bytes (read per request, so the
            replica's configured value applies).
    """

    def __init__(self, app: Any, limit: Any) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(self.limit())
        size = dict(scope.get("headers") or []).get(b"content-length")
        if size is not None:
            if not size.isdigit():
                await self._refuse(send, 400, "content-length", f"not a number: {size!r}")
                return
            if int(size) > limit:
                await self._refuse(send, 413, "body",
                                   f"{int(size)} bytes is over the limit of {limit}")
                return
        chunks: list[bytes] = []
        read = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            read += len(chunk)
            if read > limit:
                await self._refuse(send, 413, "body",
                                   f"more than {limit} bytes (the limit); refused after {read}")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    @staticmethod
    async def _refuse(send: Any, status: int, field: str, message: str) -> None:
        start, body = _error_bytes(status, field, message)
        await send(start)
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI `receive` giving `body` as one message, then the client's own messages."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


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

    api.add_middleware(BodyLimit, limit=lambda: getattr(api.state, "max_body_bytes",
                                                          MAX_BODY_BYTES))
    return api


api = _make_api()


def load_policy(ref: str, args: ServeArgs) -> PlacementPolicy:
    """The policy a model reference names, if it is of the app's env and scenario.

    A registry reference (id or stage) is resolved to its record first and a model of
    another env or scenario is refused before its checkpoint is loaded; a bare
    checkpoint folder is taken as the app's env and scenario.

    Raises:
        ValueError: naming the reference and why it cannot be served.
    """
    from lwmecps_rllib.model_registry import resolve

    path, rec = resolve(ref, args.registry, env=args.env, scenario=args.scenario)
    if rec is None:
        return PlacementPolicy.from_checkpoint(path, args.env, args.scenario)
    if (rec.env, rec.scenario) != (args.env, args.scenario):
        raise ValueError(f"model {rec.id!r} (from {ref!r}) is a {rec.env} model of scenario "
                         f"{rec.scenario!r}; this app serves {args.env} on scenario "
                         f"{args.scenario!r} (args.env, args.scenario)")
    return PlacementPolicy.from_record(path, rec)


class Rollouts:
    """What the replica serves and how its rollouts went (shown in `GET /v1/model`).

    Args:
        reference: The reference the first model was loaded from.
        model_id: The id it resolved to.
    """

    def __init__(self, reference: str, model_id: str) -> None:
        from ray.util.metrics import Counter

        self.reference = reference
        self.counts = {"ok": 0, "failed": 0}
        self.last: dict[str, Any] = {}
        self._counter = Counter("lwmecps_serve_rollouts",
                                description="Model rollouts of the placement app by result.",
                                tag_keys=("result",))
        self.succeeded(reference, model_id)

    def _record(self, result: str, reference: str, model_id: str | None,
                error: str | None) -> None:
        self.counts[result] += 1
        self._counter.inc(tags={"result": result})
        self.last = {"state": result, "reference": reference, "model_id": model_id,
                     "error": error, "time": dt.datetime.now(dt.timezone.utc).isoformat()}

    def succeeded(self, reference: str, model_id: str) -> None:
        """A rollout that serves `model_id`, resolved from `reference`."""
        self.reference = reference
        self._record("ok", reference, model_id, None)

    def failed(self, reference: str, error: str) -> None:
        """A rollout that was refused; the served model is unchanged."""
        self._record("failed", reference, None, error)

    def info(self) -> dict[str, Any]:
        """`reference`, `last_rollout` and the `rollouts` counts."""
        return {"reference": self.reference, "last_rollout": dict(self.last),
                "rollouts": dict(self.counts)}


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
            self.policy = load_policy(self.args.model, self.args)
            self.rollouts = Rollouts(self.args.model, self.policy.model_id)
            self._decide.set_max_batch_size(self.args.max_batch_size)
            self._decide.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)

        def reconfigure(self, user_config: dict[str, Any]) -> None:
            """Roll out `user_config` (a :class:`RolloutConfig`) in place.

            The model reference is resolved anew (a stage to the id it names now) and the
            model loaded beside the old one, which answers until the swap. A rollout that
            fails (bad `user_config`, unknown model, missing or changed checkpoint, a
            model of another env or scenario) changes nothing: the old model keeps
            answering and the failure is reported in `GET /v1/model` and the
            `lwmecps_serve_rollouts{result="failed"}` metric. It never raises, so Serve
            keeps the replica.
            """
            raw = user_config.get("model") if isinstance(user_config, dict) else None
            ref = raw if isinstance(raw, str) and raw else self.args.model
            try:
                config = RolloutConfig.parse(user_config or {})
                policy = self._resolve(ref)
            # Whatever the new model's loading raises (registry, unpickling, torch, a
            # shape mismatch) is a failed rollout, never a failed replica.
            except Exception as exc:
                self.rollouts.failed(ref, str(exc))
                return
            self.policy = policy
            if config.max_batch_size is not None:
                self._decide.set_max_batch_size(config.max_batch_size)
            if config.batch_wait_timeout_s is not None:
                self._decide.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
            self.rollouts.succeeded(ref, policy.model_id)

        def _resolve(self, ref: str) -> PlacementPolicy:
            """The policy for `ref`: the current one when it resolves to the same
            registry model, else newly loaded (and checked)."""
            from lwmecps_rllib.model_registry import resolve

            _path, rec = resolve(ref, self.args.registry, env=self.args.env,
                                 scenario=self.args.scenario)
            if rec is not None and rec.id == self.policy.model_id:
                return self.policy
            return load_policy(ref, self.args)

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
        async def _decide(self, items: list[tuple[PlacementPolicy, np.ndarray]]
                          ) -> list[tuple[PlacementPolicy, np.ndarray]]:
            """One forward pass per policy over every queued observation."""
            acts = grouped_actions(items)
            return [(pol, a) for (pol, _), a in zip(items, acts, strict=True)]

        async def _one(self, req: PlacementRequest) -> PlacementResponse:
            t0 = time.perf_counter()
            policy = self.policy.for_scenario(req.scenario)
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
            return BatchResponse(results=self.policy.decide(body.clusters, field="clusters"))

        @api.get("/v1/model")
        async def model(self) -> dict[str, Any]:
            """The model answering now (id, algorithm, env, scenario, metrics, checkpoint),
            the reference it was resolved from, and the last rollout's outcome."""
            return json.loads(json.dumps({**self.policy.info, **self.rollouts.info()},
                                         default=str))

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
