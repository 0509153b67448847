"""The catalog of algorithms by name, and building a ready-to-train config from plain parameters."""

from __future__ import annotations

import importlib
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from lwmecps_rllib.envs import ENV_NAMES
from lwmecps_rllib.envs.base import check_augmentation

#: Registered algorithms: name -> "module:AlgorithmClass", or the class itself.
ALGORITHMS: dict[str, str | type[Algorithm]] = {
    "lwmecps-qlearning": "lwmecps_rllib.algorithms.qlearning.config:QLearning",
    "lwmecps-dqn": "lwmecps_rllib.algorithms.dqn.config:DQN",
    "lwmecps-ppo": "lwmecps_rllib.algorithms.ppo.config:PPO",
}
#: Short names accepted everywhere a name is.
ALIASES = {"qlearning": "lwmecps-qlearning", "q_learning": "lwmecps-qlearning",
           "dqn": "lwmecps-dqn", "ppo": "lwmecps-ppo"}


def register_algorithm(name: str, algorithm: type[Algorithm] | str) -> None:
    """Make an algorithm available by name to `train`, `tune`, the agent facade and Tune.

    Args:
        name: The name, e.g. `"my-vpg"`.
        algorithm: The `Algorithm` subclass, or `"module.path:ClassName"`.
    """
    if not isinstance(algorithm, str) and not (isinstance(algorithm, type)
                                               and issubclass(algorithm, Algorithm)):
        raise ValueError(f"algorithm must be an Algorithm subclass or 'module:Class', "
                         f"got {algorithm!r}")
    ALGORITHMS[name] = algorithm


def algorithm_names() -> list[str]:
    """Every accepted name (registered names and aliases)."""
    return sorted(ALGORITHMS) + sorted(ALIASES)


def get_algorithm_class(name: str) -> type[Algorithm]:
    """The Algorithm class of a registered name or alias.

    Raises:
        ValueError: naming the allowed names.
    """
    key = ALIASES.get(name, name)
    if key not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {algorithm_names()}, got {name!r}")
    entry = ALGORITHMS[key]
    if not isinstance(entry, str):
        return entry
    module, cls = entry.split(":")
    return getattr(importlib.import_module(module), cls)


def canonical_name(name: str) -> str:
    """The registered name of `name` (an alias or itself)."""
    get_algorithm_class(name)
    return ALIASES.get(name, name)


def register_with_tune() -> None:
    """Register every algorithm with Ray Tune's trainable registry under its name."""
    from ray.tune.registry import register_trainable

    for name in ALGORITHMS:
        register_trainable(name, get_algorithm_class(name))


def build_config(algo: str, env: str = "LWMECPSEnv3", scenario: Any = "testbed-4bs",
                 trace: str = "a", params: dict[str, Any] | None = None, seed: int = 0,
                 num_envs: int | None = None, backend: Any = "sim",
                 model: dict[str, Any] | None = None,
                 backend_config: dict[str, Any] | None = None,
                 shuffle_stations: bool = False, load_jitter: float = 0.0) -> AlgorithmConfig:
    """A config for `algo` on `env`, ready for `build_algo()` or Tune.

    Args:
        algo: Algorithm name or alias.
        env: Env name.
        scenario: Scenario name, path or object.
        trace: Training trace.
        params: Hyper-parameters for `config.training(...)`, with the reference's names
            (`learning_rate`, `discount_factor`, `epsilon`) or RLlib's.
        seed: Seed of the env runners and learners.
        num_envs: Envs per env runner (default 16 batched for LWMECPSEnv3, else 4).
        backend: Env backend.
        model: `model_config` overrides (e.g. `{"hidden": [256, 256]}`).
        backend_config: Kubernetes backend settings for `backend="k8s"` (one env: a real
            cluster is one cluster).
        shuffle_stations: Train on the day with the stations' user columns reordered
            per episode (simulator only; see `LWMECPSEnv3`).
        load_jitter: Train on copies of the day with each station's users scaled by a
            factor in [1 - j, 1 / (1 - j)] (simulator only; see `LWMECPSEnv3`).

    Raises:
        ValueError: for an unknown algorithm, env or parameter, or a bad value, naming it.
    """
    from lwmecps_rllib.envs import register_rllib_envs

    if env not in ENV_NAMES:
        raise ValueError(f"env must be one of {list(ENV_NAMES)}, got {env!r}")
    cls = get_algorithm_class(algo)
    config = cls.get_default_config()
    register_rllib_envs()
    batched = env == "LWMECPSEnv3" and backend == "sim"
    n = num_envs or (16 if batched else 4)
    env_config = {"scenario": scenario, "trace": trace, "backend": backend}
    check_augmentation(shuffle_stations, load_jitter, backend)
    if shuffle_stations:
        env_config["shuffle_stations"] = True
    if load_jitter:
        env_config["load_jitter"] = load_jitter
    if backend == "k8s":
        if num_envs not in (None, 1):
            raise ValueError(f"num_envs must be 1 with backend='k8s' (one cluster), got {num_envs}")
        n = 1
        env_config["backend_config"] = dict(backend_config or {})
    elif backend_config:
        raise ValueError("backend_config is only used with backend='k8s'")
    config.environment(env, env_config=env_config)
    config.env_runners(num_env_runners=0, num_envs_per_env_runner=n,
                       gym_env_vectorize_mode="vector_entry_point" if batched else "sync")
    config.debugging(seed=seed)
    try:
        config.training(**(params or {}))
    except TypeError as exc:
        allowed = sorted(k for k in vars(config) if not k.startswith("_"))
        raise ValueError(f"unknown parameter for {algo}: {exc}; known: "
                         f"learning_rate, discount_factor, epsilon, {', '.join(allowed)}") from exc
    if model:
        config.rl_module(model_config={**config._model_config, **model})
    return config
