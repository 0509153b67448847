"""Observation layouts: a flat (`box`) observation as named blocks built from the scenario.

Each env describes its box observation once, as an :class:`ObsLayout`: ordered blocks
with a name, a shape, optional column names and bounds. The compiled kernel writes at
the layout's offsets, the spaces come from its bounds, per-head views index it by
name, and serving encodes a request through the env's own encoder over the same
layout, so a change to what an env observes is made in one place.

    layout = LWMECPSEnv3.box_layout(spec)
    layout.index("users", 2)                   # flat index of station 2's users
    layout.index("nodes", 0, "latency")        # node 0's latency
    layout.view(obs, "replicas")               # (B, D) view of a batch of observations
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces


@dataclass(frozen=True)
class Block:
    """One named part of a flat observation."""

    name: str
    """Name (e.g. `nodes`, `users`)."""
    shape: tuple[int, ...]
    """Shape of the block (row-major in the flat observation)."""
    start: int
    """Offset of its first value."""
    low: float
    """Lower bound of every value."""
    high: float
    """Upper bound of every value."""
    columns: tuple[str, ...] | None = None
    """Names along the last axis (e.g. `cpu`, `ram`, ..., `latency`), if any."""

    @property
    def size(self) -> int:
        """Values in the block."""
        return int(np.prod(self.shape))

    @property
    def slice(self) -> slice:
        """Its slice of the flat observation."""
        return slice(self.start, self.start + self.size)


class ObsLayout:
    """Ordered named blocks of a flat observation.

    Args:
        blocks: `(name, shape, low, high)` or `(name, shape, low, high, columns)` in
            observation order; offsets follow from the shapes.
        meta: What else the encoder needs to fill the blocks (e.g. `history_windows`).
    """

    def __init__(self, blocks: list[tuple], meta: dict | None = None) -> None:
        self.meta = dict(meta or {})
        #: What an encoder derives once per layout (block offsets, a cluster's fixed
        #: rows); not part of the layout's description.
        self.cache: dict = {}
        out, start = [], 0
        for item in blocks:
            name, shape, low, high, *cols = item
            shape = tuple(int(x) for x in np.atleast_1d(shape))
            columns = tuple(cols[0]) if cols else None
            if columns is not None and len(columns) != shape[-1]:
                raise ValueError(f"block {name!r}: {len(columns)} column names for "
                                 f"{shape[-1]} columns")
            out.append(Block(name, shape, start, float(low), float(high), columns))
            start += out[-1].size
        self.blocks = tuple(out)
        self.size = start
        self._by_name = {b.name: b for b in self.blocks}

    def __getitem__(self, name: str) -> Block:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no block {name!r}; blocks: {list(self._by_name)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def index(self, name: str, *idx: int | str) -> int:
        """Flat index of one value: block name, then its indices (a column by name too)."""
        block = self[name]
        if len(idx) != len(block.shape):
            raise ValueError(f"block {name!r} has shape {block.shape}; got indices {idx}")
        pos = list(idx)
        if block.columns is not None and isinstance(pos[-1], str):
            pos[-1] = block.columns.index(pos[-1])
        return block.start + int(np.ravel_multi_index(tuple(int(p) for p in pos), block.shape))

    def view(self, obs: np.ndarray, name: str) -> np.ndarray:
        """A block of a batch of flat observations (B, size) as (B, *shape)."""
        block = self[name]
        return obs[..., block.slice].reshape(*obs.shape[:-1], *block.shape)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(size,) lower and upper bounds."""
        low = np.empty(self.size, np.float32)
        high = np.empty(self.size, np.float32)
        for b in self.blocks:
            low[b.slice] = b.low
            high[b.slice] = b.high
        return low, high

    def space(self) -> spaces.Box:
        """The gymnasium Box of the observation."""
        low, high = self.bounds()
        return spaces.Box(low, high, dtype=np.float32)

    def describe(self) -> list[dict]:
        """The layout as plain data (name, shape, start, bounds, columns)."""
        return [{"name": b.name, "shape": list(b.shape), "start": b.start, "low": b.low,
                 "high": b.high, "columns": list(b.columns) if b.columns else None}
                for b in self.blocks]
