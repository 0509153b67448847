"""Users' history in the observation: past slots per station and windowed summaries.

An env with `history=k` observes, beside the last slot's users, the users of the `k`
slots before it (block `users_history`, (S, k), oldest first); with `history_windows=
(w1, w2, ...)` the mean and the max users of each station over the last `w` measured
slots, the last one included (block `users_window`, (S, W, 2): mean, max). Kubernetes'
HPA decides from such a window (its scale-down stabilisation takes the highest of the
last 5 minutes' recommendations); these blocks let a policy see the same. All values
are users over the scenario's most, capped at 1.

The history is a buffer of the last `H` measured slots' users, (B, H, S), newest last:
the env keeps it from its own measurements (on a real cluster too) and fills it at reset
from the replayed trace on the simulator, or with the first measurement on a cluster.
"""

from __future__ import annotations

import numpy as np

from lwmecps_rllib.envs.layout import ObsLayout
from lwmecps_rllib.spec import EnvOptions


def history_length(options: EnvOptions | None) -> int:
    """Slots the buffer keeps: enough for the history and the longest window; 0 when the
    options observe no history."""
    if options is None or not (options.history or options.history_windows):
        return 0
    return max((options.history + 1, *options.history_windows))


def history_blocks(n_stations: int, options: EnvOptions | None) -> list[tuple]:
    """The layout blocks the options add (none without history)."""
    if options is None:
        return []
    out: list[tuple] = []
    if options.history:
        out.append(("users_history", (n_stations, options.history), 0.0, 1.0))
    if options.history_windows:
        out.append(("users_window", (n_stations, len(options.history_windows), 2), 0.0, 1.0,
                    ("mean", "max")))
    return out


def initial_history(trace: np.ndarray, last_slot: np.ndarray, length: int) -> np.ndarray:
    """(B, H, S) users of the `H` slots up to `last_slot` (B,) of a trace, newest last."""
    rows = (np.asarray(last_slot)[:, None] - np.arange(length - 1, -1, -1)) % len(trace)
    return trace[rows].astype(np.float64)


def push(hist: np.ndarray, users: np.ndarray) -> None:
    """Append the newest slot's users (B, S) to the buffer (B, H, S), in place."""
    hist[:, :-1] = hist[:, 1:]
    hist[:, -1] = users


def history_meta(options: EnvOptions | None) -> dict:
    """What the encoder needs besides the blocks: the windows' lengths and the slots the
    buffer must hold."""
    return {"history_windows": tuple(options.history_windows) if options else (),
            "history_length": history_length(options)}


def summaries(hist: np.ndarray, k: int, windows: tuple[int, ...]
              ) -> tuple[np.ndarray, np.ndarray]:
    """What the history blocks hold, from a buffer (B, H, S) of users, newest last.

    Returns:
        (B, S, k) the `k` slots before the last, oldest first; and (B, S, W, 2) the mean
        and the max over each window of the last `w` slots (the last included).
    """
    past = hist[:, hist.shape[1] - 1 - k:-1, :].transpose(0, 2, 1)
    summary = np.empty((hist.shape[0], hist.shape[2], len(windows), 2))
    for i, w in enumerate(windows):
        recent = hist[:, -w:, :]
        summary[:, :, i, 0] = recent.mean(axis=1)
        summary[:, :, i, 1] = recent.max(axis=1)
    return past, summary


def write_history(layout: ObsLayout, out: np.ndarray, hist: np.ndarray | None,
                  max_users: float) -> None:
    """Fill the layout's history blocks of `out` (B, size) from the buffer (B, H, S).

    Raises:
        ValueError: the layout has history blocks but no buffer (or a short one) is given.
    """
    if "users_history" not in layout and "users_window" not in layout:
        return
    windows = layout.meta.get("history_windows", ())
    need = layout.meta.get("history_length", 0)
    if hist is None or hist.ndim != 3 or hist.shape[1] < need:
        got = None if hist is None else hist.shape
        raise ValueError(f"the observation has users' history: it needs the users of the "
                         f"last {need} slots per station, got {got}")
    k = layout["users_history"].shape[1] if "users_history" in layout else 0
    past, summary = summaries(np.minimum(hist / max_users, 1.0), k, windows)
    if "users_history" in layout:
        out[:, layout["users_history"].slice] = past.reshape(len(out), -1)
    if "users_window" in layout:
        out[:, layout["users_window"].slice] = summary.reshape(len(out), -1)
