"""A small agent facade for notebooks, as in LWMECPS Gym, over an RLlib algorithm.

    agent = make_agent("ppo", "LWMECPSEnv3", scenario="testbed-4bs", learning_rate=3e-4)
    stats = agent.train(episodes=50)     # {"episode_rewards", "episode_steps", "episode_latencies"}
    action = agent.choose_action(obs)
    agent.save_model("runs/my-agent")
    agent.load_model("runs/my-agent")

Everything runs on the wrapped `Algorithm` (its env runner, learner and checkpoints); the
facade adds no second implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lwmecps_rllib import atomic
from lwmecps_rllib.algorithms import build_config
from lwmecps_rllib.algorithms.inference import greedy_actions
from lwmecps_rllib.spec import EnvOptions, TrainingSpec
from lwmecps_rllib.train import CHECKPOINT_MARKER, ensure_ray, is_checkpoint, save_atomic


def _episode_recorder(store: list[dict[str, float]]) -> Any:
    """An `on_episode_end` callback appending each episode's return, length and latency."""

    def record(*, episode: Any, prev_episode_chunks: list | None = None, **kwargs: Any) -> None:
        chunks = [*(prev_episode_chunks or []), episode]
        infos = [i for ch in chunks for i in ch.get_infos() if "latency" in i]
        store.append({
            "reward": float(sum(ch.get_return() for ch in chunks)),
            "steps": float(len(infos)),
            "latency": float(np.mean([i["latency"] for i in infos])) if infos else 0.0,
        })

    return record


class Agent:
    """`choose_action / train / save_model / load_model` over one RLlib algorithm.

    Args:
        algo: Algorithm name (`ppo`, `dqn`, `qlearning` or a registered name).
        env: Env name.
        scenario: Scenario name, path or object.
        seed: Seed.
        **params: Hyper-parameters (`learning_rate`, `discount_factor`, `epsilon`, ...).
    """

    def __init__(self, algo: str, env: str = "LWMECPSEnv3", scenario: Any = "testbed-4bs",
                 seed: int = 0, **params: Any) -> None:
        self._episodes: list[dict[str, float]] = []
        config = build_config(TrainingSpec(algorithm=algo, params=params, seed=seed), env,
                              EnvOptions(scenario=scenario))
        # A plain function over a list: RLlib deep-copies its config (a bound method would
        # take a copy of this object along), but functions and their closures are shared.
        config.callbacks(on_episode_end=_episode_recorder(self._episodes))
        ensure_ray()
        self.algo = config.build_algo()
        self.name = algo
        self.env_name = env

    @property
    def module(self) -> Any:
        """The algorithm's RLModule."""
        return self.algo.get_module()

    def choose_action(self, state: Any) -> Any:
        """The greedy action for one flat (`box`) observation."""
        a = greedy_actions(self.module, np.asarray(state, np.float32)[None])[0]
        return int(a) if np.ndim(a) == 0 else a.astype(np.int64)

    def train(self, episodes: int) -> dict[str, list[float]]:
        """Train until at least `episodes` more episodes have finished.

        Returns:
            Per finished episode: `episode_rewards`, `episode_steps`, `episode_latencies`.
        """
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        start = len(self._episodes)
        while len(self._episodes) - start < episodes:
            self.algo.train()
        done = self._episodes[start:]
        return {"episode_rewards": [e["reward"] for e in done],
                "episode_steps": [e["steps"] for e in done],
                "episode_latencies": [e["latency"] for e in done]}

    def save_model(self, path: str | Path) -> Path:
        """Checkpoint the algorithm (atomically) to `path`.

        `path` may be missing, empty or an earlier checkpoint (replaced); anything else
        is refused.

        Raises:
            FileExistsError: `path` holds something else than a checkpoint.
        """
        return save_atomic(self.algo, path)

    def load_model(self, path: str | Path) -> None:
        """Restore the algorithm from a checkpoint written by `save_model`.

        A checkpoint left half-replaced by a crash during `save_model` is restored first.

        Raises:
            FileNotFoundError: when `path` is not a checkpoint.
        """
        atomic.recover(path)
        if not is_checkpoint(path):
            raise FileNotFoundError(f"{str(path)!r} is not an algorithm checkpoint "
                                    f"(no {CHECKPOINT_MARKER})")
        self.algo.restore_from_path(str(Path(path).resolve()))
        # The learner holds the restored weights; the local env runner acts with its own
        # copy, which a weight sync would skip (its weights look newer), so copy them over.
        state = self.algo.learner_group.get_state(components="learner/rl_module")
        self.module.set_state(state["learner"]["rl_module"]["default_policy"])

    def close(self) -> None:
        """Stop the algorithm."""
        self.algo.stop()


def make_agent(name: str, env: str = "LWMECPSEnv3", **params: Any) -> Agent:
    """An :class:`Agent` for algorithm `name` on `env` (`scenario=` and `seed=` accepted)."""
    return Agent(name, env, **params)
