"""Our algorithms on RLlib's new API stack, by name.

Each lives in its own package (`qlearning/`, `dqn/`, `ppo/`) with `config.py` (the
`AlgorithmConfig` subclass and the `Algorithm` with its `training_step`), `learner.py`
(the `TorchLearner` with the loss) and `module.py` (the `TorchRLModule`). What they
share is in modules of this package, one concern each, and no algorithm imports another
algorithm's package: `config_base` (the base configs and parameter checks), `metrics`
(env metrics and the fixed result names), `networks` (MLPs with side-by-side action
heads), `distributions` (categoricals over those heads), `connectors` (learner connector
pieces) and `factorised_q` (the factorised-Q module base of DQN and Q-learning).
"""

from lwmecps_rllib.algorithms.catalog import (
    ALGORITHMS,
    ALIASES,
    algorithm_names,
    build_config,
    canonical_name,
    get_algorithm_class,
    register_algorithm,
    register_with_tune,
)

__all__ = [
    "ALGORITHMS",
    "ALIASES",
    "algorithm_names",
    "build_config",
    "canonical_name",
    "get_algorithm_class",
    "register_algorithm",
    "register_with_tune",
]
