"""Recommended settings (presets): what the learning benchmark trains with, in one place.

The `train` command (`--preset recommended`), the learning benchmark
(`bench/learning.py`), the sweep files (`preset: recommended`) and the docs all take
them from here; `python -m lwmecps_rllib.presets [--scenario NAME]` prints them.

    preset = recommended("ppo", "testbed-4bs-peak")
    algo, history = train(preset.training(seed=0), "LWMECPSEnv3",
                          preset.env_options("testbed-4bs-peak"))
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from lwmecps_rllib.spec import Budget, EnvOptions, TrainingSpec

#: Preset names.
PRESET_NAMES = ("recommended",)


@dataclass(frozen=True)
class Preset:
    """One algorithm's recommended settings on one scenario."""

    algorithm: str
    """Algorithm name (`ppo`, `dqn`, `qlearning`)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Hyper-parameters."""
    shuffle_stations: bool = False
    """Train on the day with the stations' user columns reordered per episode."""
    load_jitter: float = 0.0
    """Train on copies of the day with each station's users scaled."""
    env_steps: int = 1_000_000
    """Env-step budget of the benchmark."""
    observation: dict[str, Any] = field(default_factory=dict)
    """Env options that shape what the policy observes (`history`, `history_windows`)."""

    def env_fields(self) -> dict[str, Any]:
        """The env options the preset sets: augmentation and observation."""
        return {"shuffle_stations": self.shuffle_stations, "load_jitter": self.load_jitter,
                **self.observation}

    def training(self, seed: int = 0, **params: Any) -> TrainingSpec:
        """The training spec: these parameters (with `params` over them), the budget."""
        return TrainingSpec(algorithm=self.algorithm, params={**self.params, **params},
                            seed=seed, budget=Budget(env_steps=self.env_steps))

    def env_options(self, scenario: Any = "testbed-4bs", **changes: Any) -> EnvOptions:
        """The training env's options on `scenario` (training day, augmentation)."""
        return EnvOptions.parse({"scenario": scenario, "trace": "a", **self.env_fields(),
                                 **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {"algorithm": self.algorithm, "params": dict(self.params),
                **self.env_fields(), "env_steps": self.env_steps}


#: The recommended settings per algorithm (LWMECPSEnv3).
RECOMMENDED: dict[str, Preset] = {
    "ppo": Preset("ppo", {"learning_rate": 3e-4, "discount_factor": 0.9, "epsilon": 0.2,
                          "train_batch_size_per_learner": 4096, "minibatch_size": 512,
                          "num_epochs": 4, "entropy_coeff": 0.003},
                  shuffle_stations=True, load_jitter=0.2, env_steps=1_000_000),
    "dqn": Preset("dqn", {"learning_rate": 5e-4, "discount_factor": 0.9, "epsilon": 0.005,
                          "epsilon_timesteps": 60000, "updates_per_iteration": 4,
                          "train_batch_size_per_learner": 128,
                          "target_network_update_freq": 2000, "learning_starts": 2000,
                          "action_costs": True},
                  shuffle_stations=True, load_jitter=0.2, env_steps=600_000),
    "qlearning": Preset("qlearning", {"learning_rate": 0.2, "discount_factor": 0.9,
                                      "epsilon": 0.002, "epsilon_timesteps": 60000,
                                      "bins": 10, "action_costs": True},
                        env_steps=500_000),
}

#: Per-scenario changes to a preset's parameters. On the peak day DQN's replay keeps the
#: last 200,000 of its 600,000 steps (`docs/experiments/2026-11-dqn-replay-capacity.md`).
SCENARIO_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "testbed-4bs-peak": {"dqn": {"replay_capacity": 200_000}},
}


def _key(algorithm: str) -> str:
    from lwmecps_rllib.algorithms.catalog import canonical_name

    return canonical_name(algorithm).removeprefix("lwmecps-")


def recommended(algorithm: str, scenario: Any = "testbed-4bs") -> Preset:
    """The recommended settings of `algorithm` on `scenario`.

    Raises:
        ValueError: for an algorithm without a preset, naming those with one.
    """
    key = _key(algorithm) if algorithm not in RECOMMENDED else algorithm
    if key not in RECOMMENDED:
        raise ValueError(f"no recommended preset for algorithm {algorithm!r}; presets exist "
                         f"for {sorted(RECOMMENDED)}")
    base = RECOMMENDED[key]
    name = getattr(scenario, "name", scenario)
    changes = SCENARIO_PARAMS.get(name, {}).get(key, {})
    return Preset(base.algorithm, {**base.params, **changes}, base.shuffle_stations,
                  base.load_jitter, base.env_steps, dict(base.observation))


def get_preset(name: str, algorithm: str, scenario: Any = "testbed-4bs") -> Preset:
    """A preset by name (`recommended`).

    Raises:
        ValueError: for an unknown preset name or an algorithm without one.
    """
    if name not in PRESET_NAMES:
        raise ValueError(f"preset must be one of {list(PRESET_NAMES)}, got {name!r}")
    return recommended(algorithm, scenario)


def main(argv: list[str] | None = None) -> int:
    """Print the recommended settings as JSON."""
    p = argparse.ArgumentParser(prog="python -m lwmecps_rllib.presets",
                                description="Print the recommended settings per algorithm.")
    p.add_argument("--scenario", default="testbed-4bs")
    args = p.parse_args(argv)
    out = {name: recommended(name, args.scenario).to_dict() for name in RECOMMENDED}
    print(json.dumps({"scenario": args.scenario, "recommended": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
