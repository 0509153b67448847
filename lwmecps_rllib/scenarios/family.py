"""Scenario families: ranges of generated clusters, sampled per training episode.

A family file (YAML) gives ranges for what a generated scenario (`generate:`, see
:func:`lwmecps_rllib.scenarios.loader.generate_parts`) and its scalar knobs take:

    name: edge-4-32
    family:
      n_stations: [4, 32]          # inclusive integer range
      node_cpu_choices: [[8], [4, 8, 16], [4, 8, 8, 16]]   # one list drawn per scenario
      mean_users: [6, 26]          # each station's mean users drawn within
      load_scale: [1.0, 4.0]
      pod_startup_s: [10.0, 20.0]
      own_delay_ms: [5.0, 15.0]
      delay_per_km_ms: [1.0, 3.0]
      km_per_station: [1.0, 3.0]   # area side = this x sqrt(n_stations)
      peak_shift_slots: [0, 360]
      episode_length: 30
      initial_replicas: load
      pool: 64                     # distinct scenarios (seeds 0 .. pool-1)
      seed: 0

Scenario `i` of the pool is drawn from a generator seeded by `(seed, i)`, so a family
and an index always give the same cluster. An env with `scenario_family` picks a pool
member per episode (from its own `np_random`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lwmecps_rllib.scenarios.loader import DATA_DIR, from_dict
from lwmecps_rllib.scenarios.scenario import Scenario, ScenarioError

RANGES = ("mean_users", "load_scale", "pod_startup_s", "own_delay_ms", "delay_per_km_ms",
          "km_per_station")
KEYS = {"n_stations", "node_cpu_choices", "peak_shift_slots", "episode_length",
        "initial_replicas", "pool", "seed", *RANGES}
#: Shipped families (`lwmecps_rllib/scenarios/data/family-*.yaml`).
FAMILY_PREFIX = "family-"


@dataclass(frozen=True)
class ScenarioFamily:
    """Ranges of generated scenarios (see the module docstring)."""

    name: str
    n_stations: tuple[int, int]
    node_cpu_choices: tuple[tuple[float, ...], ...]
    peak_shift_slots: tuple[int, int]
    ranges: tuple[tuple[str, float, float], ...]
    episode_length: int
    initial_replicas: int | str
    pool: int
    seed: int
    description: str = ""

    @property
    def max_stations(self) -> int:
        """The most stations a member has."""
        return self.n_stations[1]

    def member(self, i: int) -> Scenario:
        """Scenario `i` of the pool (the same for the same family and index)."""
        if not 0 <= i < self.pool:
            raise ValueError(f"member index must be in [0, {self.pool}), got {i}")
        return _member(self, i)

    def raw_member(self, i: int) -> dict[str, Any]:
        """Scenario `i` in the YAML form."""
        rng = np.random.default_rng([self.seed, i])
        r = {name: float(rng.uniform(lo, hi)) for name, lo, hi in self.ranges}
        n = int(rng.integers(self.n_stations[0], self.n_stations[1] + 1))
        cpus = self.node_cpu_choices[int(rng.integers(len(self.node_cpu_choices)))]
        users = sorted(rng.uniform(*_range(self.ranges, "mean_users"), size=2))
        return {
            "name": f"{self.name}-{i}", "description": f"member {i} of family {self.name}",
            "generate": {"seed": int(rng.integers(2**31)), "n_stations": n,
                         "area_km": r["km_per_station"] * float(np.sqrt(n)),
                         "node_cpu_choices": list(cpus),
                         "mean_users": [float(users[0]), float(users[1])],
                         "own_delay_ms": r["own_delay_ms"],
                         "delay_per_km_ms": r["delay_per_km_ms"],
                         "peak_shift_slots": int(rng.integers(self.peak_shift_slots[0],
                                                              self.peak_shift_slots[1] + 1))},
            "load_scale": r["load_scale"], "pod_startup_s": r["pod_startup_s"],
            "episode_length": self.episode_length, "initial_replicas": self.initial_replicas,
        }


def _range(ranges: tuple[tuple[str, float, float], ...], name: str) -> tuple[float, float]:
    return next((lo, hi) for n, lo, hi in ranges if n == name)


@functools.lru_cache(maxsize=256)
def _member(family: ScenarioFamily, i: int) -> Scenario:
    return from_dict(family.raw_member(i))


def _pair(raw: dict[str, Any], key: str, default: Any, integer: bool = False,
          low: float = 0.0) -> tuple[Any, Any]:
    v = raw.get(key, default)
    kind = int if integer else (int, float)
    ok = (isinstance(v, (list, tuple)) and len(v) == 2
          and all(isinstance(x, kind) and not isinstance(x, bool) for x in v)
          and low <= v[0] <= v[1])
    if not ok:
        what = "integers" if integer else "numbers"
        raise ScenarioError(f"field 'family.{key}' must be [low, high], {what} with "
                            f"{low} <= low <= high, got {v!r}")
    return (int(v[0]), int(v[1])) if integer else (float(v[0]), float(v[1]))


def family_from_dict(raw: Any) -> ScenarioFamily:
    """A checked family from its YAML form.

    Raises:
        ScenarioError: naming the bad field and what it allows.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("family"), dict):
        raise ScenarioError("a scenario family needs 'name' and a 'family' mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("field 'name' is required and must be a non-empty string")
    f = raw["family"]
    unknown = set(f) - KEYS
    if unknown:
        raise ScenarioError(f"unknown field(s) {sorted(unknown)} in 'family'; allowed: "
                            f"{sorted(KEYS)}")
    n = _pair(f, "n_stations", [4, 32], integer=True, low=2)
    cpus = f.get("node_cpu_choices", [[8]])
    if not (isinstance(cpus, list) and cpus and all(
            isinstance(c, list) and c and all(isinstance(x, (int, float)) and x >= 2
                                              for x in c) for c in cpus)):
        raise ScenarioError("field 'family.node_cpu_choices' must be a non-empty list of "
                            "non-empty lists of CPU counts >= 2")
    defaults = {"mean_users": [6.0, 26.0], "load_scale": [1.0, 4.0],
                "pod_startup_s": [10.0, 20.0], "own_delay_ms": [5.0, 15.0],
                "delay_per_km_ms": [1.0, 3.0], "km_per_station": [1.0, 3.0]}
    ranges = tuple((k, *_pair(f, k, defaults[k])) for k in RANGES)
    if _range(ranges, "load_scale")[0] <= 0 or _range(ranges, "km_per_station")[0] <= 0:
        raise ScenarioError("fields 'family.load_scale' and 'family.km_per_station' must "
                            "be > 0")
    shift = _pair(f, "peak_shift_slots", [0, 360], integer=True)
    ints = {}
    for key, default, low in (("episode_length", 30, 1), ("pool", 64, 1), ("seed", 0, 0)):
        v = f.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ScenarioError(f"field 'family.{key}' must be an integer >= {low}, got {v!r}")
        ints[key] = v
    init = f.get("initial_replicas", "load")
    return ScenarioFamily(name=name, n_stations=n,
                          node_cpu_choices=tuple(tuple(float(x) for x in c) for c in cpus),
                          peak_shift_slots=shift, ranges=ranges,
                          episode_length=ints["episode_length"], initial_replicas=init,
                          pool=ints["pool"], seed=ints["seed"],
                          description=str(raw.get("description", "")))


def list_families() -> list[str]:
    """Names of the shipped families."""
    return sorted(p.stem for p in DATA_DIR.glob(f"{FAMILY_PREFIX}*.yaml"))


@functools.lru_cache(maxsize=32)
def _load(path: str) -> ScenarioFamily:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read scenario family {path!r}: {exc}") from exc
    return family_from_dict(raw)


def load_family(name_or_path: str | Path | ScenarioFamily) -> ScenarioFamily:
    """A shipped family by name (e.g. `family-edge`) or a family YAML by path.

    Raises:
        ScenarioError: unknown name or missing file (naming the shipped ones), or a bad
            field.
    """
    if isinstance(name_or_path, ScenarioFamily):
        return name_or_path
    text = str(name_or_path)
    if text in list_families():
        return _load(str(DATA_DIR / f"{text}.yaml"))
    if Path(text).is_file():
        return _load(str(Path(text).resolve()))
    raise ScenarioError(f"scenario_family must be one of {list_families()} or a family "
                        f"YAML path, got {text!r}")
