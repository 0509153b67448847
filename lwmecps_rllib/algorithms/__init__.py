"""Our algorithms on RLlib's new API stack, by name.

Each lives in its own package (`qlearning/`, `dqn/`, `ppo/`) with `config.py` (the
`AlgorithmConfig` subclass and the `Algorithm` with its `training_step`), `learner.py`
(the `TorchLearner` with the loss) and `module.py` (the `TorchRLModule`).
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
