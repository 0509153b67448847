"""The three envs and the batched LWMECPSEnv3: API conformance, determinism, rules."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from lwmecps_rllib.cluster import core
from lwmecps_rllib.envs import ENV_NAMES, LWMECPSEnv3, LWMECPSEnv3Vector, make_env
from lwmecps_rllib.envs.base import (
    JITTER_COPIES,
    JITTER_DAYS,
    MAX_STATION_ORDERS,
    augmented_trace,
)
from lwmecps_rllib.scenarios import load_scenario

ENVS = ENV_NAMES


@pytest.mark.parametrize("env_name", ENVS)
@pytest.mark.parametrize("obs_format", ["dict", "box"])
def test_gymnasium_check_env(env_name: str, obs_format: str, scenario_name: str) -> None:
    env = gym.make(env_name, scenario=scenario_name, obs_format=obs_format)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(3):
        obs, reward, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward)


def _rollout(env: gym.Env, seed: int, n: int = 12) -> list:
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = [np.asarray(gym.spaces.flatten(env.observation_space, obs))]
    for _ in range(n):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        out.append((np.asarray(gym.spaces.flatten(env.observation_space, obs)), r, term, trunc,
                    info["latency"]))
        if term or trunc:
            obs, _ = env.reset()
    return out


def _same(a: list, b: list) -> bool:
    return all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] if isinstance(x, tuple)
               else np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("env_name", ENVS)
def test_same_seed_same_trajectory(env_name: str) -> None:
    a = _rollout(gym.make(env_name, scenario="testbed-4bs-peak"), seed=7)
    b = _rollout(gym.make(env_name, scenario="testbed-4bs-peak"), seed=7)
    c = _rollout(gym.make(env_name, scenario="testbed-4bs-peak"), seed=8)
    assert _same(a, b)
    assert not _same(a, c)


def test_episode_length_and_termination() -> None:
    env = gym.make("LWMECPSEnv3")
    env.reset(seed=0)
    for i in range(5):
        _, _, term, trunc, _ = env.step(np.array([1, 1, 1, 1]))
        assert not term
        assert trunc == (i == 4)
    # Zero replicas everywhere: every request fails, reward < -500, terminated.
    env.reset(seed=0)
    _, reward, term, trunc, info = env.step(np.zeros(4, np.int64))
    assert reward < -500 and term and not trunc
    assert info["failed_requests"] == info["requests"] > 0


def test_invalid_action_changes_nothing() -> None:
    sc = load_scenario("metro-16")
    env = LWMECPSEnv3(scenario=sc, obs_format="box")
    env.reset(seed=0)
    small = next(i for i, n in enumerate(sc.nodes) if n.cpu == 4)  # fits 2 pods
    action = np.ones(16, np.int64)
    action[small] = 3
    before = env.state.replicas.copy()
    _, reward, _, _, info = env.step(action)
    assert reward == -100.0 and not info["valid_action"]
    np.testing.assert_array_equal(env.state.replicas, before)
    action[small] = 2
    _, reward, _, _, info = env.step(action)
    assert info["valid_action"] and reward > -100


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), min_size=16, max_size=16), min_size=1, max_size=6))
def test_capacity_is_never_exceeded(actions: list[list[int]]) -> None:
    env = LWMECPSEnv3(scenario="metro-16", obs_format="box")
    env.reset(seed=1)
    spec = env.spec_
    for a in actions:
        env.step(np.array(a))
        pods = core.pods_per_node(spec, env.state.replicas, env.state.node_of)[0]
        assert np.all(pods * spec.pod_request[0] <= spec.node_cap[:, 0])


@pytest.mark.parametrize("env_name", ["LWMECPSEnv", "LWMECPSEnv2"])
def test_placement_moves_after_startup(env_name: str) -> None:
    env = gym.make(env_name, scenario="testbed-4bs-peak").unwrapped
    env.reset(seed=0)
    target = 2 if env_name == "LWMECPSEnv" else np.array([2, 2, 2, 2])
    home = env.spec_.home_node.tolist()
    env.step(target)
    # A rolling update: the old pod serves while the new one starts (20 s = 2 steps).
    assert env.state.node_of[0].tolist() == home
    assert set(env.state.move_to[0].tolist()) == {2}
    env.step(target)
    env.step(target)
    assert set(env.state.node_of[0].tolist()) == {2}


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="obs_format must be one of"):
        LWMECPSEnv3(obs_format="image")
    with pytest.raises(ValueError, match="trace must be one of"):
        LWMECPSEnv3(trace="z")
    with pytest.raises(ValueError, match="unknown env_config key 'scenrio'"):
        make_env("LWMECPSEnv3", {"scenrio": "testbed-4bs"})
    with pytest.raises(ValueError, match="env must be one of"):
        make_env("LWMECPSEnv9", {})
    env = LWMECPSEnv3()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="replica counts in"):
        env.step(np.array([1, 9, 1, 1]))
    with pytest.raises(ValueError, match="vector_entry_point' is only available"):
        make_env("LWMECPSEnv2", {"num_envs": 4})


def test_vector_entry_point_is_the_batched_env() -> None:
    venv = gym.make_vec("LWMECPSEnv3", num_envs=8, vectorization_mode="vector_entry_point",
                        scenario="testbed-4bs-peak")
    assert isinstance(venv, LWMECPSEnv3Vector)
    single = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs-peak"})
    assert venv.single_observation_space == single.observation_space
    assert venv.single_action_space == single.action_space
    obs, _ = venv.reset(seed=3)
    venv.action_space.seed(3)
    assert obs.shape == (8, single.observation_space.shape[0])
    ended = np.zeros(8, bool)
    for _ in range(70):
        obs, reward, term, trunc, info = venv.step(venv.action_space.sample())
        assert venv.observation_space.contains(obs)
        # NEXT_STEP autoreset: a sub-env that ended returns a reset step (reward 0).
        assert np.all(reward[ended] == 0.0) and not np.any((term | trunc)[ended])
        assert np.all(info["_latency"] == ~ended)
        ended = term | trunc
        assert np.all(venv.steps <= 30)
        assert np.all(trunc == ((venv.steps == 30) & ~term))


def test_batched_env_follows_the_single_env_rules() -> None:
    venv = LWMECPSEnv3Vector(num_envs=3, scenario="testbed-4bs")
    venv.reset(seed=0, options={"start_slot": 500})
    single = LWMECPSEnv3(scenario="testbed-4bs", obs_format="box")
    single.reset(seed=0, options={"start_slot": 500})
    # Below the throttling threshold the outcome is deterministic: both must agree.
    a = np.array([2, 2, 2, 2])
    obs_v, r_v, *_ = venv.step(np.stack([a] * 3))
    obs_s, r_s, *_ = single.step(a)
    np.testing.assert_allclose(obs_v[0], obs_s)
    assert r_v[0] == pytest.approx(r_s)


def test_batched_env_autoreset_rows_start_like_a_single_env_reset() -> None:
    venv = LWMECPSEnv3Vector(num_envs=3, scenario="testbed-4bs")
    venv.reset(seed=1)
    single = LWMECPSEnv3(scenario="testbed-4bs", obs_format="box")
    a = np.stack([np.array([2, 2, 2, 2])] * 3)
    checked = 0
    for _ in range(12):
        ended = venv._autoreset.copy()
        obs, reward, *_ = venv.step(a)
        for row in np.flatnonzero(ended):
            # The reset row was advanced one slot from a fresh cluster: the same first
            # observation as a single env reset at that slot (deterministic load here).
            first, _ = single.reset(seed=0, options={"start_slot": int(venv.state.slot[row])})
            np.testing.assert_allclose(obs[row], first)
            np.testing.assert_allclose(venv.last.data[row], single.last.data[0])
            np.testing.assert_array_equal(venv.state.ready_at[row], single.state.ready_at[0])
            assert reward[row] == 0.0 and venv.steps[row] == 0
            checked += 1
    assert checked >= 6
    # On the peak day a cluster starts with the replicas its first slot's load needs.
    venv = LWMECPSEnv3Vector(num_envs=8, scenario="testbed-4bs-peak", episode_length=2)
    venv.reset(seed=2)
    single = LWMECPSEnv3(scenario="testbed-4bs-peak", obs_format="box")
    for _ in range(3):
        venv.step(np.full((8, 4), 3))
    assert venv.steps.max() == 0  # every row was just reset
    for row in range(8):
        single.reset(seed=0, options={"start_slot": int(venv.state.slot[row])})
        np.testing.assert_array_equal(venv.state.replicas[row], single.state.replicas[0])
        np.testing.assert_array_equal(venv.state.ready_at[row], single.state.ready_at[0])
    assert len(np.unique(venv.state.replicas.sum(1))) > 1


def test_initial_replicas_follow_the_load_on_the_peak_scenario() -> None:
    env = LWMECPSEnv3(scenario="testbed-4bs-peak", obs_format="box")
    env.reset(seed=0, options={"start_slot": 7500})
    users = env.scenario.trace("a")[7499] * 4
    # Enough pods that no pod gets more than k_safe (31) requests of the starting burst.
    expected = np.clip(np.ceil(users / env.spec_.k_safe), 1, 4)
    np.testing.assert_array_equal(env.state.replicas[0], expected)
    assert core.ready_counts(env.state, core.now_s(env.spec_, env.state))[0].tolist() == \
        expected.tolist()
    plain = LWMECPSEnv3(scenario="testbed-4bs", obs_format="box")
    plain.reset(seed=0, options={"start_slot": 7500})
    assert plain.state.replicas[0].tolist() == [1, 1, 1, 1]


def test_shuffled_stations_trace_replays_the_day_in_every_station_order() -> None:
    day = load_scenario("testbed-4bs").trace("a")
    shuffled = augmented_trace(day, shuffle_stations=True)
    n = len(day)
    assert shuffled.shape == (24 * n, 4)
    blocks = shuffled.reshape(24, n, 4)
    np.testing.assert_array_equal(blocks[0], day)  # the identity first
    orders = set()
    for block in blocks:
        # Each block is the day with its columns reordered: find the order back.
        order = tuple(int(np.flatnonzero((day == block[:, [j]]).all(0))[0]) for j in range(4))
        np.testing.assert_array_equal(block, day[:, list(order)])
        orders.add(order)
    assert len(orders) == 24
    big = np.arange(10 * 64).reshape(10, 64)
    assert augmented_trace(big, True).shape == (MAX_STATION_ORDERS * 10, 64)
    np.testing.assert_array_equal(augmented_trace(day), day)


def test_load_jitter_scales_each_station_within_its_range() -> None:
    day = load_scenario("testbed-4bs").trace("a")
    n = len(day)
    jittered = augmented_trace(day, load_jitter=0.2).reshape(JITTER_DAYS, n, 4)
    np.testing.assert_array_equal(jittered[0], day)
    busy = day.sum(0)
    scales = jittered.sum(1) / busy  # per copy and station
    assert np.all(scales >= 0.8 - 1e-3) and np.all(scales <= 1.25 + 1e-3)
    assert np.ptp(scales[1:]) > 0.2  # the copies really differ
    both = augmented_trace(day, shuffle_stations=True, load_jitter=0.2)
    assert both.shape == (24 * JITTER_COPIES * n, 4)
    # Same settings, same days: the variants are fixed, the episode start picks one.
    np.testing.assert_array_equal(both, augmented_trace(day, True, 0.2))
    with pytest.raises(ValueError, match=r"load_jitter must be a number in \[0, 1\)"):
        LWMECPSEnv3(load_jitter=1.5)
    with pytest.raises(ValueError, match="need backend='sim'"):
        LWMECPSEnv3(backend="k8s", load_jitter=0.2)


def test_shuffle_stations_trains_on_reordered_days() -> None:
    venv = LWMECPSEnv3Vector(num_envs=64, scenario="testbed-4bs", shuffle_stations=True)
    venv.reset(seed=1)
    n = venv.scenario.n_slots
    assert len(venv.trace) == 24 * n
    assert venv.state.slot.max() >= n  # episodes start in the reordered days
    # Time of day is unchanged: the same slot of two blocks has the same time features.
    env = LWMECPSEnv3(scenario="testbed-4bs", obs_format="box", shuffle_stations=True)
    first, _ = env.reset(seed=0, options={"start_slot": 100})
    later, _ = env.reset(seed=0, options={"start_slot": 100 + 5 * n})
    np.testing.assert_allclose(first[-2:], later[-2:])
    users = env.spec_.n_nodes * 5 + 2 * env.spec_.n_deployments
    assert not np.allclose(first[users:users + 4], later[users:users + 4])
    with pytest.raises(ValueError, match="shuffle_stations and load_jitter need backend='sim'"):
        LWMECPSEnv3(backend="k8s", shuffle_stations=True)
    with pytest.raises(ValueError, match="shuffle_stations must be true or false"):
        make_env("LWMECPSEnv3", {"shuffle_stations": "yes"})


HISTORY = {"history": 3, "history_windows": [6, 30]}


def test_history_blocks_hold_the_measured_users_single_and_batched() -> None:
    single = LWMECPSEnv3(scenario="testbed-4bs", obs_format="box", **HISTORY)
    obs, _ = single.reset(seed=0, options={"start_slot": 500})
    layout, day = single.layout, single.scenario.trace("a") / single.scenario.max_users
    np.testing.assert_allclose(layout.view(obs[None], "users_history")[0], day[[496, 497, 498]].T,
                               atol=1e-6)
    window = layout.view(obs[None], "users_window")[0]
    np.testing.assert_allclose(window[:, 1, 0], day[470:500].mean(0), atol=1e-6)
    np.testing.assert_allclose(window[:, 0, 1], day[494:500].max(0), atol=1e-6)
    # Batched: the same blocks after steps and after an automatic reset.
    venv = LWMECPSEnv3Vector(num_envs=3, scenario="testbed-4bs", **HISTORY)
    venv.reset(seed=0, options={"start_slot": 500})
    a = np.array([2, 2, 2, 2])
    for _ in range(4):
        obs_v, *_ = venv.step(np.stack([a] * 3))
        obs_s, *_ = single.step(a)
        np.testing.assert_allclose(obs_v[0], obs_s, atol=1e-6)
    checked = 0
    for _ in range(8):
        ended = venv._autoreset.copy()
        obs_v, *_ = venv.step(np.stack([a] * 3))
        for row in np.flatnonzero(ended):
            first, _ = single.reset(seed=0, options={"start_slot": int(venv.state.slot[row])})
            np.testing.assert_allclose(obs_v[row], first, atol=1e-6)
            checked += 1
    assert checked >= 3
    # The dict form carries the raw users.
    d = LWMECPSEnv3(scenario="testbed-4bs", **HISTORY)
    o, _ = d.reset(seed=0, options={"start_slot": 500})
    assert d.observation_space.contains(o)
    np.testing.assert_allclose(o["users_history"], single.scenario.trace("a")[[496, 497, 498]].T)


def test_history_on_a_cluster_comes_from_its_own_measurements() -> None:
    from lwmecps_rllib.backends import SimBackend

    class Cluster:
        """A backend that is not the simulator (the env cannot read its trace)."""

        def __init__(self, spec, trace) -> None:
            self.spec, self._sim = spec, SimBackend(spec, trace)

        def reset(self, start, rng):
            return self._sim.reset(start, rng)

        def apply(self, state, replicas, nodes):
            return self._sim.apply(state, replicas, nodes)

        def advance(self, state, rng):
            return self._sim.advance(state, rng)

        def close(self) -> None:
            pass

    env = LWMECPSEnv3(scenario="testbed-4bs", obs_format="box", backend=Cluster, history=2)
    obs, _ = env.reset(seed=0, options={"start_slot": 500})
    assert env.cluster_view().trace is None
    first = env.last.users[0] / env.scenario.max_users
    # Before any step the first measurement stands for the slots before it.
    np.testing.assert_allclose(env.layout.view(obs[None], "users_history")[0],
                               np.stack([first, first], 1), atol=1e-6)
    seen = [env.last.users[0].copy()]
    for _ in range(2):
        obs, *_ = env.step(np.array([1, 1, 1, 1]))
        seen.append(env.last.users[0].copy())
    np.testing.assert_allclose(env.layout.view(obs[None], "users_history")[0],
                               np.stack(seen[:2], 1) / env.scenario.max_users, atol=1e-6)


@pytest.mark.parametrize("scenario", ["testbed-4bs-peak", "metro-16"])
def test_the_compiled_step_is_the_generic_step(scenario: str) -> None:
    """LWMECPSEnv3's one-call simulator step gives what the generic step gives: the same
    observations, rewards, infos and states, valid and invalid actions alike."""
    from lwmecps_rllib.envs.lwmecps_env3 import LWMECPSEnv3

    class Generic(LWMECPSEnv3):
        _fast = False

    fast, slow = LWMECPSEnv3(scenario=scenario, obs_format="box"), \
        Generic(scenario=scenario, obs_format="box")
    assert fast._fast and not slow._fast
    rng = np.random.default_rng(0)
    fast.reset(seed=1)
    slow.reset(seed=1)
    for _ in range(300):
        act = rng.integers(0, fast.spec_.max_pods + 1, size=fast.spec_.n_deployments)
        a, b = fast.step(act), slow.step(act)
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
        for f in ("slot", "replicas", "ready_at", "node_of"):
            assert np.array_equal(getattr(fast.state, f), getattr(slow.state, f))
        if a[2] or a[3]:
            fast.reset()
            slow.reset()
