"""Q-learning's RLModule: a Q-table over a discretised observation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from lwmecps_rllib.algorithms.common import FactorisedQModule
from lwmecps_rllib.algorithms.dqn.module import QF, QF_NEXT


class QTableModule(FactorisedQModule):
    """A table `Q[state, head, value]`, the module's only parameter.

    Discretisation (the documented mapping): each observation feature is clipped to its
    Box bounds and cut into `bins` equal bins; the vector of bin indices `b` is hashed
    to a row `state = (b . m) mod table_size` with fixed odd multipliers `m` (drawn once
    from seed 0), so any Box observation maps to one of `table_size` rows. As in DQN,
    a MultiDiscrete action is factorised: `Q(s, a) = mean_d Q[s, d, a_d]` and the greedy
    action is the per-head argmax. `model_config`: `bins` (4), `table_size` (16384),
    `epsilon_start`, `epsilon`, `epsilon_timesteps`.

    Unvisited entries: the table starts at 0 and rewards are negative, so an entry never
    updated would look best (and a row never visited would act with 0 replicas). When
    acting, every entry still at exactly 0 takes the mean of the updated entries of its
    column (that head and value over all visited states): states the agent never saw get
    the action that is good on average, not an arbitrary one. Training reads the raw
    table.
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        self.setup_actions()
        space = self.observation_space
        self.bins = int(self.model_config.get("bins", 4))
        self.table_size = int(self.model_config.get("table_size", 16384))
        low = np.nan_to_num(np.asarray(space.low, np.float64).ravel(), neginf=-1e6)
        high = np.nan_to_num(np.asarray(space.high, np.float64).ravel(), posinf=1e6)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("width", torch.tensor(np.maximum(high - low, 1e-9),
                                                   dtype=torch.float32))
        mult = np.random.default_rng(0).integers(1, 2**31 - 1, size=low.size) * 2 + 1
        self.register_buffer("mult", torch.tensor(mult, dtype=torch.int64))
        self.q = torch.nn.Parameter(torch.zeros(self.table_size, sum(self._dims)))

    def state_index(self, obs: torch.Tensor) -> torch.Tensor:
        """Row of the Q-table of each observation."""
        x = (obs.flatten(1).float() - self.low) / self.width
        b = torch.clamp((x * self.bins).long(), 0, self.bins - 1)
        return torch.remainder((b * self.mult).sum(-1), self.table_size)

    @override(FactorisedQModule)
    def heads(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """Q-values per head for each observation: list of (B, nvec[d])."""
        return list(torch.split(self.q[self.state_index(obs)], self._dims, dim=-1))

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

    @override(FactorisedQModule)
    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        rows = self.q[self.state_index(obs)]
        unset = rows == 0
        if bool(unset.any()):
            rows = torch.where(unset, self._column_prior().expand_as(rows), rows)
        acts = torch.stack([q.argmax(-1) for q in torch.split(rows, self._dims, dim=-1)], -1)
        return acts[:, 0] if self._discrete else acts

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        out = {QF: self.heads(batch[Columns.OBS])}
        if Columns.NEXT_OBS in batch:
            with torch.no_grad():
                out[QF_NEXT] = self.heads(batch[Columns.NEXT_OBS])
        return out
