"""The networks of our modules: MLPs whose outputs are the action heads side by side."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch


def action_dims(space: gym.Space) -> list[int]:
    """Choices per action dimension: `[n]` for Discrete, `nvec` for MultiDiscrete.

    Raises:
        ValueError: for any other action space.
    """
    if isinstance(space, gym.spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [int(n) for n in np.asarray(space.nvec).ravel()]
    raise ValueError(f"action space must be Discrete or MultiDiscrete, got {space}")


def mlp(in_dim: int, hidden: list[int], out_dim: int) -> torch.nn.Sequential:
    """A ReLU MLP.

    Args:
        in_dim: Input features.
        hidden: Sizes of the hidden layers, each followed by a ReLU.
        out_dim: Outputs (no activation).
    """
    layers: list[torch.nn.Module] = []
    last = in_dim
    for h in hidden:
        layers += [torch.nn.Linear(last, h), torch.nn.ReLU()]
        last = h
    layers.append(torch.nn.Linear(last, out_dim))
    return torch.nn.Sequential(*layers)


def head_feature_index(views: Any, dims: list[int], obs_dim: int) -> np.ndarray | None:
    """`model_config["head_features"]` checked against the spaces: (heads, k) or None.

    Raises:
        ValueError: unless it gives, for each action head (all of one size), the same
            number of indices into the flat observation.
    """
    if views is None:
        return None
    arr = np.asarray(views, dtype=np.int64)
    if (arr.ndim != 2 or arr.shape[0] != len(dims) or len(set(dims)) != 1
            or arr.min() < 0 or arr.max() >= obs_dim):
        raise ValueError(f"head_features must give, for each of the {len(dims)} action heads "
                         f"(all of one size), the same number of observation indices in "
                         f"[0, {obs_dim}), got {views!r}")
    return arr


class SharedHeadMLP(torch.nn.Module):
    """One MLP shared by the action heads: head `d` reads its own features
    (`views[d]`), then the whole observation, and outputs its `n` values.

    `forward` returns (B, heads * n), the heads side by side, the layout of a plain
    MLP with `sum(nvec)` outputs.
    """

    def __init__(self, views: np.ndarray, obs_dim: int, hidden: list[int], n: int) -> None:
        super().__init__()
        self.register_buffer("views", torch.tensor(views))
        self.net = mlp(views.shape[1] + obs_dim, hidden, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, obs_dim) -> (B, heads * n)."""
        per_head = torch.cat([x[:, self.views],
                              x[:, None, :].expand(-1, self.views.shape[0], -1)], -1)
        return self.net(per_head).flatten(1)


def heads_mlp(model_config: dict[str, Any], dims: list[int], obs_dim: int,
              hidden: list[int]) -> torch.nn.Module:
    """The network of the action heads: (B, obs_dim) -> (B, sum(dims)).

    A plain MLP over the whole observation, or with `model_config["head_features"]`
    (`views="local"`) a :class:`SharedHeadMLP`.

    Args:
        model_config: The module's `model_config` (reads `head_features`).
        dims: Choices per action dimension.
        obs_dim: Size of the flat observation.
        hidden: Sizes of the hidden layers.
    """
    views = head_feature_index(model_config.get("head_features"), dims, obs_dim)
    if views is None:
        return mlp(obs_dim, hidden, sum(dims))
    return SharedHeadMLP(views, obs_dim, hidden, dims[0])
