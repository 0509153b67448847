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


def hidden_sizes(model_config: dict[str, Any]) -> list[int]:
    """`model_config["hidden"]`, or the default: [128, 128] for an MLP over the whole
    observation, [64, 64] for a :class:`StationNet` (applied once per station)."""
    default = [64, 64] if model_config.get("graph") else [128, 128]
    return list(model_config.get("hidden", default))


def value_net(model_config: dict[str, Any], obs_dim: int, hidden: list[int]
              ) -> torch.nn.Module:
    """A value network (B, obs_dim) -> (B, 1): an MLP, or a pooled :class:`StationNet`
    over the graph observation."""
    if model_config.get("graph"):
        return StationNet(model_config["graph"], hidden, "value")
    return mlp(obs_dim, hidden, 1)


def heads_mlp(model_config: dict[str, Any], dims: list[int], obs_dim: int,
              hidden: list[int]) -> torch.nn.Module:
    """The network of the action heads: (B, obs_dim) -> (B, sum(dims)).

    A plain MLP over the whole observation, with `model_config["head_features"]`
    (`views="local"`) a :class:`SharedHeadMLP`, with `model_config["graph"]` (the graph
    observation) a :class:`StationNet`.

    Args:
        model_config: The module's `model_config` (reads `head_features`).
        dims: Choices per action dimension.
        obs_dim: Size of the flat observation.
        hidden: Sizes of the hidden layers.
    """
    if model_config.get("graph"):
        return StationNet(model_config["graph"], hidden, "logits")
    views = head_feature_index(model_config.get("head_features"), dims, obs_dim)
    if views is None:
        return mlp(obs_dim, hidden, sum(dims))
    return SharedHeadMLP(views, obs_dim, hidden, dims[0])


def order_free_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """`x.sum(dim)` whose value does not depend on the order along `dim`.

    A float sum rounds differently in another order; this one adds the values in fixed
    point (2^-24 steps, exact in int64) and keeps the float sum's gradient, so the
    stations' order changes no bit of the pooled context and the equivariance of
    :class:`StationNet` is exact. (Sorting first does the same at 30x the cost.)
    """
    plain = x.sum(dim)
    fixed = torch.round(x.detach().double() * 2.0**24).long().sum(dim)
    exact = (fixed.double() / 2.0**24).to(x.dtype)
    return plain + (exact - plain).detach()


class StationNet(torch.nn.Module):
    """One network for every station of a graph observation (`obs_format="graph"`).

    Each station's row (with the time of day) is embedded by a shared MLP `phi`; the
    embeddings of the real stations (`station_mask`) are pooled (mean and max) into a
    context of the whole cluster. With `out="logits"` a shared MLP `psi` maps each
    station's embedding and the context to its `values` logits (the values `allowed`
    forbids pushed to -1e9); with `out="value"` an MLP maps the context to one value.
    No weight depends on the number of stations, and reordering the stations reorders
    the logits the same way (permutation equivariance; the value is invariant).

    Args:
        graph: Block offsets and sizes (:func:`lwmecps_rllib.envs.graph.graph_model_config`).
        hidden: Hidden layer sizes of `phi` (its last size is the embedding) and `psi`.
        out: `"logits"` (B, rows * values) or `"value"` (B, 1).
    """

    def __init__(self, graph: dict[str, int], hidden: list[int], out: str = "logits") -> None:
        super().__init__()
        if out not in ("logits", "value"):
            raise ValueError(f"out must be 'logits' or 'value', got {out!r}")
        self.g = {k: int(v) for k, v in graph.items()}
        self.out = out
        emb = hidden[-1]
        self.phi = torch.nn.Sequential(mlp(self.g["columns"] + 2, hidden[:-1], emb),
                                       torch.nn.ReLU())
        if out == "logits":
            # psi's first layer on [own embedding, context, time], split in two: the
            # context-and-time part is computed once per cluster, not once per station.
            self.psi_own = torch.nn.Linear(emb, hidden[0])
            self.psi_ctx = torch.nn.Linear(2 * emb + 2, hidden[0], bias=False)
            self.psi = torch.nn.Sequential(torch.nn.ReLU(),
                                           mlp(hidden[0], hidden[1:], self.g["values"]))
        else:
            self.psi = mlp(2 * emb + 2, hidden, 1)

    def blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(rows (B, M, F), mask (B, M), allowed (B, M, A), time (B, 2)) of a batch."""
        g, b = self.g, x.shape[0]
        m, f, a = g["rows"], g["columns"], g["values"]
        rows = x[:, g["stations"]:g["stations"] + m * f].reshape(b, m, f)
        mask = x[:, g["station_mask"]:g["station_mask"] + m]
        allowed = x[:, g["allowed"]:g["allowed"] + m * a].reshape(b, m, a) > 0.5
        time = x[:, g["time_of_day"]:g["time_of_day"] + 2]
        return rows, mask, allowed, time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, obs_dim) -> (B, rows * values) masked logits, or (B, 1) values."""
        rows, mask, allowed, time = self.blocks(x)
        m = rows.shape[1]
        t = time[:, None, :].expand(-1, m, -1)
        emb = self.phi(torch.cat([rows, t], -1))
        w = mask[..., None]
        mean = order_free_sum(emb * w, 1) / w.sum(1).clamp(min=1.0)
        mx = emb.masked_fill(w <= 0.5, -1e9).max(1).values
        ctx = torch.cat([mean, mx], -1)
        if self.out == "value":
            return self.psi(torch.cat([ctx, time], -1))
        first = self.psi_own(emb) + self.psi_ctx(torch.cat([ctx, time], -1))[:, None, :]
        return self.psi(first).masked_fill(~allowed, -1e9).flatten(1)
