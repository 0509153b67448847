"""What a policy's answer must be before the controller uses it.

An answer is refused (and the fallback rule decides) when it is not for this cluster (not
an LWMECPSEnv3 decision; a deployment missing, unknown, twice, or without replicas),
when a count is out of the backend's bounds `[min_replicas, max_replicas]`, or when the
counts together do not fit the nodes.
"""

from __future__ import annotations

import numpy as np

from lwmecps_rllib.cluster import core
from lwmecps_rllib.cluster.core import ClusterSpec
from lwmecps_rllib.control.policies import PolicyError
from lwmecps_rllib.serving.schema import PlacementResponse

ENV = "LWMECPSEnv3"


def checked_replicas(answer: PlacementResponse, spec: ClusterSpec, low: int,
                     high: int) -> np.ndarray:
    """The (D,) replicas of an answer, in the scenario's deployment order.

    Args:
        answer: The policy's response.
        spec: The compiled cluster (names, nodes, pod sizes).
        low: Fewest replicas allowed (`min_replicas`).
        high: Most replicas allowed (`max_replicas`).

    Raises:
        PolicyError: `infeasible` or `out_of_bounds`, naming the deployment.
    """
    if answer.env != ENV:
        raise PolicyError("infeasible", f"model {answer.model_id} decides for "
                                          f"{answer.env}, the controller scales ({ENV})")
    names = list(spec.scenario.deployment_names[: spec.n_deployments])
    pos = {n: i for i, n in enumerate(names)}
    out = np.full(len(names), -1, np.int64)
    for d in answer.decisions:
        if d.deployment not in pos:
            raise PolicyError("infeasible", f"unknown deployment {d.deployment!r}")
        i = pos[d.deployment]
        if out[i] >= 0:
            raise PolicyError("infeasible", f"deployment {d.deployment!r} decided twice")
        if d.replicas is None:
            raise PolicyError("infeasible", f"no replicas for {d.deployment!r}")
        if not low <= d.replicas <= high:
            raise PolicyError("out_of_bounds", f"{d.deployment}: {d.replicas} replicas, "
                                                 f"allowed {low}..{high}")
        out[i] = d.replicas
    missing = [n for n, v in zip(names, out, strict=True) if v < 0]
    if missing:
        raise PolicyError("infeasible", f"no decision for {missing[:3]}"
                                          f"{' ...' if len(missing) > 3 else ''}")
    if not core.fits(spec, out[None], spec.home_node[None])[0]:
        raise PolicyError("infeasible", f"{int(out.sum())} pods do not fit the nodes' CPU "
                                          f"and memory")
    return out
