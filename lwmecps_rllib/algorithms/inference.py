"""Greedy actions from a trained RLModule, as a policy that `evaluate` can run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"


def greedy_actions(module: RLModule, obs: np.ndarray) -> np.ndarray:
    """Greedy actions of `module` for a batch of flat observations (B, obs_dim)."""
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.as_tensor(obs, dtype=torch.float32)})
        if Columns.ACTIONS in out:
            return out[Columns.ACTIONS].cpu().numpy()
        dist = module.get_inference_action_dist_cls().from_logits(
            out[Columns.ACTION_DIST_INPUTS]).to_deterministic()
        return dist.sample().cpu().numpy()


def load_module(checkpoint: str | Path) -> RLModule:
    """The RLModule of an algorithm checkpoint (or of a module checkpoint folder).

    Raises:
        FileNotFoundError: when the folder holds no module checkpoint.
    """
    path = Path(checkpoint)
    for candidate in (path / MODULE_SUBDIR, path):
        if (candidate / "module_state.pkl").exists() or (candidate / "module_state.pt").exists() \
                or any(candidate.glob("module_state*")):
            return RLModule.from_checkpoint(str(candidate.resolve()))
    raise FileNotFoundError(f"no RLModule checkpoint under {str(path)!r} "
                            f"(expected {MODULE_SUBDIR}/module_state.*)")


class TrainedPolicy:
    """A trained module as an `evaluate` policy (greedy actions on the env's observation).

    Args:
        module: The trained RLModule.
        name: Its name in result tables.
        observation: The env options that shape what it observes (`history`,
            `history_windows`); a run gives it an env built with them.
    """

    def __init__(self, module: RLModule, name: str = "trained",
                 observation: dict[str, Any] | None = None) -> None:
        self.module = module
        self.name = name
        self.env_overrides = dict(observation or {})

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, name: str = "trained") -> TrainedPolicy:
        """The policy of a checkpoint folder, with the observation options it records."""
        from lwmecps_rllib.spec import read_observation_options

        return cls(load_module(checkpoint), name, read_observation_options(checkpoint))

    def reset(self, view: Any, seed: int) -> None:
        """Nothing to prepare."""

    def act(self, view: Any, obs: Any = None) -> Any:
        """The module's greedy action for the env's observation `obs` (not the view)."""
        a = greedy_actions(self.module, np.asarray(obs, np.float32)[None])[0]
        return int(a) if np.ndim(a) == 0 else a.astype(np.int64)
