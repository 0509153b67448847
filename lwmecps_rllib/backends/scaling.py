"""The scale-down rate limit of the Kubernetes backend, as an HPA's behavior policies."""

from __future__ import annotations

import math
from collections.abc import Callable

from lwmecps_rllib.backends.config import ScaleDownBehavior


class ScaleDownLimiter:
    """How far each deployment may scale down now, from the scales this backend sent.

    Each policy looks back `period_s`: the count at the period's start is the current
    count less what was added and plus what was removed since; a `pods` policy allows
    `value` pods fewer than that, a `percent` policy `value` percent fewer (rounded up, as
    the HPA does). `select` picks the policy allowing the most (`max`) or least (`min`)
    change; `disabled` allows none. The history is this object's (in memory, as the
    HPA's); a change made by someone else only moves the current count.

    Args:
        behavior: The policies.
        clock: Time source.
    """

    def __init__(self, behavior: ScaleDownBehavior, clock: Callable[[], float]) -> None:
        self.behavior = behavior
        self.clock = clock
        self.changes: dict[str, list[tuple[float, int]]] = {}
        """Per deployment, (time, replicas added) of each scale sent (negative: removed)."""

    def floor(self, deployment: str, current: int) -> int:
        """The fewest replicas `deployment`, now at `current`, may be scaled down to."""
        if self.behavior.select == "disabled":
            return current
        now = self.clock()
        floors = []
        for policy in self.behavior.policies:
            start = current - sum(delta for t, delta in self.changes.get(deployment, [])
                                  if t + policy.period_s > now)
            floors.append(start - policy.value if policy.type == "pods"
                          else math.ceil(start * (1 - policy.value / 100)))
        floor = min(floors) if self.behavior.select == "max" else max(floors)
        return min(floor, current)

    def limit(self, deployment: str, current: int, asked: int) -> int:
        """`asked`, raised to the floor when it scales down."""
        return max(asked, self.floor(deployment, current)) if asked < current else asked

    def record(self, deployment: str, delta: int) -> None:
        """Remember a scale by `delta` replicas, forgetting those past every period."""
        now = self.clock()
        horizon = max(p.period_s for p in self.behavior.policies)
        self.changes[deployment] = [(t, d) for t, d in self.changes.get(deployment, [])
                                    if t + horizon > now] + [(now, delta)]
