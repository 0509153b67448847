"""PlacementPolicy without Serve or Ray: requests encode to exactly the env's observation,
decisions are the module's greedy actions, and bad requests name the field."""

from __future__ import annotations

import numpy as np
import pytest

from lwmecps_rllib.algorithms import get_algorithm_class
from lwmecps_rllib.algorithms.inference import greedy_actions
from lwmecps_rllib.envs import make_env
from lwmecps_rllib.serving import (
    PlacementPolicy,
    PlacementRequest,
    RequestError,
    request_from_env,
)

HISTORY = {"history": 2, "history_windows": [6, 30]}


def fresh_module(env_name: str, scenario: str, observation: dict | None = None):
    """An untrained module of our PPO for the env (random weights, seeded); a
    station-shared one for the graph observation."""
    import torch

    from lwmecps_rllib.envs import graph_config

    torch.manual_seed(0)
    env_config = {"scenario": scenario, **(observation or {})}
    env = make_env(env_name, env_config)
    cfg = get_algorithm_class("ppo").get_default_config()
    spec = cfg.get_default_rl_module_spec()
    spec.observation_space = env.observation_space
    spec.action_space = env.action_space
    graph = graph_config(env_name, env_config)
    spec.model_config = {**cfg._model_config, **({"graph": graph} if graph else {})}
    return spec.build()


@pytest.mark.parametrize(("env_name", "scenario", "observation"), [
    ("LWMECPSEnv3", "testbed-4bs", None), ("LWMECPSEnv3", "testbed-4bs-peak", None),
    ("LWMECPSEnv3", "metro-16", None), ("LWMECPSEnv2", "testbed-4bs", None),
    ("LWMECPSEnv", "testbed-4bs", None), ("LWMECPSEnv2", "metro-16", None),
    ("LWMECPSEnv3", "testbed-4bs-peak", HISTORY), ("LWMECPSEnv2", "testbed-4bs", HISTORY),
])
def test_requests_encode_to_the_envs_observation(env_name, scenario, observation):
    module = fresh_module(env_name, scenario, observation)
    policy = PlacementPolicy(module, env_name, scenario, "m1", observation=observation)
    env = make_env(env_name, {"scenario": scenario, "trace": "b", **(observation or {})})
    obs, _ = env.reset(seed=3)
    env.action_space.seed(3)
    reqs, observations = [], []
    for _ in range(30):
        req = PlacementRequest(**request_from_env(env))
        np.testing.assert_allclose(policy.encode(req), obs, atol=1e-6)
        reqs.append(req)
        observations.append(obs)
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()
    out = policy.decide(reqs)
    expected = greedy_actions(module, np.stack(observations)).reshape(len(reqs), -1)
    for resp, act in zip(out, expected, strict=True):
        assert resp.model_id == "m1"
        if env_name == "LWMECPSEnv3":
            assert [d.replicas for d in resp.decisions] == act.tolist()
        else:
            assert [d.node for d in resp.decisions] == [policy.node_names[i] for i in act]


@pytest.fixture(scope="module")
def policy3():
    return PlacementPolicy(fresh_module("LWMECPSEnv3", "testbed-4bs"), "LWMECPSEnv3",
                           "testbed-4bs", "m1")


def body(policy3) -> dict:
    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs"})
    env.reset(seed=0)
    return request_from_env(env)


@pytest.mark.parametrize(("mutate", "field", "message"), [
    (lambda b: b["nodes"].pop(), "nodes", "trained for 4 nodes, got 3"),
    (lambda b: b["nodes"][2].update(name="edge-x"), "nodes[2].name", "unknown node 'edge-x'"),
    (lambda b: b["nodes"][1].update(name=b["nodes"][0]["name"]), "nodes[1].name", "duplicate"),
    (lambda b: b["deployments"][0].update(name="web"), "deployments[0].name", "unknown"),
    (lambda b: b["users"].pop(next(iter(b["users"]))), "users", "missing station"),
    (lambda b: b["users"].update(bs99=3), "users.bs99", "unknown station"),
    (lambda b: b["nodes"][0]["capacity"].update(cpu=0), "nodes[0].capacity.cpu", "> 0"),
    (lambda b: b["deployments"][1].update(node="node1"), "deployments[1].node", "pinned"),
    (lambda b: b["deployments"][1].update(replicas=1, ready_replicas=3),
     "deployments[1].ready_replicas", "<= replicas"),
])
def test_requests_that_do_not_fit_the_model_name_the_field(policy3, mutate, field, message):
    b = body(policy3)
    mutate(b)
    with pytest.raises(RequestError) as err:
        policy3.encode(PlacementRequest(**b))
    assert err.value.field == field
    assert message in err.value.message


def test_checkpoint_of_another_env_is_refused():
    module = fresh_module("LWMECPSEnv2", "testbed-4bs")
    with pytest.raises(ValueError, match="does not take LWMECPSEnv3 observations"):
        PlacementPolicy(module, "LWMECPSEnv3", "testbed-4bs", "m")


def test_a_history_model_asks_for_the_history_it_observes():
    policy = PlacementPolicy(fresh_module("LWMECPSEnv3", "testbed-4bs", HISTORY),
                             "LWMECPSEnv3", "testbed-4bs", "m1", observation=HISTORY)
    assert policy.info["history_slots"] == 29  # the 30-slot window: 29 before `users`
    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs", **HISTORY})
    env.reset(seed=0)
    body = request_from_env(env)
    assert len(body["users_history"]["bs1"] if "bs1" in body["users_history"]
               else next(iter(body["users_history"].values()))) == 29
    short = {k: v[-5:] for k, v in body["users_history"].items()}
    with pytest.raises(RequestError, match="last 29 slots"):
        policy.encode(PlacementRequest(**{**body, "users_history": short}))
    with pytest.raises(RequestError, match="users_history"):
        policy.encode(PlacementRequest(**{k: v for k, v in body.items()
                                          if k != "users_history"}))


def test_a_masking_model_never_answers_more_than_a_node_holds():
    import torch

    from lwmecps_rllib.cluster import core

    env = make_env("LWMECPSEnv3", {"scenario": "city-64", "trace": "b"})
    cfg = get_algorithm_class("ppo").get_default_config()
    cfg.environment("LWMECPSEnv3", env_config={"scenario": "city-64"})
    spec = cfg.get_default_rl_module_spec()
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    spec.model_config = cfg.model_config  # with the env's action bounds
    torch.manual_seed(0)
    policy = PlacementPolicy(spec.build(), "LWMECPSEnv3", "city-64", "m1")
    cluster = env.unwrapped.spec_
    env.reset(seed=0)
    reqs = []
    for _ in range(20):
        reqs.append(PlacementRequest(**request_from_env(env)))
        env.step(env.action_space.sample())
    for resp in policy.decide(reqs):
        counts = np.array([[d.replicas for d in resp.decisions]])
        assert core.fits(cluster, counts, cluster.home_node[None])[0]


GRAPH = {"obs_format": "graph"}


def test_a_size_general_model_answers_for_any_cluster_of_its_range():
    own = PlacementPolicy(fresh_module("LWMECPSEnv3", "testbed-4bs-peak", GRAPH),
                          "LWMECPSEnv3", "testbed-4bs-peak", "g1", observation=GRAPH,
                          stations=[4, 32])
    assert own.info["size_general"] is True and own.info["stations"] == [4, 32]
    env = make_env("LWMECPSEnv3", {"scenario": "metro-16", "trace": "b"})
    env.reset(seed=0)
    body = request_from_env(env)
    # The same weights fitted to metro-16 directly give the same answer.
    direct = PlacementPolicy(fresh_module("LWMECPSEnv3", "testbed-4bs-peak", GRAPH),
                             "LWMECPSEnv3", "metro-16", "g1", observation=GRAPH)
    expected = direct.decide([PlacementRequest(**body)])[0].decisions
    [mixed, again] = own.decide([PlacementRequest(**body, scenario="metro-16"),
                                 PlacementRequest(**body, scenario="metro-16")])
    assert mixed.decisions == expected == again.decisions and len(expected) == 16
    assert own.for_scenario("metro-16") is own.for_scenario("metro-16")  # fitted once
    assert own.for_scenario(None) is own and own.for_scenario("testbed-4bs-peak") is own


@pytest.mark.parametrize(("scenario", "message"), [
    ("city-64", "'city-64' has 64 stations; model 'g1' supports 4 to 32 stations"),
    ("atlantis", "unknown scenario 'atlantis'; allowed: ["),
    ("../../etc/x.yaml", "unknown scenario"),
])
def test_clusters_outside_the_range_are_refused_naming_the_limit(scenario, message):
    own = PlacementPolicy(fresh_module("LWMECPSEnv3", "testbed-4bs-peak", GRAPH),
                          "LWMECPSEnv3", "testbed-4bs-peak", "g1", observation=GRAPH,
                          stations=[4, 32])
    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs-peak"})
    env.reset(seed=0)
    req = PlacementRequest(**request_from_env(env), scenario=scenario)
    with pytest.raises(RequestError) as err:
        own.decide([req, req], field="clusters")
    assert err.value.field == "clusters[0].scenario" and message in err.value.message


def test_a_model_of_one_size_answers_only_for_its_own_scenario(policy3):
    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs"})
    env.reset(seed=0)
    req = PlacementRequest(**request_from_env(env), scenario="metro-16")
    with pytest.raises(RequestError, match="decides for scenario 'testbed-4bs' only") as err:
        policy3.decide([req])
    assert err.value.field == "scenario" and policy3.info["size_general"] is False
    assert policy3.decide([PlacementRequest(**request_from_env(env), scenario="testbed-4bs")])
