"""The policy the controller asks: the Serve endpoint over HTTP, or a model in process.

Both answer a placement request body (:mod:`lwmecps_rllib.serving.schema`) with a
:class:`~lwmecps_rllib.serving.schema.PlacementResponse`, or raise :class:`PolicyError`
naming the cause; the controller then falls back.
"""

from __future__ import annotations

from typing import Any, Protocol

from lwmecps_rllib.serving.schema import PlacementRequest, PlacementResponse, RequestError

#: Why a period's decision is not the policy's (the `cause` label of the fallbacks).
CAUSES = ("timeout", "error", "infeasible", "out_of_bounds")


class PolicyError(Exception):
    """The policy gave no usable decision.

    Args:
        cause: One of :data:`CAUSES`.
        message: What happened.
    """

    def __init__(self, cause: str, message: str) -> None:
        if cause not in CAUSES:
            raise ValueError(f"cause must be one of {list(CAUSES)}, got {cause!r}")
        super().__init__(f"{cause}: {message}")
        self.cause = cause
        self.message = message


class PolicyClient(Protocol):
    """What the controller asks for a decision."""

    def describe(self) -> dict[str, Any]:
        """The model answering: `model_id`, `env`, `scenario`, `history_slots`."""
        ...

    def decide(self, body: dict[str, Any]) -> PlacementResponse:
        """The decision for one cluster (raises :class:`PolicyError`)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class HttpPolicy:
    """The placement endpoint of the Serve app (`POST /v1/placement`, `GET /v1/model`).

    Args:
        url: Base URL, e.g. `http://127.0.0.1:8000`.
        timeout_s: Longest wait for an answer (connect and read).
        client: An `httpx.Client` (default: made on first use).
    """

    def __init__(self, url: str, timeout_s: float = 2.0, client: Any = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = client

    @property
    def client(self) -> Any:
        """The HTTP client."""
        if self._client is None:
            import httpx

            self._client = httpx.Client(base_url=self.url, timeout=self.timeout_s)
        return self._client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        where = f"{method} {self.url}{path}"
        try:
            r = self.client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise PolicyError("timeout", f"{where}: no answer in {self.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise PolicyError("error", f"{where}: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise PolicyError("error", f"{where}: HTTP {r.status_code} {r.text[:300]}")
        try:
            return r.json()
        except ValueError as exc:
            raise PolicyError("error", f"{where}: not JSON") from exc

    def describe(self) -> dict[str, Any]:
        """`GET /v1/model`."""
        info = self._call("GET", "/v1/model")
        if not isinstance(info, dict) or "model_id" not in info:
            raise PolicyError("error", f"GET {self.url}/v1/model: no model_id in {info!r:.200}")
        return info

    def decide(self, body: dict[str, Any]) -> PlacementResponse:
        """`POST /v1/placement`."""
        data = self._call("POST", "/v1/placement", json=body)
        try:
            return PlacementResponse.model_validate(data)
        except ValueError as exc:
            raise PolicyError("error", f"POST {self.url}/v1/placement: not a placement "
                                         f"response: {exc}") from exc

    def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            self._client.close()


class LocalPolicy:
    """A :class:`~lwmecps_rllib.serving.policy.PlacementPolicy` in this process (no
    timeout: a forward pass is not interrupted).

    Args:
        policy: The loaded model.
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    @classmethod
    def load(cls, model: str, registry: str | None, scenario: str) -> LocalPolicy:
        """A checkpoint folder, registry id or stage (a stage within LWMECPSEnv3 and the
        scenario)."""
        from lwmecps_rllib.serving.policy import PlacementPolicy

        return cls(PlacementPolicy.load(model, registry, env="LWMECPSEnv3", scenario=scenario))

    def describe(self) -> dict[str, Any]:
        """The model's info (as `GET /v1/model` shows it)."""
        return dict(self.policy.info)

    def decide(self, body: dict[str, Any]) -> PlacementResponse:
        """One forward pass."""
        try:
            return self.policy.decide([PlacementRequest(**body)])[0]
        except (RequestError, ValueError) as exc:
            raise PolicyError("error", f"model {self.policy.model_id}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release."""
