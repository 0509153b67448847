"""Loading scenarios from YAML, and generating larger ones with the testbed's daily shape."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lwmecps_rllib.scenarios.scenario import (
    NodeSpec,
    PodSpec,
    Scenario,
    ScenarioError,
    ServerModel,
    StationSpec,
    load_trace_csv,
    ring_delay_matrix,
    validate,
)

DATA_DIR = Path(__file__).parent / "data"
SHIPPED = ("testbed-4bs", "testbed-4bs-peak", "metro-16", "city-64", "city-256")

_SCALAR_FIELDS = {
    f.name for f in dataclasses.fields(Scenario)
} - {"name", "nodes", "stations", "delay_ms", "traces", "pod", "server", "description"}
_TOP_KEYS = _SCALAR_FIELDS | {
    "name", "description", "base", "nodes", "stations", "network", "traces", "pod", "server",
    "generate",
}
_GENERATE_KEYS = {
    "seed", "n_stations", "area_km", "node_cpu_choices", "node_ram_mb_per_cpu", "mean_users",
    "own_delay_ms", "delay_per_km_ms", "peak_shift_slots",
}


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return list(SHIPPED)


def load_scenario(name_or_path: str | Path | Scenario) -> Scenario:
    """A shipped scenario by name, or a scenario YAML file by path.

    Raises:
        ScenarioError: for an unknown name, a missing file or an invalid field.
    """
    if isinstance(name_or_path, Scenario):
        return name_or_path
    key = str(name_or_path)
    if key in SHIPPED:
        return _load_shipped(key)
    path = Path(key)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _from_file(path.resolve())
    raise ScenarioError(
        f"unknown scenario {key!r}; allowed: {list(SHIPPED)} or a path to a .yaml file"
    )


@functools.cache
def _load_shipped(name: str) -> Scenario:
    return _from_file(DATA_DIR / f"{name}.yaml")


def _from_file(path: Path) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ScenarioError(f"scenario file {str(path)!r} must hold a mapping")
    return from_dict(raw, base_dir=path.parent)


def _dataclass_from(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ScenarioError(f"field {path!r} must be a mapping, got {raw!r}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - allowed
    if unknown:
        raise ScenarioError(
            f"unknown field(s) {sorted(unknown)} in {path!r}; allowed: {sorted(allowed)}"
        )
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ScenarioError(f"field {path!r}: {exc}") from exc


def from_dict(raw: dict[str, Any], base_dir: Path = DATA_DIR) -> Scenario:
    """Build and validate a scenario from a dict (the YAML form).

    Raises:
        ScenarioError: naming the invalid field.
    """
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ScenarioError(f"unknown scenario field(s) {sorted(unknown)}; allowed: "
                            f"{sorted(_TOP_KEYS)}")
    if "name" not in raw or not isinstance(raw["name"], str) or not raw["name"]:
        raise ScenarioError("field 'name' is required and must be a non-empty string")
    overrides = {k: raw[k] for k in _SCALAR_FIELDS if k in raw}
    if "base" in raw:
        base = load_scenario(raw["base"])
        for key in ("nodes", "stations", "network", "traces", "generate"):
            if key in raw:
                raise ScenarioError(f"field {key!r} cannot be combined with 'base'")
        pod = _dataclass_from(PodSpec, {**dataclasses.asdict(base.pod), **raw.get("pod", {})},
                              "pod")
        server = _dataclass_from(
            ServerModel, {**dataclasses.asdict(base.server), **raw.get("server", {})}, "server")
        s = dataclasses.replace(base, name=raw["name"], description=raw.get("description", ""),
                                pod=pod, server=server, **overrides)
        validate(s)
        return s
    if "generate" in raw:
        for key in ("nodes", "stations", "network", "traces"):
            if key in raw:
                raise ScenarioError(f"field {key!r} cannot be combined with 'generate'")
        parts = generate_parts(raw["generate"])
    else:
        parts = _explicit_parts(raw, base_dir)
    pod = _dataclass_from(PodSpec, raw.get("pod", {}), "pod")
    server = _dataclass_from(ServerModel, raw.get("server", {}), "server")
    s = Scenario(name=raw["name"], description=raw.get("description", ""), pod=pod,
                 server=server, **parts, **overrides)
    validate(s)
    return s


def _explicit_parts(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    for key in ("nodes", "stations", "traces"):
        if key not in raw:
            raise ScenarioError(f"field {key!r} is required (or use 'base' or 'generate')")
    if not isinstance(raw["nodes"], list):
        raise ScenarioError("field 'nodes' must be a list")
    if not isinstance(raw["stations"], list):
        raise ScenarioError("field 'stations' must be a list")
    nodes = tuple(_dataclass_from(NodeSpec, n, f"nodes[{i}]") for i, n in enumerate(raw["nodes"]))
    stations = tuple(
        _dataclass_from(StationSpec, st, f"stations[{i}]") for i, st in enumerate(raw["stations"])
    )
    node_index = {n.name: i for i, n in enumerate(nodes)}
    for i, st in enumerate(stations):
        if st.node not in node_index:
            raise ScenarioError(f"field 'stations[{i}].node' is {st.node!r}; allowed: "
                                f"{list(node_index)}")
    home = np.array([node_index[st.node] for st in stations])
    net = raw.get("network", {})
    if not isinstance(net, dict):
        raise ScenarioError("field 'network' must be a mapping")
    unknown = set(net) - {"delay_ms", "own_delay_ms", "hop_delay_ms"}
    if unknown:
        raise ScenarioError(f"unknown field(s) {sorted(unknown)} in 'network'; allowed: "
                            "['delay_ms', 'hop_delay_ms', 'own_delay_ms']")
    if "delay_ms" in net:
        try:
            delay = np.asarray(net["delay_ms"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ScenarioError(
                f"field 'network.delay_ms' must be a numeric matrix: {exc}") from exc
    else:
        own = net.get("own_delay_ms", 10.0)
        hop = net.get("hop_delay_ms", 10.0)
        for k, v in (("own_delay_ms", own), ("hop_delay_ms", hop)):
            if not isinstance(v, (int, float)) or v < 0:
                raise ScenarioError(f"field 'network.{k}' must be a number >= 0, got {v!r}")
        delay = ring_delay_matrix(len(stations), home, len(nodes), float(own), float(hop))
    if not isinstance(raw["traces"], dict) or not raw["traces"]:
        raise ScenarioError("field 'traces' must map trace names to CSV files")
    names = [st.name for st in stations]
    traces = {}
    for tname, fname in raw["traces"].items():
        if not isinstance(fname, str):
            raise ScenarioError(f"field 'traces.{tname}' must be a CSV file name")
        traces[str(tname)] = load_trace_csv((base_dir / fname), names)
    return {"nodes": nodes, "stations": stations, "delay_ms": delay, "traces": traces}


@functools.lru_cache(maxsize=1)
def daily_shape() -> np.ndarray:
    """The testbed's daily shape: total users of trace A per slot, smoothed, mean 1."""
    a = load_trace_csv(DATA_DIR / "profile_a_24h.csv", ["bs1", "bs2", "bs3", "bs4"])
    total = a.sum(axis=1).astype(np.float64)
    k = 31
    padded = np.concatenate([total[-(k // 2):], total, total[: k // 2]])
    smooth = np.convolve(padded, np.ones(k) / k, mode="valid")
    return smooth / smooth.mean()


def generate_parts(gen: Any) -> dict[str, Any]:
    """Generate nodes, stations, delays and traces from a `generate:` mapping.

    Stations are placed by a hard-core process in a square (no two closer than a
    minimum distance), ordered by angle around the centre so that fail-over ring
    neighbours are near each other; each station has its own node, with CPU drawn from
    `node_cpu_choices` (heterogeneous nodes). Delay is `own_delay_ms` plus
    `delay_per_km_ms` per km of distance. Traces follow the testbed's daily shape with a
    per-station mean and peak shift, Poisson noise per slot; traces `a` and `b` are two
    independent days.

    Raises:
        ScenarioError: naming the invalid `generate.*` field.
    """
    if not isinstance(gen, dict):
        raise ScenarioError("field 'generate' must be a mapping")
    unknown = set(gen) - _GENERATE_KEYS
    if unknown:
        raise ScenarioError(f"unknown field(s) {sorted(unknown)} in 'generate'; allowed: "
                            f"{sorted(_GENERATE_KEYS)}")
    n = gen.get("n_stations")
    if not isinstance(n, int) or n < 2:
        raise ScenarioError(f"field 'generate.n_stations' must be an integer >= 2, got {n!r}")
    seed = gen.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise ScenarioError(f"field 'generate.seed' must be an integer >= 0, got {seed!r}")
    area = float(gen.get("area_km", 2.0 * np.sqrt(n)))
    cpu_choices = gen.get("node_cpu_choices", [8])
    if not isinstance(cpu_choices, list) or not cpu_choices or any(
            not isinstance(c, (int, float)) or c < 2 for c in cpu_choices):
        raise ScenarioError("field 'generate.node_cpu_choices' must be a non-empty list of "
                            "CPU counts >= 2 (one pod needs 2 CPU)")
    ram_per_cpu = float(gen.get("node_ram_mb_per_cpu", 2000.0))
    mean_users = gen.get("mean_users", [8, 24])
    if not (isinstance(mean_users, list) and len(mean_users) == 2
            and 0 <= mean_users[0] <= mean_users[1]):
        raise ScenarioError("field 'generate.mean_users' must be [low, high] with 0 <= low <= high")
    own = float(gen.get("own_delay_ms", 10.0))
    per_km = float(gen.get("delay_per_km_ms", 2.0))
    shift_max = int(gen.get("peak_shift_slots", 180))
    rng = np.random.default_rng(seed)
    min_dist = 0.5 * area / np.sqrt(n)
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform(0, area, size=2)
        if all(np.hypot(*(p - q)) >= min_dist for q in pts):
            pts.append(p)
        elif rng.random() < 0.01:
            min_dist *= 0.95
    xy = np.array(pts)
    centre = xy.mean(axis=0)
    order = np.argsort(np.arctan2(xy[:, 1] - centre[1], xy[:, 0] - centre[0]))
    xy = xy[order]
    cpus = rng.choice(np.asarray(cpu_choices, dtype=np.float64), size=n)
    nodes = tuple(
        NodeSpec(name=f"node-{i + 1}", cpu=float(c), ram_mb=float(c) * ram_per_cpu)
        for i, c in enumerate(cpus)
    )
    stations = tuple(
        StationSpec(name=f"bs{i + 1}", node=f"node-{i + 1}",
                    deployment=f"lwmecps-testapp-server-bs{i + 1}",
                    x_km=float(round(xy[i, 0], 3)), y_km=float(round(xy[i, 1], 3)))
        for i in range(n)
    )
    dist = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
    delay = np.round(own + per_km * dist, 1)
    shape = daily_shape()
    means = rng.uniform(mean_users[0], mean_users[1], size=n)
    shifts = rng.integers(-shift_max, shift_max + 1, size=n)
    traces = {}
    for tname, tseed in (("a", 1), ("b", 2)):
        trng = np.random.default_rng([seed, tseed])
        lam = np.stack([means[i] * np.roll(shape, shifts[i]) for i in range(n)], axis=1)
        traces[tname] = trng.poisson(lam).astype(np.int64)
    return {"nodes": nodes, "stations": stations, "delay_ms": delay, "traces": traces}


def scenario_to_dict(s: Scenario) -> dict[str, Any]:
    """A JSON-friendly summary of a scenario (without the traces)."""
    return {
        "name": s.name,
        "nodes": [dataclasses.asdict(n) for n in s.nodes],
        "stations": [dataclasses.asdict(st) for st in s.stations],
        "delay_ms": np.asarray(s.delay_ms).tolist(),
        "traces": {k: list(v.shape) for k, v in s.traces.items()},
        "pod": dataclasses.asdict(s.pod),
        "server": dataclasses.asdict(s.server),
        **{k: getattr(s, k) for k in sorted(_SCALAR_FIELDS)},
    }
