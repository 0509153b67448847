"""Building envs by name from RLlib's `env_config`, and their registration with RLlib."""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

from lwmecps_rllib.envs.names import ENV_MODULES, ENV_NAMES, VECTOR_ENTRY_POINTS
from lwmecps_rllib.spec import EnvOptions


def env_class(name: str) -> type:
    """The env class registered under `name`.

    Raises:
        ValueError: for an unknown name, naming the allowed ones.
    """
    if name not in ENV_NAMES:
        raise ValueError(f"env must be one of {list(ENV_NAMES)}, got {name!r}")
    return getattr(importlib.import_module(ENV_MODULES[name]), name)


def env_options(name: str, config: dict[str, Any] | EnvOptions | None = None) -> EnvOptions:
    """Checked options of env `name` from an `env_config` (obs_format defaults to `box`,
    `graph` with a scenario family).

    Raises:
        ValueError: naming an unknown key (with the allowed ones) or a bad value.
    """
    if isinstance(config, EnvOptions):
        opts = config
    else:
        cfg = dict(config or {})
        cfg.pop("num_envs", None)
        try:
            opts = EnvOptions.parse(cfg)
        except ValueError as exc:
            if str(exc).startswith("unknown key"):
                raise ValueError(str(exc).replace("unknown key", "unknown env_config key", 1)
                                 ) from None
            raise
    if opts.obs_format is None:
        opts = opts.replace(obs_format="graph" if opts.scenario_family else "box")
    return opts


def make_env(name: str, config: dict[str, Any] | EnvOptions | None = None
             ) -> gym.Env | gym.vector.VectorEnv:
    """An env from its name and its options (RLlib's `env_config` form, or `EnvOptions`).

    `obs_format` defaults to `"box"` here (the form RLlib trains on). With a
    `num_envs` key (RLlib's `vector_entry_point` mode) an env with a native batched
    form (LWMECPSEnv3) returns it.

    Raises:
        ValueError: for an unknown env name or config key, naming it and what is allowed.
    """
    cls = env_class(name)
    num_envs = None if isinstance(config, EnvOptions) else (config or {}).get("num_envs")
    opts = env_options(name, config)
    if num_envs is not None:
        if name not in VECTOR_ENTRY_POINTS:
            raise ValueError(
                f"gym_env_vectorize_mode='vector_entry_point' is only available for "
                f"{sorted(VECTOR_ENTRY_POINTS)}, not {name}; use gym_env_vectorize_mode='sync'")
        module, vec = VECTOR_ENTRY_POINTS[name].split(":")
        return getattr(importlib.import_module(module), vec)(num_envs=int(num_envs),
                                                             options=opts)
    return cls(opts)


def head_views(name: str, config: dict[str, Any] | EnvOptions | None = None
               ) -> list[list[int]] | None:
    """Per action head, the box-observation indices that describe it, or None.

    LWMECPSEnv3 has one head per deployment (see
    :func:`lwmecps_rllib.envs.lwmecps_env3.env3_head_views`); the placement envs have
    no such views.
    """
    return env_class(name).head_views(env_options(name, config))


def action_costs(name: str, config: dict[str, Any] | EnvOptions | None = None,
                 limit: int = 4096, masked: bool = False) -> list[float] | None:
    """Per joint action, the part of the step's cost the action alone fixes, or None.

    LWMECPSEnv3 charges `replica_cost` per replica and `imbalance_weight` times the
    nodes' imbalance, both functions of the replica counts alone (see
    :func:`lwmecps_rllib.envs.lwmecps_env3.env3_action_costs`). None for the other envs,
    when there are more than `limit` joint actions, and when some joint action does not
    fit the nodes (with `masked`, only the joint actions :func:`action_mask` allows
    count: a masking policy never takes the others).
    """
    return env_class(name).action_costs(env_options(name, config), limit, masked)


def action_mask(name: str, config: dict[str, Any] | EnvOptions | None = None
                ) -> list[list[bool]] | None:
    """Per action head, the values a masking policy may pick, such that any joint action
    of allowed values fits every node.

    LWMECPSEnv3: replica counts up to each deployment's share of its node
    (:func:`lwmecps_rllib.cluster.core.replica_bounds`). LWMECPSEnv, LWMECPSEnv2: the
    nodes each deployment may go to (:func:`lwmecps_rllib.cluster.core.placement_allowed`).
    """
    return env_class(name).action_mask(env_options(name, config))


def register_rllib_envs() -> None:
    """Register the three envs with `ray.tune.registry.register_env` under their names."""
    from ray.tune.registry import register_env

    for name in ENV_NAMES:
        register_env(name, lambda config, _n=name: make_env(_n, config))


def graph_config(name: str, config: dict[str, Any] | EnvOptions | None = None
                 ) -> dict[str, int] | None:
    """Where a station-shared network finds the graph blocks of env `name`'s observation
    (:func:`lwmecps_rllib.envs.graph.graph_model_config`), or None unless its options
    ask for `obs_format="graph"`."""
    from lwmecps_rllib.envs.base import family_options
    from lwmecps_rllib.envs.graph import graph_model_config
    from lwmecps_rllib.scenarios import load_scenario

    opts = env_options(name, config)
    if opts.obs_format != "graph":
        return None
    cls = env_class(name)
    family, opts = family_options(opts)
    scenario = family.member(0) if family is not None else load_scenario(opts.scenario)
    spec = cls.build_spec(scenario, opts)
    return graph_model_config(cls.box_layout(spec, opts))
