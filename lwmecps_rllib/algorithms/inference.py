"""Greedy actions from a trained RLModule, as a policy that `evaluate` can run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from lwmecps_rllib import atomic
from lwmecps_rllib.algorithms.networks import StationNet

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

    A checkpoint left half-replaced by a crash during a save is restored first
    (:func:`lwmecps_rllib.atomic.recover`).

    Raises:
        FileNotFoundError: when the folder holds no module checkpoint.
    """
    path = Path(checkpoint)
    atomic.recover(path)
    for candidate in (path / MODULE_SUBDIR, path):
        if (candidate / "module_state.pkl").exists() or (candidate / "module_state.pt").exists() \
                or any(candidate.glob("module_state*")):
            return RLModule.from_checkpoint(str(candidate.resolve()))
    raise FileNotFoundError(f"no RLModule checkpoint under {str(path)!r} "
                            f"(expected {MODULE_SUBDIR}/module_state.*)")


def is_size_general(module: RLModule) -> bool:
    """Whether the module decides for any number of stations (its networks are
    :class:`StationNet`, trained on the graph observation)."""
    return any(isinstance(m, StationNet) for m in module.modules())


def fit_graph_module(module: RLModule, spec: Any, observation: dict[str, Any]) -> int:
    """Point a station-shared module at the graph observation of cluster `spec`.

    Its weights do not depend on the number of stations: only where the blocks sit in
    the flat observation and how many action heads there are change. The observation
    then has one row per station of `spec` (no padding).

    Args:
        module: A module whose networks are :class:`StationNet` (trained on
            `obs_format="graph"`).
        spec: The compiled cluster (LWMECPSEnv3's).
        observation: The observation options the module was trained with (history).

    Returns:
        The observation's size.

    Raises:
        ValueError: the cluster's replica range differs from the module's.
    """
    from lwmecps_rllib.envs.graph import graph_layout, graph_model_config
    from lwmecps_rllib.spec import EnvOptions

    opts = EnvOptions.parse({**observation, "obs_format": "graph", "max_stations": None})
    layout = graph_layout(spec, opts)
    graph = graph_model_config(layout)
    for net in module.modules():
        if isinstance(net, StationNet):
            if net.g["values"] != graph["values"] or net.g["columns"] != graph["columns"]:
                raise ValueError(
                    f"the model decides among {net.g['values']} replica counts from "
                    f"{net.g['columns']} features per station; this cluster needs "
                    f"{graph['values']} counts (max_replicas + 1) and {graph['columns']}")
            net.g = dict(graph)
    module.set_heads([graph["values"]] * graph["rows"])
    return layout.size


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

    @property
    def size_general(self) -> bool:
        """Whether the module decides for any number of stations (graph observation)."""
        return is_size_general(self.module)

    def reset(self, view: Any, seed: int) -> None:
        """A size-general module is fitted to the cluster's station count."""
        if self.size_general:
            fit_graph_module(self.module, view.spec, self.env_overrides)

    def act(self, view: Any, obs: Any = None) -> Any:
        """The module's greedy action for the env's observation `obs` (not the view)."""
        a = greedy_actions(self.module, np.asarray(obs, np.float32)[None])[0]
        return int(a) if np.ndim(a) == 0 else a.astype(np.int64)
