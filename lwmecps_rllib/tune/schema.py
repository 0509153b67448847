"""The sweep file: its keys as pydantic models, loading, and errors that name the key.

A sweep file (YAML, see `tune_configs/`) names the algorithm, env and scenario, the
search space, the search algorithm and scheduler, the stop criteria and the metric.
Each key's type and range is checked here (types from :mod:`lwmecps_rllib.tune.fields`);
names looked up elsewhere (algorithm, env, scenario, parameters, baselines) and checks
across keys (grid against model-based search, ASHA's `max_t`, one trial at a time on a
cluster) are in :mod:`lwmecps_rllib.tune.validate`. Every failure is a
:class:`SweepError` naming the key by its dotted path, e.g.
`search.num_samples must be an integer >= 1, got 0`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lwmecps_rllib.spec import EnvOptions, TrainingSpec
from lwmecps_rllib.tune.fields import (
    Count,
    Flag,
    FolderName,
    Int,
    Jitter,
    Mode,
    Names,
    NonNegativeInt,
    NonNegativeNumber,
    NumberAboveOne,
    OptionalCount,
    OptionalInt,
    OptionalNonNegativeNumber,
    PositiveNumber,
    ResultKey,
    Scheduler,
    SearchAlgorithm,
    SweepError,
    Text,
    Trace,
    sweep_error,
)
from lwmecps_rllib.tune.validate import check_sweep

#: Stop criteria: sweep-file name -> Tune result key.
STOP_KEYS = {"training_iteration": "training_iteration",
             "env_steps": "num_env_steps_sampled_lifetime",
             "time_s": "time_total_s"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class SearchSettings(_Section):
    """How trials are chosen."""

    algorithm: SearchAlgorithm = "random"
    """`random` (Tune's variant generator; `grid` entries are crossed), `grid` (every
    entry must be `grid` or `choice`), `optuna` or `hyperopt` (Tune's integrations)."""
    num_samples: Count = 4
    """Trials to run (with `grid` entries: repeats of the whole grid)."""
    max_concurrent_trials: OptionalCount = 2
    """Trials running at once (None: as many as the CPUs allow)."""
    seed: Int = 0
    """Seed of the search algorithm."""


class SchedulerSettings(_Section):
    """Early stopping of bad trials."""

    type: Scheduler = "asha"
    """`asha` (asynchronous successive halving) or `fifo` (none)."""
    grace_period: Count = 3
    """ASHA: iterations every trial runs before it may be stopped."""
    reduction_factor: NumberAboveOne = 2.0
    """ASHA: one trial in this many goes on at each rung."""
    max_t: OptionalInt = None
    """ASHA: iterations of the longest trial (default: `stop.training_iteration`)."""


class CheckpointSettings(_Section):
    """Trial checkpoints (what failed trials and `--resume` restart from)."""

    frequency: Count = 2
    """Checkpoint every N iterations (and always at the end)."""
    num_to_keep: Count = 2
    """Checkpoints kept per trial."""


class ResourceSettings(_Section):
    """What each trial uses; Tune reserves it as one placement group per trial (the
    main process, each env runner and each learner a bundle), so trials pack onto the
    cluster's nodes by what they really need."""

    cpu: PositiveNumber = 1
    """CPUs of the trial's main process (where it samples with `env_runners: 0` and
    learns with `learners: 0`)."""
    env_runners: NonNegativeInt = 0
    """Remote env runners per trial, sampling side by side."""
    cpus_per_env_runner: NonNegativeNumber = 1
    """CPUs reserved per env runner."""
    gpus_per_env_runner: NonNegativeNumber = 0
    """GPUs reserved per env runner."""
    env_runner_resources: dict[str, PositiveNumber] = Field(default_factory=dict)
    """Custom Ray resources per env runner (places them on the nodes offering them)."""
    learners: NonNegativeInt = 0
    """Remote learners per trial (torch DDP); 0: learn in the main process."""
    cpus_per_learner: OptionalNonNegativeNumber = None
    """CPUs reserved per learner (null: 1 without GPUs, else 0)."""
    gpus_per_learner: NonNegativeNumber = 0
    """GPUs per learner."""

    def spec_fields(self) -> dict[str, Any]:
        """The :class:`~lwmecps_rllib.spec.Resources` fields these settings give."""
        out = self.model_dump(exclude={"cpu"})
        return {"cpus": float(self.cpu), **out}


class EvaluationSettings(_Section):
    """The best trial's evaluation over a whole day."""

    enabled: Flag = True
    """Evaluate the best checkpoint at all."""
    trace: Trace = "b"
    """Trace to evaluate on (`a` or `b`)."""
    steps: OptionalCount = None
    """Limit to N steps (default: the whole day)."""
    baselines: Names = None
    """Baselines beside it (default: every baseline and the oracle of the env)."""


class WandbSettings(_Section):
    """Weights & Biases logging through Ray Tune's `WandbLoggerCallback`."""

    enabled: Flag = True
    """Log every trial to W&B (offline unless an API key is configured)."""
    project: Text = "lwmecps-rllib"
    """W&B project."""


class SweepConfig(_Section):
    """A sweep: what to train, what to search, when to stop, what to keep.

    The defaults are the default sweep (`python -m lwmecps_rllib.tune` without
    `--config`, also written out in `tune_configs/default.yaml`): PPO's recommended
    preset on LWMECPSEnv3 of `testbed-4bs-peak`, two trials side by side (entropy
    coefficient 0.003 and 0.01), 1,000,000 env steps each. Building one checks it (pydantic's
    `ValidationError`); :func:`sweep_from_dict` and :func:`load_sweep` raise
    :class:`SweepError` instead.
    """

    name: FolderName = "default"
    """Sweep name: the folder under `storage_path`, the W&B group."""
    algorithm: Text = "ppo"
    """Registered algorithm name or alias."""
    env: Text = "LWMECPSEnv3"
    """Env name."""
    scenario: Text = "testbed-4bs-peak"
    """Scenario name or YAML path (trained on trace A)."""
    backend: Literal["sim", "k8s"] = "sim"
    """Env backend: `sim` or `k8s` (a real cluster; one trial at a time)."""
    backend_config: dict[str, Any] = Field(default_factory=dict)
    """Kubernetes backend settings for `backend: k8s` (see `KubernetesConfig`)."""
    seed: Int = 0
    """Seed of every trial's env runners and learner."""
    num_envs: OptionalCount = None
    """Envs per env runner (default of the algorithm builder)."""
    shuffle_stations: Flag | None = None
    """Train on the day with the stations' user columns reordered per episode (`sim`).
    `null` (default): the preset's choice, or off without a preset."""
    load_jitter: Jitter | None = None
    """Train on copies of the day with each station's users scaled by a factor in
    [1 - j, 1 / (1 - j)] (`sim`). `null` (default): the preset's, or 0 without one."""
    history: NonNegativeInt | None = None
    """Observe the users of this many slots before the last, per station. `null`
    (default): the preset's, or 0 without one."""
    history_windows: list[Count] | None = None
    """Observe the mean and max users per station over windows of this many slots.
    `null` (default): the preset's, or none without one."""
    preset: Literal["recommended"] | None = "recommended"
    """Start from the algorithm's recommended settings on the scenario
    (`lwmecps_rllib.presets`): its parameters under `params`, and its training-day
    augmentation and observation where `shuffle_stations`, `load_jitter`, `history`,
    `history_windows` are `null`. Default `recommended`; `null`: `params` alone."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Fixed hyper-parameters of every trial (over the preset's)."""
    model: dict[str, Any] = Field(default_factory=dict)
    """`model_config` overrides (e.g. `hidden: [64, 64]`)."""
    search_space: dict[str, Any] = Field(default_factory=lambda: {
        "entropy_coeff": {"grid": [0.003, 0.01]},
    })
    """Searched hyper-parameters: name -> {distribution: arguments} or a fixed value."""
    search: SearchSettings = Field(
        default_factory=lambda: SearchSettings(algorithm="grid", num_samples=1))
    """Search algorithm and trial count (the default sweep: the grid once; a file's
    `search` mapping starts from the section's own defaults)."""
    scheduler: SchedulerSettings = Field(
        default_factory=lambda: SchedulerSettings(type="fifo"))
    """Trial scheduler (the default sweep: none; a file's `scheduler` mapping starts
    from the section's own defaults, ASHA)."""
    stop: dict[str, PositiveNumber] = Field(default_factory=lambda: {"env_steps": 1000000})
    """Stop criteria (any reached ends a trial): `training_iteration`, `env_steps`, `time_s`."""
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    """Resources per trial: the main process's CPUs, env runners, learners."""
    metric: ResultKey = "env_runners/episode_return_mean"
    """Result key to optimise."""
    mode: Mode = "max"
    """`max` or `min`."""
    checkpoint: CheckpointSettings = Field(
        default_factory=lambda: CheckpointSettings(frequency=20))
    """Trial checkpoints (the default sweep: every 20 iterations)."""
    max_failures: NonNegativeInt = 2
    """Retries of a failed trial from its last checkpoint."""
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    """Evaluation of the best trial."""
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    """W&B logging."""
    # `register` would shadow ABCMeta.register on the model class.
    register_model: Flag = Field(default=True, alias="register")
    """`register` in the file: register the best checkpoint in the model registry."""

    @field_validator("stop")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        allowed = list(STOP_KEYS)
        if not value:
            raise SweepError(f"stop must name at least one of {allowed}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise SweepError(f"unknown key stop.{unknown[0]}; allowed: {allowed}")
        return value

    @model_validator(mode="after")
    def _across_keys(self) -> SweepConfig:
        check_sweep(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what the sweep file holds)."""
        return self.model_dump(by_alias=True)

    def _preset(self) -> Any:
        from lwmecps_rllib.presets import get_preset

        return None if self.preset is None else get_preset(self.preset, self.algorithm,
                                                           self.scenario)

    def env_options(self) -> EnvOptions:
        """The env options of every trial (trace A, the sweep's backend and augmentation)."""
        preset = self._preset()
        fields: dict[str, Any] = {"scenario": self.scenario, "trace": "a",
                                  "backend": self.backend}
        if self.backend == "k8s":
            fields["backend_config"] = self.backend_config
        # A value given in the sweep wins; `null` takes the preset's (or the env default).
        # Kept as data, not as "which keys were set", so that a sweep written out
        # (`sweep.yaml`, a command-line override) trains the same env when read back.
        preset_fields = preset.env_fields() if preset is not None else {}
        for name in ("shuffle_stations", "load_jitter", "history", "history_windows"):
            value = getattr(self, name)
            if value is None:
                value = preset_fields.get(name)
            if value is not None:
                fields[name] = value
        return EnvOptions.parse(fields)

    def training(self) -> TrainingSpec:
        """The training spec every trial starts from (its sampled parameters go on top)."""
        preset = self._preset()
        params = {**(preset.params if preset is not None else {}), **self.params}
        return TrainingSpec.parse({
            "algorithm": self.algorithm, "params": params, "model": self.model,
            "seed": self.seed, "resources": {"num_envs": self.num_envs,
                                            **self.resources.spec_fields()}})

    def evaluation_options(self) -> EnvOptions:
        """The env options of the best trial's evaluation (the simulator, its trace)."""
        return EnvOptions(scenario=self.scenario, trace=self.evaluation.trace)


def sweep_from_dict(data: Any) -> SweepConfig:
    """A checked :class:`SweepConfig` from plain data.

    Args:
        data: The sweep file's contents (a mapping of its keys).

    Returns:
        The sweep, every key checked.

    Raises:
        SweepError: naming the first unknown key or bad value.
    """
    if not isinstance(data, dict):
        raise SweepError(f"a sweep file must be a mapping, got {type(data).__name__}")
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise sweep_error(exc, SweepConfig) from exc


def override_sweep(cfg: SweepConfig, *, name: str | None = None,
                   num_samples: int | None = None, register: bool | None = None,
                   resources: dict[str, Any] | None = None) -> SweepConfig:
    """`cfg` with the given changes (None: unchanged), checked like a file's values.

    Args:
        cfg: The sweep.
        name: Its `name`.
        num_samples: Its `search.num_samples`.
        register: Its `register`.
        resources: Fields over its `resources:` (each trial's).

    Returns:
        `cfg` itself when nothing changes, else the changed sweep.

    Raises:
        SweepError: naming the bad key.
    """
    data = cfg.to_dict()
    if name is not None:
        data["name"] = name
    if num_samples is not None:
        data["search"]["num_samples"] = num_samples
    if register is not None:
        data["register"] = register
    data["resources"].update(resources or {})
    return cfg if data == cfg.to_dict() else sweep_from_dict(data)


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and check a sweep file.

    Args:
        path: The YAML file.

    Returns:
        The sweep, every key checked.

    Raises:
        SweepError: for a missing file, bad YAML or any bad key (named, after the file).
    """
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"sweep file {str(p)!r} not found")
    with p.open() as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise SweepError(f"{p}: not valid YAML: {exc}") from exc
    try:
        return sweep_from_dict(data or {})
    except SweepError as exc:
        raise SweepError(f"{p}: {exc}") from exc
