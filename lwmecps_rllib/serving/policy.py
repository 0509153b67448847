"""A trained checkpoint answering placement requests, with no Serve needed.

    policy = PlacementPolicy.load("production")               # from the model registry
    policy.decide([PlacementRequest(**body)])

A request is encoded by building the cluster core's state and measurement from it and
calling the env's own box encoder (`LWMECPSEnv3.encode_box`, ...), so serving sees
exactly what the env's observation layout defines; a request may override the nodes'
capacity and usage and the time of day.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from lwmecps_rllib.cluster.core import ClusterState, Measurement
from lwmecps_rllib.envs.history import history_length
from lwmecps_rllib.envs.lwmecps_env import placement_capacity
from lwmecps_rllib.envs.names import ENV_NAMES
from lwmecps_rllib.envs.registration import env_class, env_options
from lwmecps_rllib.scenarios import load_scenario
from lwmecps_rllib.scenarios.loader import SHIPPED
from lwmecps_rllib.serving.schema import (
    DAY_S,
    Decision,
    PlacementRequest,
    PlacementResponse,
    RequestError,
    Resources,
)
from lwmecps_rllib.spec import read_observation_options, read_trained_stations


def _users(req: PlacementRequest, stations: list[str]) -> np.ndarray:
    """(S,) users per station, in the model's station order (errors name the station)."""
    unknown = sorted(set(req.users) - set(stations))
    if unknown:
        raise RequestError(f"users.{unknown[0]}", f"unknown station; the model knows {stations}")
    missing = [s for s in stations if s not in req.users]
    if missing:
        raise RequestError("users", f"missing station {missing[0]!r}; give all of {stations}")
    out = np.empty(len(stations))
    for i, s in enumerate(stations):
        v = req.users[s]
        if v < 0:
            raise RequestError(f"users.{s}", f"must be >= 0, got {v}")
        out[i] = v
    return out


def _index(items: list[Any], names: list[str], what: str) -> list[int]:
    """Position in `names` of each item's name; errors name the item."""
    if len(items) != len(names):
        raise RequestError(what, f"the model was trained for {len(names)} {what}, "
                                 f"got {len(items)}")
    pos = {n: i for i, n in enumerate(names)}
    seen: set[str] = set()
    out = []
    for k, item in enumerate(items):
        if item.name not in pos:
            raise RequestError(f"{what}[{k}].name", f"unknown {what[:-1]} {item.name!r}; "
                                                    f"the model knows {names}")
        if item.name in seen:
            raise RequestError(f"{what}[{k}].name", f"duplicate {what[:-1]} {item.name!r}")
        seen.add(item.name)
        out.append(pos[item.name])
    return out


class PlacementPolicy:
    """A trained checkpoint answering placement requests (no Serve needed).

    Args:
        module: The trained RLModule.
        env: Env it was trained on (`LWMECPSEnv3`, `LWMECPSEnv`, `LWMECPSEnv2`).
        scenario: Scenario name or path (node, deployment and station names, scales).
        model_id: Id reported with every decision.
        info: What `GET /v1/model` shows.
        observation: The observation options it was trained with (history, graph).
        stations: A size-general model's supported station counts `[least, most]`
            (default: its scenario's count at both ends).
    """

    #: Clusters of other scenarios a size-general policy keeps fitted copies for.
    MAX_FITTED = 16

    def __init__(self, module: Any, env: str, scenario: str, model_id: str,
                 info: dict[str, Any] | None = None,
                 observation: dict[str, Any] | None = None,
                 stations: list[int] | None = None) -> None:
        if env not in ENV_NAMES:
            raise ValueError(f"env must be one of {list(ENV_NAMES)}, got {env!r}")
        self.module = module
        self.env_name = env
        self.model_id = model_id
        self.env_cls = env_class(env)
        self.sc = load_scenario(scenario)
        self.options = env_options(env, {"scenario": scenario, **(observation or {})})
        self.spec = self.env_cls.build_spec(self.sc, self.options)
        self.layout = self.env_cls.box_layout(self.spec, self.options)
        self.size_general = self._fit_size_general(observation or {})
        self.scenario_name = str(scenario)
        self.observation = dict(observation or {})
        n = len(self.sc.stations)
        self.station_range = ([int(v) for v in stations] if self.size_general and stations
                              else [n, n])
        self._fitted: dict[str, PlacementPolicy] = {}
        self.hist_len = history_length(self.options)
        self.info = {"model_id": model_id, "env": env, "scenario": scenario,
                     "observation": dict(observation or {}),
                     "size_general": self.size_general, "stations": self.station_range,
                     "history_slots": max(self.hist_len - 1, 0), **(info or {})}
        self.obs_dim = self.layout.size
        self.pinned = self.env_cls.action_kind == "replicas"
        self.node_names = list(self.sc.node_names)
        self.dep_names = list(self.sc.deployment_names[: self.spec.n_deployments])
        self.stations = [s.name for s in self.sc.stations]
        self._cap = placement_capacity(self.spec)
        self._cap_max = self._cap.max(axis=0)
        probe = np.zeros((1, self.obs_dim), np.float32)
        try:
            self.actions(probe)
        except RuntimeError as exc:
            raise ValueError(f"checkpoint {model_id!r} does not take {env} observations of "
                             f"scenario {scenario!r} ({self.obs_dim} values): {exc}") from exc

    def _fit_size_general(self, observation: dict[str, Any]) -> bool:
        """Fit a station-shared module (graph observation) to this scenario's stations;
        whether the module is one."""
        from lwmecps_rllib.algorithms.inference import fit_graph_module, is_size_general

        if not is_size_general(self.module):
            return False
        fit_graph_module(self.module, self.spec, observation)
        return True

    def for_scenario(self, scenario: str | None) -> PlacementPolicy:
        """The policy deciding for the cluster of `scenario` (a shipped scenario name):
        itself for its own scenario; for a size-general model, a copy of it fitted to
        that cluster (kept for the next request).

        Raises:
            RequestError: (field `scenario`) an unknown scenario, a model bound to its own
                scenario, or a cluster outside the model's station range (the message
                names the range).
        """
        if scenario is None or scenario == self.scenario_name:
            return self
        if scenario not in SHIPPED:
            raise RequestError("scenario", f"unknown scenario {scenario!r}; allowed: "
                                           f"{list(SHIPPED)}")
        if not self.size_general:
            raise RequestError("scenario", f"model {self.model_id!r} decides for scenario "
                                           f"{self.scenario_name!r} only (it is not "
                                           f"size-general)")
        fitted = self._fitted.get(scenario)
        if fitted is None:
            n = len(load_scenario(scenario).stations)
            least, most = self.station_range
            if not least <= n <= most:
                raise RequestError("scenario", f"{scenario!r} has {n} stations; model "
                                               f"{self.model_id!r} supports {least} to "
                                               f"{most} stations")
            if len(self._fitted) >= self.MAX_FITTED:
                self._fitted.pop(next(iter(self._fitted)))
            info = {k: v for k, v in self.info.items()
                    if k not in ("model_id", "env", "scenario", "observation",
                                 "size_general", "stations", "history_slots")}
            fitted = PlacementPolicy(copy.deepcopy(self.module), self.env_name, scenario,
                                     self.model_id, info, self.observation,
                                     self.station_range)
            self._fitted[scenario] = fitted
        return fitted

    # -- loading

    @classmethod
    def from_checkpoint(cls, path: str | Path, env: str = "LWMECPSEnv3",
                        scenario: str = "testbed-4bs", model_id: str | None = None,
                        info: dict[str, Any] | None = None) -> PlacementPolicy:
        """A policy from an algorithm (or module) checkpoint folder."""
        from lwmecps_rllib.algorithms.inference import load_module

        module = load_module(path)
        return cls(module, env, scenario, model_id or f"checkpoint:{Path(path).name}",
                   {"checkpoint": str(path), **(info or {})}, read_observation_options(path),
                   (info or {}).get("config", {}).get("stations")
                   or read_trained_stations(path))

    @classmethod
    def load(cls, model: str, registry: str | Path | None = None, env: str | None = None,
             scenario: str | None = None) -> PlacementPolicy:
        """A checkpoint path, or a registry model id or stage (`production`, `candidate`).

        Raises:
            ValueError: when neither resolves (the message says what was tried).
        """
        from lwmecps_rllib.model_registry import resolve

        path, rec = resolve(model, registry, env=env, scenario=scenario)
        if rec is None:
            return cls.from_checkpoint(path, env or "LWMECPSEnv3", scenario or "testbed-4bs")
        return cls.from_record(path, rec)

    @classmethod
    def from_record(cls, path: str | Path, rec: Any) -> PlacementPolicy:
        """A policy from a registry record and its verified checkpoint folder."""
        info = {"algorithm": rec.algorithm, "stage": rec.stage, "metrics": rec.metrics,
                "config": rec.config, "created_at": rec.created_at}
        return cls.from_checkpoint(path, rec.env, rec.scenario, rec.id, info)

    # -- encoding

    def _capacity(self, req: PlacementRequest, node_pos: list[int]) -> np.ndarray:
        """(N, 6) node capacity: the scenario's, with the request's overrides."""
        cap = self._cap.copy()
        for k, node in enumerate(req.nodes):
            for j, field in enumerate(Resources.model_fields):
                v = getattr(node.capacity, field)
                if v is not None:
                    if v <= 0:
                        raise RequestError(f"nodes[{k}].capacity.{field}", f"must be > 0, got {v}")
                    cap[node_pos[k], j] = v
        return cap

    def _history(self, req: PlacementRequest, users: np.ndarray) -> np.ndarray | None:
        """(1, H, S) users of the last slots, newest last, when the model observes them."""
        if not self.hist_len:
            return None
        need = self.hist_len - 1
        given = req.users_history or {}
        hist = np.empty((1, self.hist_len, len(self.stations)))
        hist[0, -1] = users
        for i, s in enumerate(self.stations):
            past = given.get(s)
            if past is None or len(past) < need:
                raise RequestError(f"users_history.{s}" if req.users_history else
                                   "users_history",
                                   f"this model observes the users' history: give the users "
                                   f"of the last {need} slots before `users` for every "
                                   f"station {self.stations}, oldest first")
            if any(v < 0 for v in past[-need:]):
                raise RequestError(f"users_history.{s}", "users must be >= 0")
            hist[0, :-1, i] = past[len(past) - need:] if need else []
        return hist

    def encode(self, req: PlacementRequest) -> np.ndarray:
        """The env's flat observation for a request (raises RequestError naming the field)."""
        node_pos = _index(req.nodes, self.node_names, "nodes")
        dep_pos = _index(req.deployments, self.dep_names, "deployments")
        users = _users(req, self.stations)
        hist = self._history(req, users)
        cap = self._capacity(req, node_pos)
        n, d = len(self.node_names), len(self.dep_names)
        latency = np.zeros(n)
        for k, node in enumerate(req.nodes):
            latency[node_pos[k]] = node.avg_latency_ms
        m = Measurement.from_parts(0.0, 0.0, 0.0, latency[None], np.ones((1, n)), users[None])
        replicas, ready = np.zeros(d, np.int64), np.zeros(d, np.int64)
        nodes = self.spec.home_node.copy()
        for k, dep in enumerate(req.deployments):
            i = dep_pos[k]
            replicas[i] = dep.replicas
            ready[i] = dep.replicas if dep.ready_replicas is None else dep.ready_replicas
            if ready[i] > dep.replicas:
                raise RequestError(f"deployments[{k}].ready_replicas",
                                   f"must be <= replicas ({dep.replicas}), got {ready[i]}")
            if self.pinned and dep.node is not None:
                raise RequestError(f"deployments[{k}].node",
                                   "LWMECPSEnv3 deployments are pinned; leave node out")
            if not self.pinned:
                if dep.node is None:
                    raise RequestError(f"deployments[{k}].node", "required: the node it runs on")
                if dep.node not in self.node_names:
                    raise RequestError(f"deployments[{k}].node",
                                       f"unknown node {dep.node!r}; the model knows "
                                       f"{self.node_names}")
                nodes[i] = self.node_names.index(dep.node)
        state = ClusterState.from_counts(np.zeros(1), replicas[None], ready[None], nodes[None],
                                         self.spec.max_pods)
        if self.pinned:
            phase = np.array([2.0 * math.pi * req.time_of_day_s / DAY_S])
            cap_norm = np.minimum(cap[:, :4] / self._cap_max[:4], 1.0)
            return self.env_cls.encode_box(self.spec, state, m, self.options,
                                           users_hist=hist, cap_norm=cap_norm,
                                           phase=phase)[0]
        used = np.full((1, n, len(Resources.model_fields)), np.nan)
        for k, node in enumerate(req.nodes):
            if node.usage is not None:
                for j, field in enumerate(Resources.model_fields):
                    v = getattr(node.usage, field)
                    if v is not None:
                        used[0, node_pos[k], j] = v
        return self.env_cls.encode_box(self.spec, state, m, self.options, users_hist=hist,
                                       capacity=cap, used=used)[0]

    # -- deciding

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions (B, D) for flat observations (B, obs_dim)."""
        from lwmecps_rllib.algorithms.inference import greedy_actions

        a = np.asarray(greedy_actions(self.module, obs))
        return a.reshape(len(obs), -1)

    def to_decisions(self, action: np.ndarray) -> list[Decision]:
        """The decision per deployment for one action."""
        if self.pinned:
            return [Decision(deployment=name, replicas=int(a))
                    for name, a in zip(self.dep_names, action, strict=True)]
        return [Decision(deployment=name, node=self.node_names[int(a)])
                for name, a in zip(self.dep_names, action, strict=True)]

    def decide(self, requests: list[PlacementRequest],
               field: str | None = None) -> list[PlacementResponse]:
        """Decisions for many clusters, one forward pass per scenario among them.

        Args:
            requests: The clusters.
            field: Where the requests sit in a body (`clusters`): an error then names
                the request as `clusters[k].<field>`.

        Raises:
            RequestError: the first request that does not fit, naming its field.
        """
        t0 = time.perf_counter()
        policies, obs = [], []
        for k, req in enumerate(requests):
            try:
                pol = self.for_scenario(req.scenario)
                obs.append(pol.encode(req))
            except RequestError as exc:
                if field is None:
                    raise
                raise RequestError(f"{field}[{k}].{exc.field}", exc.message) from None
            policies.append(pol)
        acts = grouped_actions(list(zip(policies, obs, strict=True)))
        ms = (time.perf_counter() - t0) * 1e3
        return [PlacementResponse(decisions=pol.to_decisions(a), model_id=self.model_id,
                                  env=self.env_name, decision_time_ms=ms)
                for pol, a in zip(policies, acts, strict=True)]


def grouped_actions(items: list[tuple[PlacementPolicy, np.ndarray]]) -> list[np.ndarray]:
    """The greedy action for each (policy, observation), in order: one forward pass per
    policy over all of its observations."""
    groups: dict[int, list[int]] = {}
    for i, (pol, _) in enumerate(items):
        groups.setdefault(id(pol), []).append(i)
    out: list[Any] = [None] * len(items)
    for idx in groups.values():
        acts = items[idx[0]][0].actions(np.stack([items[i][1] for i in idx]))
        for i, a in zip(idx, acts, strict=True):
            out[i] = a
    return out


def request_from_env(env: Any) -> dict[str, Any]:
    """The request body describing an env's current cluster (what a client would send).

    Built from the env's public :meth:`cluster_view`; the policy encodes it to exactly
    the env's own observation, which is what the tests and the load benchmark use it for.
    """
    return request_from_view(env.unwrapped.cluster_view())


def request_from_view(view: Any) -> dict[str, Any]:
    """The request body describing a :class:`~lwmecps_rllib.cluster.view.ClusterView`
    (an env's, or one a controller builds from a real cluster): the scenario's names and
    capacities, the replicas and ready replicas (or nodes), the last measurement's users
    and per-node latency, the time of day of its slot, and the users' history it holds."""
    spec, sc = view.spec, view.scenario
    node_lat = view.last.node_avg_latency_ms[0]
    nodes = []
    for i, node in enumerate(sc.nodes):
        nodes.append({"name": node.name, "avg_latency_ms": float(node_lat[i]),
                      "capacity": {"cpu": node.cpu, "ram_mb": node.ram_mb,
                                   "tx_mbps": node.tx_mbps, "rx_mbps": node.rx_mbps}})
    deps = []
    ready = view.ready
    for d in range(spec.n_deployments):
        item: dict[str, Any] = {"name": sc.deployment_names[d],
                                "replicas": int(view.replicas[d])}
        if spec.pinned:
            item["ready_replicas"] = int(ready[d])
        else:
            item["node"] = sc.node_names[int(view.state.node_of[0, d])]
        deps.append(item)
    users = {s.name: float(view.users[i]) for i, s in enumerate(sc.stations)}
    body = {"nodes": nodes, "deployments": deps, "users": users,
            "time_of_day_s": float((view.slot % sc.n_slots) * sc.slot_s)}
    if view.users_history is not None and len(view.users_history) > 1:
        body["users_history"] = {s.name: view.users_history[:-1, i].tolist()
                                 for i, s in enumerate(sc.stations)}
    return body
