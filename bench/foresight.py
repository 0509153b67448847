"""What the oracle's lead is made of: foresight of the users, or planning?

The oracle (:class:`lwmecps_rllib.baselines.Oracle`) scores every action by simulating
the next steps with the users the trace will bring. This script runs the same planner
with a *causal* forecast instead: the coming slots' users are taken as the most users
of each station over the last `w` measured slots (`w` = 1 is persistence), which is all
a policy can know. If the causal planner, with a perfect model of the cluster, cannot
beat `hpa`, the oracle's lead over `hpa` is foresight of the load, not a better rule a
policy could learn from the past.

Prints one JSON object (every policy's trace row, without the step series).

    python bench/foresight.py [--scenario testbed-4bs-peak] [--windows 1,3,6,30]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

import numpy as np

from lwmecps_rllib.baselines import Oracle
from lwmecps_rllib.cluster.view import ClusterView
from lwmecps_rllib.evaluate import evaluate
from lwmecps_rllib.spec import EnvOptions


class ForecastOracle(Oracle):
    """The oracle's planner on a causal forecast: the coming slots' users are each
    station's most users over the last `window` measured slots.

    Args:
        window: Measured slots the forecast looks back on (1: persistence).
    """

    def __init__(self, window: int = 1) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.name = f"forecast_max{window}"

    def act(self, view: ClusterView, obs: Any = None) -> Any:
        """The planner's best action for the forecast users."""
        trace = np.array(view.trace, copy=True)
        n = trace.shape[0]
        slot = view.slot  # next slot to be measured
        past = trace[[(slot - 1 - k) % n for k in range(self.window)]]
        forecast = past.max(axis=0)
        sc = view.scenario
        horizon = 2 + int(np.ceil(sc.pod_startup_s / sc.stabilization_time_s))
        for k in range(horizon * sc.slots_per_step):
            trace[(slot + k) % n] = forecast
        trace.flags.writeable = False
        return super().act(dataclasses.replace(view, trace=trace), obs)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="testbed-4bs-peak")
    p.add_argument("--trace", default="b")
    p.add_argument("--windows", default="1,3,6,30", help="comma list of look-back windows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="limit each run (default: the day)")
    args = p.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",") if w]
    extra = {f"forecast_max{w}": ForecastOracle(w) for w in windows}
    result = evaluate("LWMECPSEnv3", EnvOptions(scenario=args.scenario, trace=args.trace),
                      ["hpa", "threshold", "oracle"], args.seed, args.steps, extra=extra)
    rows = {}
    for name, run in result["results"].items():
        run.pop("series", None)
        rows[name] = run
    result["results"] = rows
    result["windows"] = windows
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
