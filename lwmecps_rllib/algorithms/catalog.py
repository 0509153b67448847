"""The catalog of algorithms by name, and building a ready-to-train config from plain parameters."""

from __future__ import annotations

import importlib

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from lwmecps_rllib.envs.names import ENV_NAMES, VECTOR_ENTRY_POINTS
from lwmecps_rllib.spec import EnvOptions, TrainingSpec, check_run

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


def build_config(training: TrainingSpec | str, env: str = "LWMECPSEnv3",
                 options: EnvOptions | None = None) -> AlgorithmConfig:
    """A config for the training spec's algorithm on `env`, ready for `build_algo()` or Tune.

    Args:
        training: What to train (algorithm, hyper-parameters, seed, resources); a bare
            algorithm name means its defaults.
        env: Env name.
        options: The env's options (default: `testbed-4bs`, trace `a`, simulator). An env
            with a native batched form runs it on the simulator (16 envs per runner by
            default, else 4; 1 on a real cluster).

    Raises:
        ValueError: for an unknown algorithm, env or parameter, or a bad value, naming it.
    """
    from lwmecps_rllib.envs.registration import env_options, register_rllib_envs

    if env not in ENV_NAMES:
        raise ValueError(f"env must be one of {list(ENV_NAMES)}, got {env!r}")
    training = TrainingSpec(algorithm=training) if isinstance(training, str) else training
    options = env_options(env, options or EnvOptions())
    check_run(options, training)
    cls = get_algorithm_class(training.algorithm)
    config = cls.get_default_config()
    register_rllib_envs()
    # The batched env replays one scenario; a family changes it per episode.
    batched = (env in VECTOR_ENTRY_POINTS and options.backend == "sim"
               and options.scenario_family is None)
    n = training.resources.num_envs or (1 if options.backend == "k8s" else 16 if batched else 4)
    config.environment(env, env_config=options.to_env_config())
    config.env_runners(num_envs_per_env_runner=n,
                       gym_env_vectorize_mode="vector_entry_point" if batched else "sync")
    apply_resources(config, training)
    if options.backend == "k8s":  # an env whose step raises is made anew, not the run lost
        config.fault_tolerance(restart_failed_sub_environments=True)
    config.debugging(seed=training.seed)
    try:
        config.training(**training.params)
    except TypeError as exc:
        allowed = sorted(k for k in vars(config) if not k.startswith("_"))
        raise ValueError(f"unknown parameter for {training.algorithm}: {exc}; known: "
                         f"learning_rate, discount_factor, epsilon, {', '.join(allowed)}") from exc
    if training.model:
        config.rl_module(model_config={**config._model_config, **training.model})
    return config


def check_learners(training: TrainingSpec) -> None:
    """Refuse more learners than the algorithm supports (its config's `max_learners`).

    Raises:
        ValueError: naming `resources.learners`, the algorithm and its limit.
    """
    limit = getattr(get_algorithm_class(training.algorithm).get_default_config(),
                    "max_learners", None)
    n = training.resources.learners
    if limit is not None and n > limit:
        raise ValueError(f"resources.learners must be at most {limit} for "
                         f"{canonical_name(training.algorithm)}, got {n}")


def apply_resources(config: AlgorithmConfig, training: TrainingSpec) -> None:
    """Set the env runners, learners and their resources of `training` on `config`.

    Remote env runners are restarted when they fail (their node lost, say), and the
    training goes on with the others meanwhile.

    Raises:
        ValueError: more learners than the algorithm supports.
    """
    check_learners(training)
    r = training.resources
    config.env_runners(num_env_runners=r.env_runners,
                       num_cpus_per_env_runner=r.cpus_per_env_runner,
                       num_gpus_per_env_runner=r.gpus_per_env_runner,
                       custom_resources_per_env_runner=dict(r.env_runner_resources))
    config.learners(num_learners=r.learners,
                    num_cpus_per_learner="auto" if r.cpus_per_learner is None
                    else r.cpus_per_learner,
                    num_gpus_per_learner=r.gpus_per_learner)
    config.resources(num_cpus_for_main_process=r.cpus)
    if r.env_runners:
        config.fault_tolerance(restart_failed_env_runners=True)
