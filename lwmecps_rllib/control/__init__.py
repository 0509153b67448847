"""The autoscaler: a controller running a policy against a Kubernetes cluster.

    python -m lwmecps_rllib.control --backend-config k8s/testbed/backend-config.yaml \\
        --policy-url http://127.0.0.1:8000 --mode shadow --fallback hpa

Each period it reads the managed Deployments and the metrics through the Kubernetes
backend, asks the policy (the Serve endpoint over HTTP with a timeout, or a model in
process), checks the answer, falls back to a rule (`hpa`, `threshold`) when the policy
errs, times out or answers something infeasible or out of bounds, and in `live` mode
applies the decision through the backend's guard rails; `shadow` applies nothing. Every
period is a line of the decision log and counted in Prometheus metrics.

* :mod:`~lwmecps_rllib.control.options`: the settings.
* :mod:`~lwmecps_rllib.control.observe`: reading the cluster.
* :mod:`~lwmecps_rllib.control.policies`: the HTTP and in-process policy clients.
* :mod:`~lwmecps_rllib.control.check`: what an answer must be to be used.
* :mod:`~lwmecps_rllib.control.controller`: the loop.
* :mod:`~lwmecps_rllib.control.telemetry`, :mod:`~lwmecps_rllib.control.decision_log`.
* :mod:`~lwmecps_rllib.control.build`: assembling one from the options.
"""

from lwmecps_rllib.control.build import build_controller
from lwmecps_rllib.control.controller import Controller
from lwmecps_rllib.control.options import ControlOptions
from lwmecps_rllib.control.policies import CAUSES, HttpPolicy, LocalPolicy, PolicyError

__all__ = ["CAUSES", "ControlOptions", "Controller", "HttpPolicy", "LocalPolicy",
           "PolicyError", "build_controller"]
