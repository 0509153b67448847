"""Run specs, the one validation style, observation layouts and the cluster view (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from lwmecps_rllib.backends.config import KubernetesConfig
from lwmecps_rllib.envs import LWMECPSEnv2, LWMECPSEnv3, make_env
from lwmecps_rllib.presets import RECOMMENDED, get_preset, recommended
from lwmecps_rllib.serving.schema import ServeArgs
from lwmecps_rllib.spec import Budget, EnvOptions, Resources, TrainingSpec, check_run


@pytest.mark.parametrize(("cls", "data", "message"), [
    (EnvOptions, {"obs_format": "image"},
     "obs_format must be one of ['dict', 'box', 'graph'], got 'image'"),
    (EnvOptions, {"episode_length": 0}, "episode_length must be >= 1, got 0"),
    (EnvOptions, {"shuffle_stations": "yes"}, "shuffle_stations must be true or false"),
    (EnvOptions, {"scenrio": "x"}, "unknown key 'scenrio'; allowed: ['scenario'"),
    (EnvOptions, {"backend": "k8s", "backend_config": {"retries": True}},
     "backend_config.retries must be an integer, got True"),
    (EnvOptions, {"backend_config": {}}, "backend_config is only used with backend='k8s'"),
    (KubernetesConfig, {"namespac": "x"}, "unknown backend_config key 'namespac'"),
    (KubernetesConfig, {"min_replicas": 3, "max_replicas": 2},
     "backend_config.max_replicas must be >= min_replicas (3), got 2"),
    (Resources, {"num_envs": 0}, "resources.num_envs must be >= 1, got 0"),
    (Budget, {"env_steps": 1.5}, "budget.env_steps must be an integer, got 1.5"),
    (TrainingSpec, {"seed": "0"}, "seed must be an integer, got '0'"),
    (TrainingSpec, {"resources": {"cpus": 0}}, "resources.cpus must be > 0"),
    (ServeArgs, {"max_batch_size": 0}, "args.max_batch_size must be >= 1, got 0"),
    (ServeArgs, {"env": "LWMECPSEnv9"}, "args.env must be one of ['LWMECPSEnv', "),
])
def test_every_spec_names_the_bad_field(cls: type, data: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        cls.parse(data)
    assert message in str(err.value)


def test_env_options_pass_whole_and_round_trip_through_env_config() -> None:
    opts = EnvOptions(scenario="testbed-4bs-peak", shuffle_stations=True, load_jitter=0.2)
    env = LWMECPSEnv3(opts)
    assert env.options.shuffle_stations and env.options.obs_format == "dict"
    same = make_env("LWMECPSEnv3", opts.to_env_config())
    assert same.unwrapped.options == opts.replace(obs_format="box")
    # Keyword arguments (what gym.make passes) are the same fields.
    assert LWMECPSEnv3(scenario="testbed-4bs-peak", shuffle_stations=True,
                       load_jitter=0.2).options == env.options
    with pytest.raises(ValueError, match="n_deployments is only an option of LWMECPSEnv2"):
        LWMECPSEnv3(n_deployments=2)
    assert LWMECPSEnv2(n_deployments=2).spec_.n_deployments == 2
    # Evaluation replays the day as it is, with the observation options kept.
    ev = opts.replace(history=2, reward_per_station=True).evaluation("b")
    assert (ev.trace, ev.shuffle_stations, ev.load_jitter, ev.history) == ("b", False, 0.0, 2)
    assert not ev.reward_per_station
    fam = EnvOptions(scenario_family="family-edge", obs_format="graph").evaluation("b")
    assert (fam.scenario_family, fam.obs_format, fam.scenario) == (None, "graph", "testbed-4bs")


def test_the_k8s_rules_live_once() -> None:
    k8s = EnvOptions(backend="k8s")
    check_run(k8s, TrainingSpec(resources=Resources(num_envs=1)))
    with pytest.raises(ValueError, match=r"resources\.num_envs must be 1 with backend="):
        check_run(k8s, TrainingSpec(resources=Resources(num_envs=4)))
    with pytest.raises(ValueError, match="need backend='sim'"):
        EnvOptions(backend="k8s", load_jitter=0.1)


def test_budget_bounds() -> None:
    assert Budget().max_iterations == 20
    assert Budget(env_steps=10).max_iterations > 10**6
    assert Budget(iterations=3, env_steps=10).max_iterations == 3


def test_presets_are_one_place_for_train_bench_and_sweeps() -> None:
    peak = recommended("lwmecps-dqn", "testbed-4bs-peak")
    assert peak.params["replay_capacity"] == 200_000
    assert "replay_capacity" not in recommended("dqn", "testbed-4bs").params
    spec = recommended("ppo").training(seed=2, entropy_coeff=0.01)
    assert spec.seed == 2 and spec.params["entropy_coeff"] == 0.01
    assert spec.budget.env_steps == RECOMMENDED["ppo"].env_steps
    assert recommended("ppo").env_options("metro-16").shuffle_stations is True
    with pytest.raises(ValueError, match=r"preset must be one of \['recommended'\]"):
        get_preset("fastest", "ppo")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        recommended("my-vpg")  # not registered


@pytest.mark.parametrize("name", ["LWMECPSEnv", "LWMECPSEnv2", "LWMECPSEnv3"])
def test_the_layout_describes_the_observation(name: str) -> None:
    env = make_env(name, {"scenario": "metro-16"})
    obs, _ = env.reset(seed=1)
    u = env.unwrapped
    layout = u.box_layout(u.spec_)
    assert layout.size == obs.shape[0] == env.observation_space.shape[0]
    low, high = layout.bounds()
    assert np.array_equal(low, env.observation_space.low)
    assert np.array_equal(high, env.observation_space.high)
    users = layout.view(obs[None], "users")[0]
    expect = np.clip(u.cluster_view().users / u.scenario.max_users, 0, 1)
    assert np.allclose(users, expect, atol=1e-6)
    # The env's own encoder over its own state gives its observation.
    assert np.array_equal(u.encode_box(u.spec_, u.state, u.last)[0], obs)


def test_head_views_index_the_layout_by_name() -> None:
    from lwmecps_rllib.envs import head_views

    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs"})
    layout = env.unwrapped.layout
    views = head_views("LWMECPSEnv3", {"scenario": "testbed-4bs"})
    assert views[2] == [layout.index("users", 2), layout.index("replicas", 2),
                        layout.index("ready", 2), layout.index("nodes", 2, "latency")]
    assert head_views("LWMECPSEnv2", {}) is None


def test_the_cluster_view_is_read_only_and_public() -> None:
    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs"})
    assert env.unwrapped.cluster_view().state is None  # before reset
    env.reset(seed=0)
    view = env.unwrapped.cluster_view()
    assert view.replicas.tolist() == env.unwrapped.state.replicas[0].tolist()
    with pytest.raises(ValueError, match="read-only"):
        view.replicas[0] = 3
    with pytest.raises(ValueError, match="read-only"):
        view.trace[0, 0] = 1
    assert view.trace is not None and view.replicas_env
