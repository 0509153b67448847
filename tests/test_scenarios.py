"""Scenarios: shipped data, generation, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lwmecps_rllib.scenarios import ScenarioError, from_dict, list_scenarios, load_scenario


def test_shipped_scenarios_load(scenario_name: str) -> None:
    s = load_scenario(scenario_name)
    assert s.name == scenario_name
    assert s.trace("a").shape == (8640, s.n_stations)
    assert s.trace("b").shape == (8640, s.n_stations)
    assert np.asarray(s.delay_ms).shape == (s.n_stations, s.n_nodes)


def test_testbed_facts() -> None:
    s = load_scenario("testbed-4bs")
    assert s.node_names == ["node-1", "node-2", "node-3", "node-4"]
    assert [n.cpu for n in s.nodes] == [8, 8, 8, 8]
    assert s.deployment_names == [f"lwmecps-testapp-server-bs{i}" for i in range(1, 5)]
    assert (s.pod.cpu_request, s.pod.ram_request_mb) == (2.0, 2000.0)
    # 10 ms to the own node, +10 ms per hop of ring distance.
    assert np.asarray(s.delay_ms).tolist() == [
        [10, 20, 30, 20], [20, 10, 20, 30], [30, 20, 10, 20], [20, 30, 20, 10]]
    assert s.episode_length == 5 and s.load_scale == 1 and s.pod_startup_s == 0
    # The README's figures for the real traces.
    assert s.trace("a").max(axis=0).tolist() == [46, 42, 40, 36]
    assert s.trace("b").max(axis=0).tolist() == [34, 44, 47, 37]


def test_peak_scenario_knobs() -> None:
    s = load_scenario("testbed-4bs-peak")
    assert (s.load_scale, s.pod_startup_s, s.episode_length) == (4.0, 20.0, 30)
    assert s.nodes == load_scenario("testbed-4bs").nodes


def test_generated_scenarios_are_heterogeneous_and_deterministic() -> None:
    s = load_scenario("city-64")
    assert s.n_nodes == 64 and s.n_stations == 64
    assert len({n.cpu for n in s.nodes}) > 1
    raw = {"name": "g", "generate": {"seed": 3, "n_stations": 6}}
    a, b = from_dict(raw), from_dict(raw)
    np.testing.assert_array_equal(a.trace("a"), b.trace("a"))
    assert not np.array_equal(a.trace("a"), a.trace("b"))
    # The daily shape: the evening is busier than the night trough.
    total = a.trace("a").sum(axis=1)
    assert total[7000:7800].mean() > 1.5 * total[2000:3000].mean()


def test_list_scenarios() -> None:
    assert list_scenarios() == ["testbed-4bs", "testbed-4bs-peak", "metro-16", "city-64",
                                "city-256"]


def _raw() -> dict:
    return {
        "name": "x",
        "nodes": [{"name": f"n{i}"} for i in range(1, 5)],
        "stations": [{"name": f"bs{i}", "node": f"n{i}", "deployment": f"d{i}"}
                     for i in range(1, 5)],
        "traces": {"a": "profile_a_24h.csv"},
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nodes": [{"name": "n1", "cpu": -1}]}, "nodes[0].cpu"),
        ({"nodes": [{"name": "n1", "gpus": 1}]}, "gpus"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"load_scale": -2}, "load_scale"),
        ({"stabilization_time_s": 15}, "stabilization_time_s"),
        ({"network": {"delay_ms": [[1, 2]]}}, "network.delay_ms"),
        ({"colour": "blue"}, "colour"),
        ({"server": {"increment_low": 6}}, "server.increment_low"),
        ({"pod": {"cpu_request": 0}}, "pod.cpu_request"),
    ],
)
def test_bad_fields_are_named(change: dict, field: str) -> None:
    raw = _raw()
    if "nodes" in change:
        raw["nodes"][0] = change.pop("nodes")[0]
    raw.update(change)
    with pytest.raises(ScenarioError, match=field.replace("[", r"\[").replace("]", r"\]")):
        from_dict(raw)


def test_station_on_unknown_node_is_named() -> None:
    raw = _raw()
    raw["stations"][2]["node"] = "nope"
    with pytest.raises(ScenarioError, match=r"stations\[2\]\.node.*allowed"):
        from_dict(raw)


def test_trace_columns_must_match_stations() -> None:
    raw = _raw()
    raw["stations"] = raw["stations"][:1]
    with pytest.raises(ScenarioError, match="columns t_s,bs1"):
        from_dict(raw)


def test_yaml_file_with_base(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nbase: testbed-4bs\nload_scale: 2\nreplica_cost: 0.5\n")
    s = load_scenario(str(path))
    assert (s.name, s.load_scale, s.replica_cost) == ("mine", 2, 0.5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase: testbed-4bs\nepisode_length: 0\n")
    with pytest.raises(ScenarioError, match="episode_length"):
        load_scenario(str(bad))


def test_unknown_scenario_and_trace() -> None:
    with pytest.raises(ScenarioError, match=r"allowed: .*testbed-4bs"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="unknown trace 'c'"):
        load_scenario("testbed-4bs").trace("c")
