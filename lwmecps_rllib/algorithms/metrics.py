"""The env's step metrics per episode, and every result under the platform's fixed names."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override

#: Step-info keys averaged per episode and reported under `env/`.
ENV_METRICS = ("latency", "resource_usage", "pod_count", "failed_requests")


class EnvMetricsCallback(RLlibCallback):
    """Per-episode means of the env's step metrics, logged next to RLlib's episode stats.

    Each env runner keeps the means of its last `window` episodes and logs their
    average once per `sample()` call, rather than four values per episode: the same
    figure as RLlib's own `window=100` episode stats, at a fraction of the logging cost
    when episodes are short.
    """

    def __init__(self, window: int = 100) -> None:
        super().__init__()
        self._recent = {key: collections.deque(maxlen=window) for key in ENV_METRICS}

    @override(RLlibCallback)
    def on_episode_end(self, *, episode: Any, prev_episode_chunks: list | None = None,
                       **kwargs: Any) -> None:
        """Average `latency`, `resource_usage`, `pod_count`, `failed_requests` over the episode."""
        infos = [info for chunk in [*(prev_episode_chunks or []), episode]
                 for info in chunk.get_infos() if "latency" in info]
        if infos:
            for key, recent in self._recent.items():
                recent.append(sum(info[key] for info in infos) / len(infos))

    @override(RLlibCallback)
    def on_sample_end(self, *, metrics_logger: Any = None, **kwargs: Any) -> None:
        """Log the average over the recent episodes."""
        if metrics_logger is None:
            return
        for key, recent in self._recent.items():
            if recent:
                metrics_logger.log_value(key, float(sum(recent)) / len(recent), reduce="mean",
                                         window=1)

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm: Any, metrics_logger: Any = None,
                        result: dict[str, Any], **kwargs: Any) -> None:
        """Add the fixed names (`env/total_reward`, `losses/...`) to every result.

        Tune, its loggers and W&B then show `env/total_reward`, `env/steps`,
        `env/latency`, `env/resource_usage`, `env/pod_count` and `losses/...`.
        """
        for key, value in flat_metrics(result).items():
            group, name = key.split("/", 1)
            result.setdefault(group, {})[name] = value


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """An algorithm's result as the platform's fixed metric names.

    `env/total_reward`, `env/steps`, `env/latency`, `env/resource_usage`,
    `env/pod_count`, `env/failed_requests`, `env/env_steps_lifetime`, and every scalar
    learner stat of the default module as `losses/<name>`.
    """
    env = result.get("env_runners", {})
    out = {
        "env/total_reward": env.get("episode_return_mean", float("nan")),
        "env/steps": env.get("episode_len_mean", float("nan")),
        "env/env_steps_lifetime": env.get("num_env_steps_sampled_lifetime", 0),
        "env/episodes_lifetime": env.get("num_episodes_lifetime", 0),
    }
    for key in ENV_METRICS:
        out[f"env/{key}"] = env.get(key, float("nan"))
    learner = result.get("learners", {}).get("default_policy", {})
    for key, value in learner.items():
        if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
            out[f"losses/{key}"] = float(value)
    return {k: float(v) for k, v in out.items()}
