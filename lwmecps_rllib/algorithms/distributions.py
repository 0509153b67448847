"""Independent categoricals over side-by-side logits, without distribution objects."""

from __future__ import annotations

from typing import Any

import torch


def head_groups(logits: torch.Tensor, dims: list[int]) -> list[torch.Tensor]:
    """Side-by-side logits as (B, k, n) groups of equal-sized heads, in head order.

    One group of all heads when every dimension has the same number of choices (one
    `log_softmax` or `argmax` call for all), else one group per head.

    Args:
        logits: (B, sum(dims)) logits, the heads side by side.
        dims: Choices per action dimension.
    """
    if len(set(dims)) == 1:
        return [logits.view(logits.shape[0], len(dims), dims[0])]
    return [x[:, None, :] for x in torch.split(logits, dims, dim=-1)]


def sample_categoricals(logits: torch.Tensor, dims: list[int], discrete: bool,
                        greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (or take the argmax of) one categorical per action dimension, with logp.

    The same draw as RLlib's `TorchMultiCategorical` (independent categoricals over
    side-by-side logits), in a few tensor ops: Gumbel-max sampling, log-probabilities
    from one `log_softmax`. Returning actions from the module spares the env runner
    building a distribution object per step.

    Args:
        logits: (B, sum(dims)) logits.
        dims: Choices per action dimension.
        discrete: Whether the action space is a single Discrete ((B,) actions).
        greedy: Argmax instead of sampling.

    Returns:
        Actions (B,) or (B, len(dims)) int64, and their log-probability (B,).
    """
    acts, logp = [], 0.0
    for lg in head_groups(logits, dims):
        if greedy:
            a = lg.argmax(-1)
        else:
            u = torch.rand_like(lg).clamp_(1e-20, 1.0)
            a = (lg - torch.log(-torch.log(u))).argmax(-1)
        logp = logp + torch.log_softmax(lg, -1).gather(-1, a[..., None]).squeeze(-1).sum(-1)
        acts.append(a)
    actions = torch.cat(acts, dim=1)
    return (actions[:, 0] if discrete else actions), logp


def categorical_logp_entropy(logits: torch.Tensor, dims: list[int],
                             actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of `actions` and entropy, summed over the action dimensions.

    The values of RLlib's `TorchMultiCategorical` (`logp`, `entropy`) from one
    `log_softmax`, without building a distribution object per head: the loss runs
    once per minibatch, and four `torch.distributions.Categorical` objects cost more
    than the network itself.

    Args:
        logits: (B, sum(dims)) logits, the heads side by side.
        dims: Choices per action dimension.
        actions: (B,) for a single Discrete space, else (B, len(dims)).

    Returns:
        `logp` (B,) and `entropy` (B,).
    """
    groups = head_groups(logits, dims)
    acts = actions.long().reshape(logits.shape[0], len(dims))
    picks = torch.split(acts, [g.shape[1] for g in groups], dim=1)
    logp = entropy = 0.0
    for lg, a in zip(groups, picks, strict=True):
        lsm = torch.log_softmax(lg, -1)
        logp = logp + lsm.gather(-1, a[..., None]).squeeze(-1).sum(-1)
        entropy = entropy - (lsm.exp() * lsm).sum(-1).sum(-1)
    return logp, entropy


def allowed_values(dims: list[int], mask: Any) -> torch.Tensor | None:
    """(sum(dims),) True where a head's value is allowed; None when every value is.

    Args:
        dims: Choices per action dimension.
        mask: Per head, one bool per value (`model_config["action_mask"]`), or None.

    Raises:
        ValueError: unless `mask` gives, per head, one flag per value with one true.
    """
    if mask is None:
        return None
    ok = len(mask) == len(dims) and all(
        len(m) == n and any(m) for m, n in zip(mask, dims, strict=False))
    if not ok:
        raise ValueError(f"action_mask must give, for each of the {len(dims)} action heads, "
                         f"one flag per value ({dims}) with at least one true")
    flat = torch.as_tensor([bool(x) for m in mask for x in m])
    return None if bool(flat.all()) else flat


def mask_logits(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Logits with the values outside the bounds pushed to -1e9 (probability 0, and a
    finite log-softmax, so entropies and losses stay finite)."""
    return logits if allowed is None else logits.masked_fill(~allowed, -1e9)
