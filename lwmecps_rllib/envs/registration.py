"""Building envs by name, and their registration with RLlib."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym

if TYPE_CHECKING:
    from lwmecps_rllib.cluster.core import ClusterSpec

ENV_NAMES = ("LWMECPSEnv", "LWMECPSEnv2", "LWMECPSEnv3")
_ENV_KEYS = {"scenario", "trace", "backend", "backend_config", "episode_length", "obs_format",
             "render_mode", "shuffle_stations", "load_jitter"}
_EXTRA_KEYS = {"LWMECPSEnv2": {"n_deployments"}}


def _env_class(name: str) -> type:
    from lwmecps_rllib import envs

    if name not in ENV_NAMES:
        raise ValueError(f"env must be one of {list(ENV_NAMES)}, got {name!r}")
    return getattr(envs, name)


def make_env(name: str, config: dict[str, Any] | None = None) -> gym.Env | gym.vector.VectorEnv:
    """An env from its name and a config dict (RLlib's `env_config` form).

    `obs_format` defaults to `"box"` here (the form RLlib trains on). With a
    `num_envs` key (RLlib's `vector_entry_point` mode) LWMECPSEnv3 returns its native
    batched form.

    Raises:
        ValueError: for an unknown env name or config key, naming it and what is allowed.
    """
    cls = _env_class(name)
    cfg = {k: v for k, v in dict(config or {}).items()}
    num_envs = cfg.pop("num_envs", None)
    allowed = _ENV_KEYS | _EXTRA_KEYS.get(name, set())
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(f"env_config key(s) {sorted(unknown)} unknown for {name}; "
                         f"allowed: {sorted(allowed | {'num_envs'})}")
    cfg.setdefault("obs_format", "box")
    if num_envs is not None:
        if name != "LWMECPSEnv3":
            raise ValueError(
                f"gym_env_vectorize_mode='vector_entry_point' is only available for LWMECPSEnv3, "
                f"not {name}; use gym_env_vectorize_mode='sync'")
        from lwmecps_rllib.envs.vector import LWMECPSEnv3Vector

        return LWMECPSEnv3Vector(num_envs=int(num_envs), **cfg)
    return cls(**cfg)


def _env3_spec(config: dict[str, Any] | None) -> ClusterSpec:
    """The compiled cluster of LWMECPSEnv3 built from `config` (RLlib's `env_config`)."""
    from lwmecps_rllib.envs.lwmecps_env3 import env3_spec
    from lwmecps_rllib.scenarios import load_scenario

    return env3_spec(load_scenario((config or {}).get("scenario", "testbed-4bs")))


def head_views(name: str, config: dict[str, Any] | None = None) -> list[list[int]] | None:
    """Per action head, the box-observation indices that describe it, or None.

    LWMECPSEnv3 has one head per deployment (see
    :func:`lwmecps_rllib.envs.lwmecps_env3.env3_head_views`); the placement envs and
    any other env have no such views.
    """
    if name != "LWMECPSEnv3":
        return None
    from lwmecps_rllib.envs.lwmecps_env3 import env3_head_views

    return env3_head_views(_env3_spec(config))


def action_costs(name: str, config: dict[str, Any] | None = None,
                 limit: int = 4096) -> list[float] | None:
    """Per joint action, the part of the step's cost the action alone fixes, or None.

    LWMECPSEnv3 charges `replica_cost` per replica and `imbalance_weight` times the
    nodes' imbalance, both functions of the replica counts alone (see
    :func:`lwmecps_rllib.envs.lwmecps_env3.env3_action_costs`). None for the other envs,
    when there are more than `limit` joint actions, and when some joint action does not
    fit the nodes.
    """
    if name != "LWMECPSEnv3":
        return None
    from lwmecps_rllib.envs.lwmecps_env3 import env3_action_costs

    spec = _env3_spec(config)
    if (spec.max_pods + 1) ** spec.n_deployments > limit:
        return None
    costs = env3_action_costs(spec)
    return None if costs is None else costs.tolist()


def register_rllib_envs() -> None:
    """Register the three envs with `ray.tune.registry.register_env` under their names."""
    from ray.tune.registry import register_env

    for name in ENV_NAMES:
        register_env(name, lambda config, _n=name: make_env(_n, config))
