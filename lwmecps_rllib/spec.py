"""The run spec: one checked object for an env's options, one for a training's resources
and budget, passed whole from the command lines and sweep files to the envs and RLlib.

    options = EnvOptions(scenario="testbed-4bs-peak", shuffle_stations=True, load_jitter=0.2)
    training = TrainingSpec(algorithm="ppo", params={"learning_rate": 3e-4},
                            budget=Budget(env_steps=1_000_000))
    algo, history = train(training, "LWMECPSEnv3", options)

Both are frozen pydantic models: bad values fail on construction (or in
:meth:`~lwmecps_rllib.validation.Spec.parse`) with a message naming the field and what
is allowed. The checks that involve both (a real cluster is one cluster) are in
:func:`check_run`, once.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from lwmecps_rllib.backends.config import KubernetesConfig
from lwmecps_rllib.scenarios import Scenario
from lwmecps_rllib.validation import Spec

OBS_FORMATS = ("dict", "box", "graph")
RENDER_MODES = ("ansi",)
BACKENDS = ("sim", "k8s")


def check_choice(field: str, value: Any, allowed: tuple[str, ...] | list[str]) -> Any:
    """`value` when it is one of `allowed`; else ValueError naming `field`."""
    if value not in allowed:
        raise ValueError(f"{field} must be one of {list(allowed)}, got {value!r}")
    return value


class EnvOptions(Spec):
    """What an env is built from (every env takes these as keyword arguments too).

    The same fields are RLlib's `env_config` (:meth:`to_env_config`) and the env part
    of a sweep file or a training task.
    """

    scenario: str | Scenario = "testbed-4bs"
    """Shipped scenario name, a scenario YAML path, or a `Scenario`."""
    trace: str = "a"
    """Trace replayed: `a` (training day) or `b` (evaluation day) for the shipped ones."""
    episode_length: int | None = Field(None, ge=1)
    """Steps per episode (default: the scenario's)."""
    obs_format: str | None = None
    """`"dict"`, `"box"` or `"graph"` (LWMECPSEnv3: one row per station, padded to
    `max_stations`, see `lwmecps_rllib.envs.graph`; default: the env's own, `box`
    through RLlib)."""
    max_stations: int | None = Field(None, ge=1, le=4096)
    """`obs_format="graph"`: rows of the observation (default: the scenario's stations,
    or the family's most)."""
    reward_per_station: bool = False
    """Training option: divide each step's reward by the cluster's stations, so that
    clusters of different sizes (a scenario family) weigh alike in the returns. The
    termination threshold still applies to the cluster's reward."""
    scenario_family: str | None = None
    """Train across generated clusters: a shipped family (`family-edge`) or a family
    YAML path (`lwmecps_rllib.scenarios.family`); each episode runs on a member drawn
    from the env's `np_random` (LWMECPSEnv3, `obs_format="graph"`, simulator). The
    `scenario` is then unused."""
    render_mode: str | None = None
    """None or `"ansi"`."""
    backend: Any = "sim"
    """`"sim"`, `"k8s"`, a backend object, or a factory `(spec, trace) -> backend`."""
    backend_config: KubernetesConfig | None = None
    """The Kubernetes backend's settings (`backend="k8s"` only)."""
    shuffle_stations: bool = False
    """Training augmentation: replay the day with the stations' user columns reordered."""
    load_jitter: float = 0.0
    """Training augmentation, j in [0, 1): copies of the day with each station's users
    scaled by its own factor in [1 - j, 1 / (1 - j)]."""
    n_deployments: int | None = Field(None, ge=1)
    """LWMECPSEnv2: deployments to place (default: one per station)."""
    record_latency: bool = False
    """Record each successful request's latency (1-ms bins) in the step's
    `info["latency_hist"]` (simulator only; what `evaluate` reads its percentiles from)."""
    history: int = Field(0, ge=0, le=1000)
    """Observe the users of the `k` slots before the last one, per station (block
    `users_history`; see `lwmecps_rllib.envs.history`)."""
    history_windows: tuple[int, ...] = ()
    """Observe the mean and max users per station over each window of this many slots,
    the last one included (block `users_window`), e.g. `[6, 30]`: 1 and 5 minutes."""

    @field_validator("history_windows", mode="before")
    @classmethod
    def _windows(cls, v: Any) -> tuple[int, ...]:
        ok = isinstance(v, (list, tuple)) and all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 1000 for w in v)
        if not ok or len(set(v)) != len(v):
            raise ValueError(f"history_windows must be a list of distinct integers in "
                             f"[1, 1000] (slots), got {v!r}")
        return tuple(v)

    @field_validator("obs_format")
    @classmethod
    def _obs_format(cls, v: str | None) -> str | None:
        return None if v is None else check_choice("obs_format", v, OBS_FORMATS)

    @field_validator("render_mode")
    @classmethod
    def _render_mode(cls, v: str | None) -> str | None:
        return None if v is None else check_choice("render_mode", v, RENDER_MODES)

    @field_validator("load_jitter", mode="before")
    @classmethod
    def _load_jitter(cls, v: Any) -> float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok or not 0.0 <= v < 1.0:
            raise ValueError(f"load_jitter must be a number in [0, 1), got {v!r}")
        return float(v)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: Any) -> Any:
        if isinstance(v, str):
            return check_choice("backend", v, BACKENDS)
        if not callable(v) and not all(hasattr(v, a) for a in ("reset", "apply", "advance")):
            raise ValueError(f"backend must be one of {list(BACKENDS)}, a backend or a "
                             f"factory, got {v!r}")
        return v

    @model_validator(mode="after")
    def _backend_only(self) -> EnvOptions:
        if self.augmented and self.backend != "sim":
            raise ValueError(f"shuffle_stations and load_jitter need backend='sim' (they "
                             f"change the replayed trace), got backend={self.backend!r}")
        if self.backend_config is not None and self.backend != "k8s":
            raise ValueError("backend_config is only used with backend='k8s'")
        if self.scenario_family is not None:
            if self.backend != "sim":
                raise ValueError(f"scenario_family needs backend='sim', got "
                                 f"backend={self.backend!r}")
            if self.obs_format not in (None, "graph"):
                raise ValueError(f"scenario_family needs obs_format='graph' (one policy for "
                                 f"any size), got obs_format={self.obs_format!r}")
        if self.record_latency and self.backend != "sim":
            raise ValueError(f"record_latency needs backend='sim' (a request's latency is "
                             f"the simulator's), got backend={self.backend!r}")
        return self

    @classmethod
    def build(cls, options: EnvOptions | dict[str, Any] | None = None,
              **fields: Any) -> EnvOptions:
        """Checked options from an `EnvOptions` or a mapping, with `fields` over them (how
        the envs take either an object or keyword arguments)."""
        opts = cls.parse(options)
        return opts.replace(**fields) if fields else opts

    @property
    def augmented(self) -> bool:
        """Whether the replayed day is augmented (`shuffle_stations` or `load_jitter`)."""
        return self.shuffle_stations or self.load_jitter > 0

    def evaluation(self, trace: str = "b") -> EnvOptions:
        """The same env on `trace` as it really is: the day replayed without the training
        options (no station shuffle, no load jitter, the cluster's own reward, the
        `scenario` rather than a family), the observation options kept."""
        return self.replace(trace=trace, shuffle_stations=False, load_jitter=0.0,
                            reward_per_station=False, scenario_family=None,
                            max_stations=None)

    @property
    def scenario_name(self) -> str:
        """The scenario's name (or path) as given."""
        return getattr(self.scenario, "name", self.scenario)

    def to_env_config(self) -> dict[str, Any]:
        """RLlib's `env_config`: the fields that differ from their defaults."""
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name in ("scenario", "trace", "backend") or value != field.get_default(
                    call_default_factory=True):
                out[name] = (value.to_dict() if isinstance(value, KubernetesConfig)
                             else list(value) if isinstance(value, tuple) else value)
        return out


class Resources(Spec):
    """What one training uses: its env runners and learners, and their CPUs and GPUs.

    With `env_runners=0` the training samples in its own process; with `learners=0` it
    learns there. More env runners sample side by side (on any node of the Ray
    cluster); more learners split each batch and average their gradients (torch DDP:
    gloo on CPUs, NCCL on GPUs). Ray reserves `cpus` (or the learner's share, when it
    is larger and `learners=0`) for the main process, and each runner's and learner's
    own CPUs, GPUs and custom resources (Tune: one placement group per trial).
    """

    error_prefix: ClassVar[str] = "resources"

    num_envs: int | None = Field(None, ge=1)
    """Envs per env runner (default: 16 batched for LWMECPSEnv3 on the simulator, else 4;
    1 on a real cluster)."""
    cpus: float = Field(1.0, gt=0)
    """CPUs reserved for the training's main process (what Tune reserves per trial)."""
    torch_threads: int | None = Field(1, ge=1)
    """Torch intra-op threads of the training process (None: torch's default, one per
    core). The networks are small: one thread trains faster on 2 cores."""
    env_runners: int = Field(0, ge=0, le=1024)
    """Remote env runners (Ray actors) sampling side by side; 0: sample in the main
    process."""
    cpus_per_env_runner: float = Field(1.0, ge=0)
    """CPUs reserved per remote env runner (a fraction packs several on one CPU)."""
    gpus_per_env_runner: float = Field(0.0, ge=0)
    """GPUs reserved per remote env runner (the envs are CPU-bound: 0)."""
    env_runner_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per remote env runner, e.g. `{"sampler": 1}` to place the
    runners on the nodes that offer `sampler`."""
    learners: int = Field(0, ge=0, le=256)
    """Remote learners (Ray actors, one DDP rank each); 0: learn in the main process."""
    cpus_per_learner: float | None = Field(None, ge=0)
    """CPUs reserved per learner (None: RLlib's `auto`, 1 without GPUs, else 0)."""
    gpus_per_learner: float = Field(0.0, ge=0)
    """GPUs per learner (a fraction below 1 shares one GPU; above 1 a whole number)."""

    @field_validator("env_runner_resources")
    @classmethod
    def _custom(cls, v: dict[str, float]) -> dict[str, float]:
        reserved = sorted(k for k in v if k in ("CPU", "GPU", "memory"))
        bad = sorted(k for k, x in v.items() if not 0 < x <= 1e6)
        if reserved:
            raise ValueError(f"must name custom resources only (use cpus_per_env_runner "
                             f"and gpus_per_env_runner), got {reserved[0]!r}")
        if bad:
            raise ValueError(f"must map resource names to numbers > 0, got "
                             f"{bad[0]}={v[bad[0]]!r}")
        return v

    @field_validator("gpus_per_learner", "gpus_per_env_runner")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"must be a fraction below 1 or a whole number, got {v!r}")
        return v

    @property
    def distributed(self) -> bool:
        """Whether sampling or learning runs outside the main process."""
        return self.env_runners > 0 or self.learners > 0


class Budget(Spec):
    """When a training stops (the first bound reached)."""

    error_prefix: ClassVar[str] = "budget"

    iterations: int | None = Field(None, ge=1)
    """Training iterations (default 20 when neither other bound is set)."""
    env_steps: int | None = Field(None, ge=1)
    """Env steps sampled."""
    episodes: int | None = Field(None, ge=1)
    """Episodes finished."""

    @property
    def max_iterations(self) -> int:
        """The iteration bound: as given, else unbounded under another bound, else 20."""
        if self.iterations is not None:
            return self.iterations
        return 10**9 if (self.env_steps or self.episodes) else 20


class TrainingSpec(Spec):
    """What to train and with what: algorithm, hyper-parameters, seed, resources, budget."""

    algorithm: str = "ppo"
    """Registered algorithm name or alias (`ppo`, `dqn`, `qlearning`, `lwmecps-ppo`, ...)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Hyper-parameters for `config.training(...)` (`learning_rate`, `discount_factor`,
    `epsilon`, or RLlib's names)."""
    model: dict[str, Any] = Field(default_factory=dict)
    """`model_config` overrides (e.g. `{"hidden": [256, 256]}`)."""
    seed: int = 0
    """Seed of the env runners and learners."""
    resources: Resources = Field(default_factory=Resources)
    """Envs, CPUs, torch threads."""
    budget: Budget = Field(default_factory=Budget)
    """When to stop."""


def check_run(options: EnvOptions, training: TrainingSpec) -> None:
    """The checks that involve the env and the training together.

    Raises:
        ValueError: more than one env on a real cluster (it is one cluster): more than
            one per runner, or more than one remote env runner.
    """
    n = training.resources.num_envs
    if options.backend == "k8s" and n not in (None, 1):
        raise ValueError(f"resources.num_envs must be 1 with backend='k8s' (one cluster), "
                         f"got {n}")
    runners = training.resources.env_runners
    if options.backend == "k8s" and runners > 1:
        raise ValueError(f"resources.env_runners must be 0 or 1 with backend='k8s' (one "
                         f"cluster), got {runners}")


#: The file in a checkpoint folder that records the env options it was trained with.
ENV_OPTIONS_FILE = "env_options.json"
#: The options that change what a policy observes (serving and evaluation need them).
OBSERVATION_OPTIONS = ("history", "history_windows")


def observation_options(env_config: dict[str, Any]) -> dict[str, Any]:
    """The fields of an `env_config` that shape the observation (JSON-ready): the
    history options, and `obs_format` when it is the size-independent `graph` (whose
    row count, `max_stations`, a policy does not depend on)."""
    out = {k: (list(v) if isinstance(v, tuple) else v)
           for k, v in env_config.items() if k in OBSERVATION_OPTIONS}
    if env_config.get("obs_format") == "graph":
        out["obs_format"] = "graph"
        out["stations"] = trained_stations(env_config)
    return out


def trained_stations(env_config: dict[str, Any]) -> list[int]:
    """The range of station counts `[least, most]` an env config trains on: its
    scenario family's, or its scenario's station count at both ends."""
    from lwmecps_rllib.scenarios import load_scenario
    from lwmecps_rllib.scenarios.family import load_family

    if env_config.get("scenario_family"):
        return list(load_family(env_config["scenario_family"]).n_stations)
    n = len(load_scenario(env_config.get("scenario", "testbed-4bs")).stations)
    return [n, n]


def read_trained_stations(checkpoint: str | Any) -> list[int] | None:
    """The station range recorded in a checkpoint folder (`stations` of
    `env_options.json`: written for size-general models), or None."""
    import json
    from pathlib import Path

    path = Path(checkpoint) / ENV_OPTIONS_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("stations")
    return [int(v) for v in value] if value else None


def read_observation_options(checkpoint: str | Any) -> dict[str, Any]:
    """The observation options recorded in a checkpoint folder ({} when none are)."""
    import json
    from pathlib import Path

    path = Path(checkpoint) / ENV_OPTIONS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items()
            if k in OBSERVATION_OPTIONS or (k == "obs_format" and v == "graph")}
