"""Q-learning's RLModule: a Q-table over a discretised observation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from lwmecps_rllib.algorithms.factorised_q import QF, QF_NEXT, FactorisedQModule
from lwmecps_rllib.algorithms.networks import head_feature_index

#: Training forward output: each observation's table row(s), for the learner's updates.
Q_ROWS = "q_table_rows"


class QTableModule(FactorisedQModule):
    """A table `Q[state, head, value]`, the module's only parameter.

    Discretisation (the documented mapping): each observation feature is clipped to its
    Box bounds and cut into `bins` equal bins, and a vector of bin indices `b` maps to a
    row `(b . m) mod table_size`: with mixed-radix multipliers `m = bins^i` when
    `bins^k` rows fit the table (exact, no collisions), else with fixed odd multipliers
    drawn once from seed 0 (a hash). As in DQN, a MultiDiscrete action is factorised:
    `Q(s, a) = mean_d Q_d(s, a_d)` and the greedy action is the per-head argmax.

    Two views of the state:

    - global (no `head_features`): every head reads the row of the whole observation,
      `Q_d(s, a_d) = Q[row(s), d, a_d]`.
    - local (`head_features`, one list of observation indices per head, e.g. a
      deployment's users, replicas, ready replicas and node latency from
      :func:`lwmecps_rllib.envs.head_views`): head `d` reads the row of its own few
      features, and all heads share one table, `Q_d(s, a_d) = Q[row(s[f_d]), a_d]`
      (parameter sharing: every deployment's experience trains the same entries, so
      a state seen at one station is known at all).

    `model_config`: `bins` (10), `table_size` (16384), `head_features` (None),
    `epsilon_start`, `epsilon`, `epsilon_timesteps`.

    Unvisited entries: the table starts at 0 and rewards are negative, so an entry never
    updated would look best (and a row never visited would act with 0 replicas). Every
    entry still at exactly 0 is therefore read as the mean of the updated entries of its
    column (that head and value over all visited states) — when acting, so states the
    agent never saw get the action that is good on average, and in the TD target's
    `max_a' Q(s', a')`, so a next state with untried actions is not valued at 0 (which
    would favour actions leading to rarely visited states, e.g. more replicas).
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        self.setup_actions()
        space = self.observation_space
        self.bins = int(self.model_config.get("bins", 10))
        self.table_size = int(self.model_config.get("table_size", 16384))
        low = np.nan_to_num(np.asarray(space.low, np.float64).ravel(), neginf=-1e6)
        high = np.nan_to_num(np.asarray(space.high, np.float64).ravel(), posinf=1e6)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("width", torch.tensor(np.maximum(high - low, 1e-9),
                                                   dtype=torch.float32))
        views = head_feature_index(self.model_config.get("head_features"), self._dims,
                                   low.size)
        self.local = views is not None
        if self.local:
            self.register_buffer("views", torch.tensor(views))
        k = views.shape[1] if self.local else low.size
        if self.bins ** k <= self.table_size:
            mult = self.bins ** np.arange(k, dtype=np.int64)
        else:
            mult = np.random.default_rng(0).integers(1, 2**31 - 1, size=k) * 2 + 1
        self.register_buffer("mult", torch.tensor(mult, dtype=torch.int64))
        width = self._dims[0] if self.local else sum(self._dims)
        self.q = torch.nn.Parameter(torch.zeros(self.table_size, width))

    def state_index(self, obs: torch.Tensor) -> torch.Tensor:
        """Row of the Q-table of each observation: (B,), or (B, heads) with local views."""
        x = (obs.flatten(1).float() - self.low) / self.width
        b = torch.clamp((x * self.bins).long(), 0, self.bins - 1)
        if self.local:
            b = b[:, self.views]
        return torch.remainder((b * self.mult).sum(-1), self.table_size)

    def entry_ids(self, rows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, heads) flat index into `q` of the entry each head's taken action uses.

        Args:
            rows: The observations' table rows (:meth:`state_index`; the `Q_ROWS`
                output of the training forward pass).
            actions: The taken actions, (B,) or (B, heads).
        """
        if actions.dim() == 1:
            actions = actions[:, None]
        if self.local:
            return rows * self._dims[0] + actions.long()
        offsets = torch.tensor(np.cumsum([0, *self._dims[:-1]]), dtype=torch.int64)
        return rows[:, None] * sum(self._dims) + offsets + actions.long()

    def _rows(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, heads, values) with local views, else (B, sum of values)."""
        return self.q[self.state_index(obs)]

    def _split(self, rows: torch.Tensor) -> list[torch.Tensor]:
        if self.local:
            return list(rows.unbind(1))
        return list(torch.split(rows, self._dims, dim=-1))

    @override(FactorisedQModule)
    def heads(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """Q-values per head for each observation: list of (B, nvec[d])."""
        return self._split(self._rows(obs))

    def _column_prior(self) -> torch.Tensor:
        """Mean of the updated entries of each column, recomputed only when the table
        changed (a learner step or new weights), not on every action."""
        version = (self.q.data_ptr(), self.q._version)
        if getattr(self, "_prior_version", None) != version:
            with torch.no_grad():
                updated = self.q != 0
                self._prior = (self.q * updated).sum(0) / updated.sum(0).clamp(min=1)
            self._prior_version = version
        return self._prior

    def filled_heads(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """Q-values per head with never-updated entries read as their column's mean."""
        with torch.no_grad():
            rows = self._rows(obs)
            unset = rows == 0
            if bool(unset.any()):
                rows = torch.where(unset, self._column_prior().expand_as(rows), rows)
            return self._split(rows)

    @override(FactorisedQModule)
    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        acts = self.best_actions(self.filled_heads(obs))
        return acts[:, 0] if self._discrete else acts

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        rows = self.state_index(batch[Columns.OBS])
        out = {QF: self._split(self.q[rows]), Q_ROWS: rows}
        if Columns.NEXT_OBS in batch:
            with torch.no_grad():
                out[QF_NEXT] = self.filled_heads(batch[Columns.NEXT_OBS])
        return out
