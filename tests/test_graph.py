"""One policy for any cluster: the graph observation, the station-shared network, families."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lwmecps_rllib.algorithms.networks import StationNet
from lwmecps_rllib.envs.graph import STATION_COLUMNS, graph_layout, graph_model_config
from lwmecps_rllib.envs.lwmecps_env3 import LWMECPSEnv3, env3_spec
from lwmecps_rllib.envs.registration import make_env
from lwmecps_rllib.envs.vector import LWMECPSEnv3Vector
from lwmecps_rllib.scenarios import ScenarioError, load_scenario
from lwmecps_rllib.scenarios.family import family_from_dict, load_family
from lwmecps_rllib.spec import EnvOptions


@pytest.mark.parametrize(("scenario", "rows"), [("testbed-4bs-peak", None), ("metro-16", 24)])
def test_graph_observation_rows_masks_and_padding(scenario: str, rows: int | None) -> None:
    env = LWMECPSEnv3(scenario=scenario, obs_format="graph", max_stations=rows,
                      history_windows=[6])
    d = env.spec_.n_deployments
    m = rows or d
    assert env.action_space.shape == (m,)
    obs, _ = env.reset(seed=0)
    lay = env.layout
    assert env.observation_space.contains(obs)
    assert lay["stations"].columns == (*STATION_COLUMNS, "load_mean_6", "load_max_6")
    mask = lay.view(obs, "station_mask")
    assert mask[:d].all() and not mask[d:].any()
    allowed = lay.view(obs, "allowed").astype(bool)
    from lwmecps_rllib.cluster import core

    bounds = core.replica_bounds(env.spec_)
    for k in range(d):  # exactly the values within the deployment's share of its node
        assert allowed[k].tolist() == (np.arange(env.spec_.max_pods + 1) <= bounds[k]).tolist()
    assert (allowed[d:, 0].all() and not allowed[d:, 1:].any())  # padding: 0 only
    assert not lay.view(obs, "stations")[d:].any()
    # Padding heads are ignored: any value there gives the same step.
    a = np.ones(m, np.int64)
    b = a.copy()
    b[d:] = 4
    env.reset(seed=1)
    r1 = env.step(a)[1]
    env.reset(seed=1)
    assert env.step(b)[1] == r1


def test_the_batched_env_observes_the_graph_form_like_the_single_env() -> None:
    opts = {"scenario": "metro-16", "obs_format": "graph", "max_stations": 20}
    vec = LWMECPSEnv3Vector(2, **opts)
    single = LWMECPSEnv3(**opts)
    obs_v, _ = vec.reset(seed=0, options={"start_slot": 500})
    obs_s, _ = single.reset(seed=0, options={"start_slot": 500})
    assert vec.single_observation_space == single.observation_space
    lay = single.layout
    # Same cluster, same slot: the same rows (the users of the first slot agree).
    np.testing.assert_allclose(lay.view(obs_v[0], "stations")[:, 1:],
                               lay.view(obs_s, "stations")[:, 1:], atol=1e-6)


def _net(rows: int, seed: int = 0, out: str = "logits") -> tuple[StationNet, dict]:
    spec = env3_spec(load_scenario("metro-16"))
    layout = graph_layout(spec, EnvOptions(obs_format="graph", max_stations=rows))
    torch.manual_seed(seed)
    g = graph_model_config(layout)
    return StationNet(g, [32, 32], out), g


def _random_obs(g: dict, n: int, real: int, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros((n, g["time_of_day"] + 2), np.float32)
    m, f, a = g["rows"], g["columns"], g["values"]
    x[:, g["stations"]:g["stations"] + m * f] = rng.uniform(0, 2, (n, m * f))
    mask = np.zeros(m)
    mask[:real] = 1
    x[:, g["station_mask"]:g["station_mask"] + m] = mask
    allowed = rng.random((n, m, a)) < 0.7
    allowed[..., 0] = True
    x[:, g["allowed"]:g["allowed"] + m * a] = allowed.reshape(n, -1)
    x[:, g["time_of_day"]:] = rng.uniform(-1, 1, (n, 2))
    return x


def _permute(x: np.ndarray, g: dict, perm: np.ndarray) -> np.ndarray:
    y = x.copy()
    m, f, a = g["rows"], g["columns"], g["values"]
    for start, width in ((g["stations"], f), (g["station_mask"], 1), (g["allowed"], a)):
        block = x[:, start:start + m * width].reshape(len(x), m, width)
        y[:, start:start + m * width] = block[:, perm].reshape(len(x), -1)
    return y


def test_station_net_is_exactly_permutation_equivariant() -> None:
    net, g = _net(16)
    vf, _ = _net(16, out="value")
    rng = np.random.default_rng(0)
    x = _random_obs(g, 8, 16, rng)
    perm = rng.permutation(16)
    y = _permute(x, g, perm)
    with torch.no_grad():
        lx = net(torch.as_tensor(x)).view(8, 16, -1)
        ly = net(torch.as_tensor(y)).view(8, 16, -1)
        assert torch.equal(ly, lx[:, perm])  # reordered stations, reordered decisions
        torch.testing.assert_close(vf(torch.as_tensor(y)), vf(torch.as_tensor(x)))
    # Forbidden values are never the argmax.
    allowed = torch.as_tensor(x[:, g["allowed"]:g["allowed"] + 16 * g["values"]]
                              ).view(8, 16, -1) > 0.5
    assert allowed.gather(-1, lx.argmax(-1, keepdim=True)).all()


def test_one_set_of_weights_decides_for_any_size() -> None:
    small, g_small = _net(16)
    big, g_big = _net(64)
    big.load_state_dict(small.state_dict())  # no weight depends on the station count
    rng = np.random.default_rng(1)
    x = _random_obs(g_small, 2, 10, rng)
    # The same 10 stations padded to 64 rows: the same decisions for them.
    m, f, a = 16, g_small["columns"], g_small["values"]
    z = np.zeros((2, g_big["time_of_day"] + 2), np.float32)
    rows = x[:, g_small["stations"]:g_small["stations"] + m * f].reshape(2, m, f)[:, :10]
    z[:, g_big["stations"]:g_big["stations"] + 10 * f] = rows.reshape(2, -1)
    z[:, g_big["station_mask"]:g_big["station_mask"] + 10] = 1
    al = x[:, g_small["allowed"]:g_small["allowed"] + m * a].reshape(2, m, a)[:, :10]
    z[:, g_big["allowed"]:g_big["allowed"] + 10 * a] = al.reshape(2, -1)
    z[:, g_big["time_of_day"]:] = x[:, g_small["time_of_day"]:]
    with torch.no_grad():
        ls = small(torch.as_tensor(x)).view(2, 16, a)[:, :10]
        lb = big(torch.as_tensor(z)).view(2, 64, a)[:, :10]
    torch.testing.assert_close(lb, ls)


def test_graph_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_stations must be at least the scenario's 16"):
        LWMECPSEnv3(scenario="metro-16", obs_format="graph", max_stations=8)
    with pytest.raises(ValueError, match="only LWMECPSEnv3 has 'graph'"):
        make_env("LWMECPSEnv2", {"obs_format": "graph"})
    with pytest.raises(ValueError, match="max_stations is only an option of obs_format='graph'"):
        LWMECPSEnv3(obs_format="box", max_stations=8)
    with pytest.raises(ValueError, match="obs_format must be one of"):
        EnvOptions(obs_format="graf")


def test_shipped_family_and_its_members() -> None:
    fam = load_family("family-edge")
    assert fam.n_stations == (4, 32) and fam.max_stations == 32
    a, b = fam.member(3), fam.member(3)
    assert a is b or (a.n_stations == b.n_stations and
                      np.array_equal(a.traces["a"], b.traces["a"]))
    sizes = {fam.member(i).n_stations for i in range(12)}
    assert min(sizes) >= 4 and max(sizes) <= 32 and len(sizes) > 4
    # The family never holds the shipped scenarios it is judged on.
    shipped = {s.name for s in map(load_scenario, ("testbed-4bs-peak", "metro-16", "city-64"))}
    assert not {fam.member(i).name for i in range(fam.pool)} & shipped


@pytest.mark.parametrize(("family", "message"), [
    ({"n_stations": [1, 4]}, "'family.n_stations' must be [low, high], integers with 2"),
    ({"load_scale": [2.0, 1.0]}, "'family.load_scale' must be [low, high]"),
    ({"node_cpu_choices": [[1]]}, "'family.node_cpu_choices' must be"),
    ({"pool": 0}, "'family.pool' must be an integer >= 1"),
    ({"colour": 1}, "unknown field(s) ['colour'] in 'family'"),
])
def test_family_fields_are_checked_by_name(family: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        family_from_dict({"name": "f", "family": family})
    with pytest.raises(ScenarioError, match="scenario_family must be one of"):
        load_family("family-nowhere")


def test_an_env_on_a_family_runs_a_member_per_episode(tmp_path: Path) -> None:
    env = LWMECPSEnv3(scenario_family="family-edge", obs_format="graph")
    assert env.observation_space.shape == env.layout.space().shape
    seen = set()
    for ep in range(5):
        obs, _ = env.reset(seed=ep)
        seen.add(env.scenario.name)
        obs, *_ = env.step(np.ones(32, np.int64))
        assert env.observation_space.contains(obs)
        d = env.spec_.n_deployments
        assert env.layout.view(obs, "station_mask").sum() == d
    assert len(seen) >= 3
    env.reset(seed=0, options={"member": 7})
    assert env.scenario.name == "family-edge-7"
    with pytest.raises(ValueError, match="max_stations must be at least the family's 32"):
        LWMECPSEnv3(scenario_family="family-edge", obs_format="graph", max_stations=16)
    with pytest.raises(ValueError, match="scenario_family needs obs_format='graph'"):
        EnvOptions(scenario_family="family-edge", obs_format="box")
    # A family file of one's own.
    path = tmp_path / "small.yaml"
    path.write_text(json.dumps({"name": "small", "family": {"n_stations": [3, 5], "pool": 2}}))
    env = LWMECPSEnv3(scenario_family=str(path), obs_format="graph")
    assert env.action_space.shape == (5,)


@pytest.mark.integration
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_a_model_trained_on_a_family_decides_for_clusters_it_never_saw(
        ray_session, tmp_path: Path, algo: str, capsys: pytest.CaptureFixture) -> None:
    from lwmecps_rllib import evaluate
    from lwmecps_rllib.train import __main__ as train_cli

    params = (["--param", "train_batch_size_per_learner=256", "--param", "minibatch_size=64",
               "--param", "num_epochs=1"] if algo == "ppo" else
              ["--param", "learning_starts=50", "--param", "train_batch_size_per_learner=16",
               "--param", "action_costs=false"])
    out = tmp_path / "run"
    assert train_cli.main(["--algo", algo, "--scenario-family", "family-edge",
                           "--iterations", "1", "--num-envs", "2", "--output", str(out),
                           "--no-eval", *params]) == 0
    ckpt = out / "checkpoint"
    assert json.loads((ckpt / "env_options.json").read_text()) == {
        "obs_format": "graph", "stations": [4, 32]}
    # The same weights on 4, 16 and 64 stations (the family holds 4 to 32), masked.
    from lwmecps_rllib.algorithms.inference import TrainedPolicy

    policy = TrainedPolicy.from_checkpoint(ckpt)
    assert policy.size_general
    for scenario in ("testbed-4bs-peak", "metro-16", "city-64"):
        env = LWMECPSEnv3(scenario=scenario, obs_format="graph")
        policy.reset(env.cluster_view(), 0)
        obs, _ = env.reset(seed=0)
        for _ in range(3):
            action = policy.act(None, obs)
            assert action.shape == (env.spec_.n_deployments,)
            obs, _, _, _, info = env.step(action)
            assert info["valid_action"]
    # Serving answers for a cluster of the model's range with the same weights.
    from lwmecps_rllib.cluster import core
    from lwmecps_rllib.serving.policy import PlacementPolicy, request_from_env
    from lwmecps_rllib.serving.schema import PlacementRequest, RequestError

    served = PlacementPolicy.from_checkpoint(ckpt, "LWMECPSEnv3", "metro-16")
    assert served.info["size_general"] is True
    env = LWMECPSEnv3(scenario="metro-16", obs_format="graph")
    env.reset(seed=0)
    answer = served.decide([PlacementRequest(**request_from_env(env))])[0]
    counts = np.array([d.replicas for d in answer.decisions])
    assert len(counts) == 16 and (counts <= core.replica_bounds(env.spec_)).all()
    # A request names the cluster it describes: any shipped scenario of the range.
    own = PlacementPolicy.from_checkpoint(ckpt, "LWMECPSEnv3", "testbed-4bs-peak")
    body = {**request_from_env(env), "scenario": "metro-16"}
    assert own.decide([PlacementRequest(**body)])[0].decisions == answer.decisions
    city = LWMECPSEnv3(scenario="city-64", obs_format="graph")
    city.reset(seed=0)
    far = PlacementRequest(**{**request_from_env(city), "scenario": "city-64"})
    with pytest.raises(RequestError, match=r"'city-64' has 64 stations; .* supports 4 to 32"):
        own.decide([far])
    # The registry records the range; a wider one is the registrant's call.
    from lwmecps_rllib.model_registry import ModelRegistry

    reg = ModelRegistry(tmp_path / "models" / "registry.sqlite")
    rec = reg.register(ckpt, algorithm=algo, env="LWMECPSEnv3", scenario="testbed-4bs-peak")
    assert rec.config["size_general"] is True and rec.config["stations"] == [4, 32]
    wide = reg.register(ckpt, algorithm=algo, env="LWMECPSEnv3",
                        scenario="testbed-4bs-peak", stations=(4, 64))
    wide_policy = PlacementPolicy.from_record(reg.checkpoint_path(wide.id), wide)
    assert wide_policy.info["stations"] == [4, 64]
    assert len(wide_policy.decide([far])[0].decisions) == 64
    table = tmp_path / "city.json"
    assert evaluate.main(["--scenario", "city-64", "--policy", "none", "--steps", "2",
                          "--model", str(ckpt), "--output", str(table)]) == 0
    assert json.loads(table.read_text())["results"]["checkpoint:checkpoint"]["steps"] == 2
    capsys.readouterr()


def test_reward_per_station_divides_the_step_reward_by_the_stations() -> None:
    plain = LWMECPSEnv3(scenario="metro-16", obs_format="graph")
    per = LWMECPSEnv3(scenario="metro-16", obs_format="graph", reward_per_station=True)
    a = np.ones(16, np.int64)
    plain.reset(seed=3)
    per.reset(seed=3)
    r_plain, r_per = plain.step(a)[1], per.step(a)[1]
    assert r_per == pytest.approx(r_plain / 16)
    vec = LWMECPSEnv3Vector(1, scenario="metro-16", reward_per_station=True)
    vec.reset(seed=0)
    plain_vec = LWMECPSEnv3Vector(1, scenario="metro-16")
    plain_vec.reset(seed=0)
    a = np.ones((1, 16), np.int64)
    assert vec.step(a)[1][0] == pytest.approx(plain_vec.step(a)[1][0] / 16)


def test_load_per_ready_replica_is_what_the_pods_carry() -> None:
    env = LWMECPSEnv3(scenario="testbed-4bs-peak", obs_format="graph")
    obs, _ = env.reset(seed=0)
    rows = env.layout.view(obs, "stations")
    cols = env.layout["stations"].columns
    load, ready = rows[:, cols.index("load")], rows[:, cols.index("ready")]
    per = rows[:, cols.index("load_per_ready")]
    mp = env.spec_.max_pods
    np.testing.assert_allclose(per, np.minimum(load * mp / np.maximum(ready * mp, 1), 4),
                               rtol=1e-5)
