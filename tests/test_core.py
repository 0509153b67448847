"""The cluster core's request model against hand-computed cases, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwmecps_rllib.cluster import core, kernels
from lwmecps_rllib.cluster.core import ClusterSpec
from lwmecps_rllib.scenarios import ServerModel, load_scenario

TESTBED = load_scenario("testbed-4bs")
# Deterministic server: every request adds exactly 4 to both counters.
FIXED = ClusterSpec.build(TESTBED.replace(server=ServerModel(increment_low=4, increment_high=4)))
HOME = np.arange(4)[None, :]


def burst(spec: ClusterSpec, ready: list[int], requests: list[int], seed: int = 0):
    return core.simulate_slot(spec, np.array([ready]), HOME.copy(), np.array([requests]),
                              np.random.default_rng(seed))


def hand_delay_ms(k: int, inc: float = 4.0) -> float:
    """Throttle delay of the k-th request of a burst on a fresh pod, by the reference rule."""
    cpu = min(k * inc, 200.0)
    ram = min(k * inc, 256.0)
    load = (cpu / 200.0 + ram / 256.0) / 2.0
    return 1000.0 * (0.5 * 0.05 + 0.5 * (load - 0.7) * 3) if load > 0.7 else 0.0


def test_one_pod_under_a_46_user_burst() -> None:
    m = burst(FIXED, [1, 1, 1, 1], [46, 0, 0, 0])
    expected = sum(10.0 + hand_delay_ms(k) for k in range(1, 47)) / 46
    assert int(m.ok[0]) == 46 and int(m.failed[0]) == 0
    assert float(m.avg_latency_ms[0]) == pytest.approx(expected, rel=1e-12)
    # Requests 40..46 are throttled (load 0.7125 at k = 40), the first 39 are not.
    assert hand_delay_ms(39) == 0.0 and hand_delay_ms(40) > 0.0
    assert expected > 10.0


def test_46_users_on_two_pods_are_not_throttled() -> None:
    m = burst(FIXED, [2, 1, 1, 1], [46, 0, 0, 0])
    assert float(m.avg_latency_ms[0]) == pytest.approx(10.0)


def test_default_model_throttles_only_above_about_45_requests() -> None:
    spec = ClusterSpec.build(TESTBED)
    lat = [float(burst(spec, [1, 1, 1, 1], [n, 0, 0, 0], seed=s).avg_latency_ms[0])
           for n in (30, 60) for s in range(20)]
    assert all(x == pytest.approx(10.0) for x in lat[:20])
    assert all(x > 20.0 for x in lat[20:])


def test_zero_replicas_fail_over_to_the_next_station() -> None:
    m = burst(FIXED, [0, 1, 1, 1], [10, 0, 0, 0])
    # Refused by bs1 (one 10 ms hop spent), served by bs2's pod 20 ms from bs1.
    assert int(m.ok[0]) == 10
    assert float(m.avg_latency_ms[0]) == pytest.approx(10.0 + 20.0)
    assert m.node_ok[0].tolist() == [0, 10, 0, 0]


def test_timeouts_fail_over_and_load_the_next_pod() -> None:
    m = burst(FIXED, [1, 1, 1, 1], [80, 0, 0, 0])
    # cpu caps at k = 50; load > 0.9433 (10 ms + delay > 400 ms) from k = 57 on.
    late = [k for k in range(1, 81) if 10.0 + hand_delay_ms(k) > 400.0]
    assert late[0] == 57 and len(late) == 24
    served_first = sum(10.0 + hand_delay_ms(k) for k in range(1, 57))
    served_next = 24 * (400.0 + 20.0)  # 0.4 s spent, then bs2's fresh pod 20 ms away
    assert int(m.ok[0]) == 80 and int(m.failed[0]) == 0
    assert m.node_ok[0].tolist() == [56, 24, 0, 0]
    assert float(m.latency_sum_ms[0]) == pytest.approx(served_first + served_next)


def test_all_stations_down_fail_every_request() -> None:
    m = burst(FIXED, [0, 0, 0, 0], [5, 6, 7, 8])
    assert int(m.ok[0]) == 0 and int(m.failed[0]) == 26
    metrics = core.step_metrics(FIXED, m, np.zeros((1, 4), np.int64), HOME)
    assert metrics[0, kernels.M_LATENCY_TERM] == pytest.approx(1600.0)
    assert metrics[0, kernels.M_REWARD] < -500


def test_reward_counts_replicas_once_and_sees_imbalance() -> None:
    m = burst(FIXED, [1, 1, 1, 4], [10, 10, 10, 10])
    metrics = core.step_metrics(FIXED, m, np.array([[1, 1, 1, 4]]), HOME)[0]
    assert metrics[kernels.M_PODS] == 7
    # Utilisation in %: CPU 0.1/8, RAM 128/16000, TX and RX 10/1024 per pod.
    per_pod = np.array([0.1 / 8, 128 / 16000, 10 / 1024, 10 / 1024]) * 100
    util = np.array([1, 1, 1, 4])[:, None] * per_pod[None, :]
    assert metrics[kernels.M_IMBALANCE] == pytest.approx(util.var(axis=0).sum())
    assert metrics[kernels.M_REWARD] == pytest.approx(
        -10.0 - 0.1 * 7 - 0.1 * metrics[kernels.M_IMBALANCE])
    even = core.step_metrics(FIXED, m, np.array([[2, 2, 2, 2]]), HOME)[0]
    assert even[kernels.M_IMBALANCE] == pytest.approx(0.0)


def test_pod_startup_delays_new_replicas() -> None:
    sc = load_scenario("testbed-4bs-peak")
    spec = ClusterSpec.build(sc)
    state = core.initial_state(spec, np.array([100]))
    state = core.apply_replicas(spec, state, np.array([[3, 1, 1, 1]]))
    t = core.now_s(spec, state)
    assert core.ready_counts(state, t)[0].tolist() == [1, 1, 1, 1]
    assert core.ready_counts(state, t + 20.0)[0].tolist() == [3, 1, 1, 1]
    down = core.apply_replicas(spec, state, np.array([[2, 0, 1, 1]]))
    assert core.ready_counts(down, t + 20.0)[0].tolist() == [2, 0, 1, 1]
    # Scale-down removes the newest pods first: the old ready one stays.
    assert core.ready_counts(down, t)[0].tolist() == [1, 0, 1, 1]


def test_shared_stream_gives_common_random_numbers() -> None:
    spec = ClusterSpec.build(TESTBED)
    reqs = np.array([[60, 50, 0, 0]] * 3)
    ready = np.ones((3, 4), np.int64)
    nodes = np.repeat(HOME, 3, axis=0)
    rng = np.random.default_rng(1)
    shared = core.simulate_slot(spec, ready, nodes, reqs, rng, shared_stream=True)
    assert len(set(shared.latency_sum_ms.tolist())) == 1
    own = core.simulate_slot(spec, ready, nodes, reqs, rng)
    assert len(set(own.latency_sum_ms.tolist())) == 3


@settings(max_examples=200, deadline=None)
@given(
    ready=st.lists(st.integers(0, 4), min_size=4, max_size=4),
    reqs=st.lists(st.integers(0, 300), min_size=4, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_invariants(ready: list[int], reqs: list[int], seed: int) -> None:
    spec = ClusterSpec.build(TESTBED)
    m = burst(spec, ready, reqs, seed)
    assert int(m.requests[0]) == sum(reqs)
    assert 0 <= int(m.ok[0]) <= sum(reqs)
    assert int(m.node_ok[0].sum()) == int(m.ok[0])
    assert float(m.node_latency_sum_ms[0].sum()) == pytest.approx(float(m.latency_sum_ms[0]))
    if m.ok[0] > 0:
        # Never faster than the network, never slower than every station's timeout.
        assert float(m.avg_latency_ms[0]) >= 10.0 - 1e-9
        assert float(m.latency_sum_ms[0]) <= int(m.ok[0]) * 1600.0
    served = [n for n in range(4) if ready[n] > 0]
    assert all(m.node_ok[0][n] == 0 for n in range(4) if n not in served)
    if not served:
        assert int(m.ok[0]) == 0
