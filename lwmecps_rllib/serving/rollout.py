"""Rolling a model out to a running Serve app through the Ray dashboard's Serve REST API.

`GET /api/serve/applications/` gives the config each application was deployed with
(`serve deploy`, a RayService, or a previous rollout); the placement app's
`PlacementService.user_config` is changed and the whole config is `PUT` back. Serve then
calls `reconfigure` on the running replicas (a change of user_config alone keeps them),
which resolve the stage anew and swap the model in place, or keep the old one and report
the failure in `GET /v1/model`.

    python -m lwmecps_rllib.model_registry promote MODEL_ID --rollout http://127.0.0.1:8265
"""

from __future__ import annotations

from typing import Any

#: The Serve application and deployment of `serve/config.yaml` and `k8s/rayservice.yaml`.
DEFAULT_APP = "lwmecps"
DEPLOYMENT = "PlacementService"


class RolloutError(Exception):
    """A rollout that could not be sent (unreachable dashboard, unknown app, rejected)."""


def _client(dashboard: str) -> Any:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    try:
        return ServeSubmissionClient(dashboard)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RolloutError(f"cannot reach the Ray dashboard at {dashboard}: {exc}") from exc


def _deployed_configs(details: dict[str, Any], app: str, dashboard: str) -> list[dict]:
    """The config of every running application; the target app must be among them."""
    apps = details.get("applications") or {}
    if app not in apps:
        raise RolloutError(f"no Serve application {app!r} at {dashboard}; running: "
                           f"{sorted(apps)}")
    configs = []
    for name, detail in apps.items():
        config = detail.get("deployed_app_config")
        if config is None:
            raise RolloutError(f"application {name!r} at {dashboard} was not deployed from a "
                               "config file (serve deploy, RayService), so its config cannot "
                               "be re-applied; deploy it from serve/config.yaml")
        configs.append(config)
    return configs


def roll_out(dashboard: str, model_id: str, reference: str = "production",
             app: str = DEFAULT_APP) -> dict[str, Any]:
    """Make the running app serve `reference` resolved anew (e.g. just after promoting).

    Sets the app's `PlacementService.user_config` to `model: reference` and
    `revision: model_id` (the new revision makes Serve roll out even when the reference
    is unchanged) and re-applies the cluster's Serve config.

    Args:
        dashboard: The Ray dashboard URL (`http://127.0.0.1:8265`).
        model_id: The model the reference should resolve to now (recorded as revision).
        reference: The model reference the app serves (a stage, or an id).
        app: The Serve application's name.

    Returns:
        The new user_config.

    Raises:
        RolloutError: naming the dashboard, when it cannot be reached, the app is not
            there or was not deployed from a config, or Serve rejects the config.
    """
    client = _client(dashboard)
    try:
        details = client.get_serve_details()
    except RuntimeError as exc:
        raise RolloutError(f"cannot read the Serve apps at {dashboard}: {exc}") from exc
    configs = _deployed_configs(details, app, dashboard)
    target = next(c for c in configs if c["name"] == app)
    deployments = target.setdefault("deployments", [])
    deployment = next((d for d in deployments if d.get("name") == DEPLOYMENT), None)
    if deployment is None:
        deployment = {"name": DEPLOYMENT}
        deployments.append(deployment)
    user_config = {**(deployment.get("user_config") or {}), "model": reference,
                   "revision": model_id}
    deployment["user_config"] = user_config
    config: dict[str, Any] = {"applications": configs}
    for key in ("proxy_location", "http_options"):
        if details.get(key) is not None:
            config[key] = details[key]
    try:
        client.deploy_applications(config)
    except RuntimeError as exc:
        raise RolloutError(f"Serve at {dashboard} refused the config: {exc}") from exc
    return user_config
