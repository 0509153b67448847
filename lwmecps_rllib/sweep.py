"""Hyper-parameter sweeps with Ray Tune: the sweep file, the Tuner, and what is kept.

A sweep file (YAML, see `tune_configs/`) names the algorithm, env and scenario, the
search space, the search algorithm and scheduler, the stop criteria and the metric.
:func:`load_sweep` checks it (unknown keys and bad ranges are errors naming the key),
:func:`run_sweep` runs it with Ray Tune, evaluates the best trial's checkpoint on
trace B beside the baselines and the oracle, registers it in the model registry, and
leaves `summary.json` in the sweep folder next to Tune's own files.

The search space uses Tune's distributions by name::

    search_space:
      learning_rate: {loguniform: [1.0e-4, 3.0e-3]}
      discount_factor: {uniform: [0.9, 0.99]}
      epsilon: {choice: [0.1, 0.2, 0.3]}
      num_epochs: {grid: [4, 8]}
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lwmecps_rllib import atomic
from lwmecps_rllib.envs import ENV_NAMES
from lwmecps_rllib.spec import EnvOptions, TrainingSpec, check_run

#: Search-space distributions: name -> number of arguments (None: a list of values).
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "quniform": 3, "qloguniform": 3,
                 "randint": 2, "choice": None, "grid": None}
SEARCH_ALGORITHMS = ("random", "grid", "optuna", "hyperopt")
SCHEDULERS = ("fifo", "asha")
#: Stop criteria: sweep-file name -> Tune result key.
STOP_KEYS = {"training_iteration": "training_iteration",
             "env_steps": "num_env_steps_sampled_lifetime",
             "time_s": "time_total_s"}


class SweepError(ValueError):
    """A sweep file with an unknown key or a bad value; the message names the key."""


class SweepInterruptedError(SweepError):
    """The sweep stopped before every trial finished (Ctrl-C, driver stopped); resumable."""


@dataclass
class SearchSettings:
    """How trials are chosen."""

    algorithm: str = "random"
    """`random` (Tune's variant generator; `grid` entries are crossed), `grid` (every
    entry must be `grid` or `choice`), `optuna` or `hyperopt` (Tune's integrations)."""
    num_samples: int = 4
    """Trials to run (with `grid` entries: repeats of the whole grid)."""
    max_concurrent_trials: int | None = 2
    """Trials running at once (None: as many as the CPUs allow)."""
    seed: int = 0
    """Seed of the search algorithm."""


@dataclass
class SchedulerSettings:
    """Early stopping of bad trials."""

    type: str = "asha"
    """`asha` (asynchronous successive halving) or `fifo` (none)."""
    grace_period: int = 3
    """ASHA: iterations every trial runs before it may be stopped."""
    reduction_factor: float = 2.0
    """ASHA: one trial in this many goes on at each rung."""
    max_t: int | None = None
    """ASHA: iterations of the longest trial (default: `stop.training_iteration`)."""


@dataclass
class CheckpointSettings:
    """Trial checkpoints (what failed trials and `--resume` restart from)."""

    frequency: int = 2
    """Checkpoint every N iterations (and always at the end)."""
    num_to_keep: int = 2
    """Checkpoints kept per trial."""


@dataclass
class EvaluationSettings:
    """The best trial's evaluation over a whole day."""

    enabled: bool = True
    """Evaluate the best checkpoint at all."""
    trace: str = "b"
    """Trace to evaluate on (`a` or `b`)."""
    steps: int | None = None
    """Limit to N steps (default: the whole day)."""
    baselines: list[str] | None = None
    """Baselines beside it (default: every baseline and the oracle of the env)."""


@dataclass
class WandbSettings:
    """Weights & Biases logging through Ray Tune's `WandbLoggerCallback`."""

    enabled: bool = True
    """Log every trial to W&B (offline unless an API key is configured)."""
    project: str = "lwmecps-rllib"
    """W&B project."""


@dataclass
class SweepConfig:
    """A sweep: what to train, what to search, when to stop, what to keep.

    The defaults are the default sweep (`python -m lwmecps_rllib.tune` without
    `--config`, also written out in `tune_configs/default.yaml`): PPO on LWMECPSEnv3 of
    `testbed-4bs`, four trials over learning rate, discount and clip range, ASHA, 12
    iterations of 2048 env steps each.
    """

    name: str = "default"
    """Sweep name: the folder under `storage_path`, the W&B group."""
    algorithm: str = "ppo"
    """Registered algorithm name or alias."""
    env: str = "LWMECPSEnv3"
    """Env name."""
    scenario: str = "testbed-4bs"
    """Scenario name or YAML path (trained on trace A)."""
    backend: str = "sim"
    """Env backend: `sim` or `k8s` (a real cluster; one trial at a time)."""
    backend_config: dict[str, Any] = field(default_factory=dict)
    """Kubernetes backend settings for `backend: k8s` (see `KubernetesConfig`)."""
    seed: int = 0
    """Seed of every trial's env runners and learner."""
    num_envs: int | None = None
    """Envs per env runner (default of the algorithm builder)."""
    shuffle_stations: bool = False
    """Train on the day with the stations' user columns reordered per episode (`sim`)."""
    load_jitter: float = 0.0
    """Train on copies of the day with each station's users scaled by a factor in
    [1 - j, 1 / (1 - j)] (`sim`)."""
    params: dict[str, Any] = field(default_factory=lambda: {"discount_factor": 0.9})
    """Fixed hyper-parameters of every trial."""
    model: dict[str, Any] = field(default_factory=dict)
    """`model_config` overrides (e.g. `hidden: [64, 64]`)."""
    search_space: dict[str, Any] = field(default_factory=lambda: {
        "learning_rate": {"loguniform": [1.0e-4, 1.0e-3]},
        "discount_factor": {"choice": [0.9, 0.95]},
        "epsilon": {"uniform": [0.1, 0.3]},
    })
    """Searched hyper-parameters: name -> {distribution: arguments} or a fixed value."""
    search: SearchSettings = field(default_factory=SearchSettings)
    """Search algorithm and trial count."""
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    """Trial scheduler."""
    stop: dict[str, float] = field(default_factory=lambda: {"training_iteration": 12})
    """Stop criteria (any reached ends a trial): `training_iteration`, `env_steps`, `time_s`."""
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1})
    """Resources per trial: `cpu`."""
    metric: str = "env_runners/episode_return_mean"
    """Result key to optimise."""
    mode: str = "max"
    """`max` or `min`."""
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    """Trial checkpoints."""
    max_failures: int = 2
    """Retries of a failed trial from its last checkpoint."""
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    """Evaluation of the best trial."""
    wandb: WandbSettings = field(default_factory=WandbSettings)
    """W&B logging."""
    register: bool = True
    """Register the best checkpoint in the model registry."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what the sweep file holds)."""
        return dataclasses.asdict(self)


_SECTIONS = {"search": SearchSettings, "scheduler": SchedulerSettings,
             "checkpoint": CheckpointSettings, "evaluation": EvaluationSettings,
             "wandb": WandbSettings}


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _section(name: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise SweepError(f"{name} must be a mapping of {_fields(cls)}, got {data!r}")
    unknown = sorted(set(data) - set(_fields(cls)))
    if unknown:
        raise SweepError(f"unknown key {name}.{unknown[0]}; allowed: {_fields(cls)}")
    return cls(**data)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def sweep_from_dict(data: dict[str, Any]) -> SweepConfig:
    """A checked :class:`SweepConfig` from plain data.

    Raises:
        SweepError: naming the first unknown key or bad value.
    """
    if not isinstance(data, dict):
        raise SweepError(f"a sweep file must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_fields(SweepConfig)))
    if unknown:
        raise SweepError(f"unknown key {unknown[0]!r}; allowed: {_fields(SweepConfig)}")
    kwargs = dict(data)
    for name, cls in _SECTIONS.items():
        if name in kwargs:
            kwargs[name] = _section(name, cls, kwargs[name])
    cfg = SweepConfig(**kwargs)
    validate_sweep(cfg)
    return cfg


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and check a sweep file.

    Raises:
        SweepError: for a missing file or any bad key (named).
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


def training_parameters(config: Any) -> list[str]:
    """Names `config.training(...)` accepts (the reference's names and RLlib's)."""
    names: set[str] = set()
    for klass in type(config).__mro__:
        fn = klass.__dict__.get("training")
        if fn is None:
            continue
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.KEYWORD_ONLY:
                names.add(p.name)
    return sorted(names)


def _check_value(config_cls: type, key: str, name: str, value: Any) -> None:
    try:
        config_cls.get_default_config().training(**{name: value})
    except (ValueError, TypeError) as exc:
        raise SweepError(f"{key}: {exc}") from exc


def validate_sweep(cfg: SweepConfig) -> None:
    """Check every field; raise :class:`SweepError` naming the first bad one."""
    from lwmecps_rllib.algorithms import get_algorithm_class
    from lwmecps_rllib.scenarios import ScenarioError, load_scenario

    if not isinstance(cfg.name, str) or not cfg.name or "/" in cfg.name:
        raise SweepError(f"name must be a non-empty folder name, got {cfg.name!r}")
    try:
        algo_cls = get_algorithm_class(cfg.algorithm)
    except ValueError as exc:
        raise SweepError(f"algorithm: {exc}") from exc
    if cfg.env not in ENV_NAMES:
        raise SweepError(f"env must be one of {list(ENV_NAMES)}, got {cfg.env!r}")
    try:
        load_scenario(cfg.scenario)
    except (ScenarioError, FileNotFoundError, ValueError) as exc:
        raise SweepError(f"scenario: {exc}") from exc
    if cfg.backend not in ("sim", "k8s"):
        raise SweepError(f"backend must be one of ['sim', 'k8s'], got {cfg.backend!r}")
    if cfg.backend == "k8s":
        from lwmecps_rllib.backends.kubernetes import KubernetesConfig

        try:
            KubernetesConfig.from_dict(cfg.backend_config)
        except ValueError as exc:
            raise SweepError(str(exc)) from exc
        if cfg.search.max_concurrent_trials != 1:
            raise SweepError("search.max_concurrent_trials must be 1 with backend 'k8s' "
                             f"(one cluster), got {cfg.search.max_concurrent_trials!r}")
    elif cfg.backend_config:
        raise SweepError("backend_config is only used with backend 'k8s'")
    if not _is_int(cfg.seed):
        raise SweepError(f"seed must be an integer, got {cfg.seed!r}")
    if cfg.num_envs is not None and not (_is_int(cfg.num_envs) and cfg.num_envs >= 1):
        raise SweepError(f"num_envs must be an integer >= 1, got {cfg.num_envs!r}")
    try:
        check_run(env_options(cfg), training_spec(cfg).replace(params={}))
    except ValueError as exc:
        raise SweepError(str(exc)) from exc
    if not isinstance(cfg.params, dict) or not isinstance(cfg.model, dict):
        raise SweepError("params and model must be mappings")
    allowed = training_parameters(algo_cls.get_default_config())
    for name, value in cfg.params.items():
        if name not in allowed:
            raise SweepError(f"unknown parameter params.{name} for {cfg.algorithm}; "
                             f"allowed: {allowed}")
        _check_value(algo_cls, f"params.{name}", name, value)
    if not isinstance(cfg.search_space, dict) or not cfg.search_space:
        raise SweepError("search_space must be a non-empty mapping of parameter -> "
                         f"distribution ({list(DISTRIBUTIONS)})")
    for name, spec in cfg.search_space.items():
        key = f"search_space.{name}"
        if name not in allowed:
            raise SweepError(f"unknown parameter {key} for {cfg.algorithm}; allowed: {allowed}")
        for value in _extremes(key, spec):
            _check_value(algo_cls, key, name, value)
    _validate_search(cfg)
    _validate_run(cfg)


def _extremes(key: str, spec: Any) -> list[Any]:
    """The values a distribution can reach at its ends (to check against the parameter)."""
    if not isinstance(spec, dict):
        return [spec]
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise SweepError(f"{key} must be a value or one of {{{', '.join(DISTRIBUTIONS)}}}: "
                         f"args, got {spec!r}")
    kind, args = next(iter(spec.items()))
    n = DISTRIBUTIONS[kind]
    if n is None:
        if not isinstance(args, list) or not args:
            raise SweepError(f"{key}.{kind} must be a non-empty list of values, got {args!r}")
        return list(args)
    if not isinstance(args, list) or len(args) != n or not all(_is_number(a) for a in args):
        names = "[low, high, q]" if n == 3 else "[low, high]"
        raise SweepError(f"{key}.{kind} must be {names} (numbers), got {args!r}")
    low, high = args[0], args[1]
    if not low < high:
        raise SweepError(f"{key}.{kind}: low must be < high, got {low} >= {high}")
    if "log" in kind and low <= 0:
        raise SweepError(f"{key}.{kind}: low must be > 0 on a log scale, got {low}")
    if kind == "randint":
        if not (_is_int(low) and _is_int(high)):
            raise SweepError(f"{key}.randint bounds must be integers, got {args!r}")
        return [low, high - 1]
    if n == 3 and args[2] <= 0:
        raise SweepError(f"{key}.{kind}: q must be > 0, got {args[2]}")
    return [low, high]


def _validate_search(cfg: SweepConfig) -> None:
    s = cfg.search
    if s.algorithm not in SEARCH_ALGORITHMS:
        raise SweepError(f"search.algorithm must be one of {list(SEARCH_ALGORITHMS)}, "
                         f"got {s.algorithm!r}")
    if not (_is_int(s.num_samples) and s.num_samples >= 1):
        raise SweepError(f"search.num_samples must be an integer >= 1, got {s.num_samples!r}")
    if s.max_concurrent_trials is not None and not (
            _is_int(s.max_concurrent_trials) and s.max_concurrent_trials >= 1):
        raise SweepError("search.max_concurrent_trials must be an integer >= 1 or null, "
                         f"got {s.max_concurrent_trials!r}")
    kinds = {name: (next(iter(spec)) if isinstance(spec, dict) else "value")
             for name, spec in cfg.search_space.items()}
    if s.algorithm == "grid":
        bad = [n for n, k in kinds.items() if k not in ("grid", "choice", "value")]
        if bad:
            raise SweepError(f"search.algorithm 'grid' needs grid or choice entries; "
                             f"search_space.{bad[0]} is {kinds[bad[0]]}")
    if s.algorithm in ("optuna", "hyperopt"):
        bad = [n for n, k in kinds.items() if k == "grid"]
        if bad:
            raise SweepError(f"search.algorithm {s.algorithm!r} cannot search a grid; "
                             f"use choice for search_space.{bad[0]}")
        module = "optuna" if s.algorithm == "optuna" else "hyperopt"
        try:
            __import__(module)
        except ImportError as exc:
            raise SweepError(f"search.algorithm {s.algorithm!r} needs the {module} package "
                             f"(pip install {module})") from exc


def _validate_run(cfg: SweepConfig) -> None:
    sch = cfg.scheduler
    if sch.type not in SCHEDULERS:
        raise SweepError(f"scheduler.type must be one of {list(SCHEDULERS)}, got {sch.type!r}")
    if not (_is_int(sch.grace_period) and sch.grace_period >= 1):
        raise SweepError(f"scheduler.grace_period must be an integer >= 1, "
                         f"got {sch.grace_period!r}")
    if not (_is_number(sch.reduction_factor) and sch.reduction_factor > 1):
        raise SweepError(f"scheduler.reduction_factor must be > 1, got {sch.reduction_factor!r}")
    if not isinstance(cfg.stop, dict) or not cfg.stop:
        raise SweepError(f"stop must name at least one of {list(STOP_KEYS)}")
    for key, value in cfg.stop.items():
        if key not in STOP_KEYS:
            raise SweepError(f"unknown key stop.{key}; allowed: {list(STOP_KEYS)}")
        if not (_is_number(value) and value > 0):
            raise SweepError(f"stop.{key} must be a number > 0, got {value!r}")
    if sch.type == "asha":
        max_t = sch.max_t if sch.max_t is not None else cfg.stop.get("training_iteration")
        if max_t is None:
            raise SweepError("scheduler.max_t (or stop.training_iteration) is needed by asha")
        if not (_is_int(max_t) and max_t >= sch.grace_period):
            raise SweepError(f"scheduler.max_t must be an integer >= grace_period, got {max_t!r}")
    unknown = sorted(set(cfg.resources) - {"cpu"})
    if unknown:
        raise SweepError(f"unknown key resources.{unknown[0]}; allowed: ['cpu']")
    cpu = cfg.resources.get("cpu", 1)
    if not (_is_number(cpu) and cpu > 0):
        raise SweepError(f"resources.cpu must be a number > 0, got {cpu!r}")
    if cfg.mode not in ("max", "min"):
        raise SweepError(f"mode must be 'max' or 'min', got {cfg.mode!r}")
    if not isinstance(cfg.metric, str) or not cfg.metric:
        raise SweepError(f"metric must be a result key, got {cfg.metric!r}")
    ck = cfg.checkpoint
    for key in ("frequency", "num_to_keep"):
        v = getattr(ck, key)
        if not (_is_int(v) and v >= 1):
            raise SweepError(f"checkpoint.{key} must be an integer >= 1, got {v!r}")
    if not (_is_int(cfg.max_failures) and cfg.max_failures >= 0):
        raise SweepError(f"max_failures must be an integer >= 0, got {cfg.max_failures!r}")
    ev = cfg.evaluation
    if ev.trace not in ("a", "b"):
        raise SweepError(f"evaluation.trace must be 'a' or 'b', got {ev.trace!r}")
    if ev.steps is not None and not (_is_int(ev.steps) and ev.steps >= 1):
        raise SweepError(f"evaluation.steps must be an integer >= 1 or null, got {ev.steps!r}")
    if ev.baselines is not None:
        from lwmecps_rllib.baselines import policies_for

        known = policies_for(cfg.env)
        for b in ev.baselines:
            if b not in known:
                raise SweepError(f"evaluation.baselines: {b!r} is not one of {known}")


# --------------------------------------------------------------------------- Tune objects


def _grid_values(cfg: SweepConfig, spec: Any) -> list[Any] | None:
    """The values of a search-space entry Tune crosses as a grid (`grid`, and `choice`
    under `search.algorithm: grid`), else None. Optuna and HyperOpt sweeps have none:
    validation refuses `grid` there."""
    if not isinstance(spec, dict):
        return None
    kind, args = next(iter(spec.items()))
    if kind == "grid" or (kind == "choice" and cfg.search.algorithm == "grid"):
        return list(args)
    return None


def search_space(cfg: SweepConfig) -> dict[str, Any]:
    """The Tune param space: every searched name -> a Tune domain (or a fixed value)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, spec in cfg.search_space.items():
        if not isinstance(spec, dict):
            out[name] = spec
            continue
        kind, args = next(iter(spec.items()))
        if _grid_values(cfg, spec) is not None:
            out[name] = tune.grid_search(list(args))
        elif kind == "choice":
            out[name] = tune.choice(list(args))
        else:
            out[name] = getattr(tune, kind)(*args)
    return out


def base_config(cfg: SweepConfig) -> Any:
    """The algorithm config every trial starts from (fixed params, env, seed, resources)."""
    from lwmecps_rllib.algorithms import build_config

    return build_config(training_spec(cfg), cfg.env, env_options(cfg))


def env_options(cfg: SweepConfig) -> EnvOptions:
    """The env options of the sweep's trials (trace A, with the sweep's backend)."""
    return EnvOptions.parse({
        "scenario": cfg.scenario, "trace": "a", "backend": cfg.backend,
        "backend_config": (cfg.backend_config or None) if cfg.backend == "k8s" else None,
        "shuffle_stations": cfg.shuffle_stations, "load_jitter": cfg.load_jitter})


def training_spec(cfg: SweepConfig) -> TrainingSpec:
    """The training spec every trial starts from (its searched parameters come on top)."""
    return TrainingSpec.parse({
        "algorithm": cfg.algorithm, "params": cfg.params, "model": cfg.model,
        "seed": cfg.seed, "resources": {"num_envs": cfg.num_envs,
                                        "cpus": float(cfg.resources.get("cpu", 1))}})


def make_trainable(cfg: SweepConfig) -> type:
    """The algorithm class with the sweep's base config as its default.

    Tune then only carries the searched parameters (shown in its tables and in W&B),
    and every trial builds `base config + sampled parameters`.
    """
    config = base_config(cfg)
    algo_cls = config.algo_class

    def get_default_config(cls: type) -> Any:
        return config.copy(copy_frozen=False)

    return type(algo_cls.__name__, (_SweepTrial, algo_cls),
                {"get_default_config": classmethod(get_default_config),
                 "__doc__": algo_cls.__doc__})


class _SweepTrial:
    """Mixin: results carry the trial's sampled parameters as `config`, not the whole
    algorithm config (which stays in the checkpoints)."""

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        self._sampled = ({k: v for k, v in config.items() if not k.startswith("__")}
                         if isinstance(config, dict) else {})
        super().__init__(config=config, **kwargs)

    def get_auto_filled_metrics(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super().get_auto_filled_metrics(*args, **kwargs)
        if "config" in out:
            out["config"] = dict(self._sampled)
        return out


def _searcher(cfg: SweepConfig) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = cfg.search
    if s.algorithm in ("random", "grid"):
        return BasicVariantGenerator(random_state=s.seed,
                                     max_concurrent=s.max_concurrent_trials or 0)
    if s.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=s.seed))
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(random_state_seed=s.seed)


def _scheduler(cfg: SweepConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sch = cfg.scheduler
    if sch.type == "fifo":
        return FIFOScheduler()
    max_t = sch.max_t if sch.max_t is not None else int(cfg.stop["training_iteration"])
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                         grace_period=sch.grace_period, reduction_factor=sch.reduction_factor)


def wandb_mode() -> str:
    """`online` when a W&B API key is configured (`WANDB_API_KEY` or a netrc login), else
    `offline` (`WANDB_MODE` wins when set)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if "api.wandb.ai" in netrc.read_text():
            return "online"
    except OSError:
        pass
    return "offline"


def _callbacks(cfg: SweepConfig, folder: Path) -> list[Any]:
    if not cfg.wandb.enabled:
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    mode = wandb_mode()
    # Ray's callback checks the key in this process unless the mode says offline.
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    folder.mkdir(parents=True, exist_ok=True)
    return [WandbLoggerCallback(project=cfg.wandb.project, group=cfg.name, mode=mode,
                                dir=str(folder), excludes=["config"])]


def experiment_folder(cfg: SweepConfig, storage_path: str | Path) -> Path:
    """Where Tune keeps the sweep: `storage_path/name`."""
    return Path(storage_path).resolve() / cfg.name


def build_tuner(cfg: SweepConfig, storage_path: str | Path, resume: bool = False) -> Any:
    """A `ray.tune.Tuner` for the sweep, or the restored one (`resume=True`)."""
    from ray import tune

    folder = experiment_folder(cfg, storage_path)
    trainable = make_trainable(cfg)
    if resume:
        if not tune.Tuner.can_restore(str(folder)):
            raise SweepError(f"nothing to resume in {str(folder)!r} (no Tune experiment there)")
        return tune.Tuner.restore(str(folder), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)
    stop = {STOP_KEYS[k]: v for k, v in cfg.stop.items()}
    run_config = tune.RunConfig(
        name=cfg.name, storage_path=str(Path(storage_path).resolve()), stop=stop,
        callbacks=_callbacks(cfg, folder), verbose=1,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=cfg.checkpoint.num_to_keep,
            checkpoint_frequency=cfg.checkpoint.frequency, checkpoint_at_end=True))
    tune_config = tune.TuneConfig(
        metric=cfg.metric, mode=cfg.mode, num_samples=cfg.search.num_samples,
        # Tune's variant generator takes its limit itself (see _searcher).
        max_concurrent_trials=(None if cfg.search.algorithm in ("random", "grid")
                               else cfg.search.max_concurrent_trials),
        search_alg=_searcher(cfg), scheduler=_scheduler(cfg))
    return tune.Tuner(trainable, param_space=search_space(cfg), tune_config=tune_config,
                      run_config=run_config)


# --------------------------------------------------------------------------- the run


def _get(metrics: dict[str, Any], key: str) -> Any:
    """`a/b/c` from nested or flat result dicts."""
    if key in metrics:
        return metrics[key]
    cur: Any = metrics
    for part in key.split("/"):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def trial_rows(results: Any, cfg: SweepConfig) -> list[dict[str, Any]]:
    """One row per trial: searched parameters, metric, iterations, status."""
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({
            "trial_id": m.get("trial_id"),
            "path": r.path,
            "config": {k: r.config.get(k) for k in cfg.search_space},
            "metric": _get(m, cfg.metric),
            "iterations": m.get("training_iteration"),
            "env_steps": m.get("num_env_steps_sampled_lifetime"),
            "error": None if r.error is None else str(r.error).splitlines()[0],
        })
    return rows


def expected_trials(cfg: SweepConfig) -> int:
    """Trials the sweep makes: `num_samples`, times the grid sizes for Tune's generator."""
    n = cfg.search.num_samples
    for spec in cfg.search_space.values():
        values = _grid_values(cfg, spec)
        if values is not None:
            n *= len(values)
    return n


def _unfinished(results: Any, cfg: SweepConfig) -> int:
    trials = results._experiment_analysis.trials
    running = sum(t.status not in ("TERMINATED", "ERROR") for t in trials)
    return running + max(0, expected_trials(cfg) - len(trials))


def run_sweep(cfg: SweepConfig, storage_path: str | Path = "runs/tune", resume: bool = False,
              address: str | None = None, registry_path: str | Path | None = None,
              plot: str | Path | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep, evaluate and register its best checkpoint.

    Args:
        cfg: The sweep.
        storage_path: Folder of sweeps; this one goes to `storage_path/cfg.name`.
        resume: Continue an interrupted sweep in that folder (finished trials are kept,
            unfinished and errored ones continue from their last checkpoint).
        address: Ray address (`auto`, `ray://host:10001`); default a local Ray.
        registry_path: Model registry file (default `$LWMECPS_REGISTRY` or
            `runs/models/registry.sqlite`).
        plot: Write the trials' learning curves to this PNG.

    Returns:
        The summary also written to `summary.json` in the sweep folder.

    Raises:
        SweepError: when the folder already holds a sweep and `resume` is False, when
            there is nothing to resume, or when every trial failed.
    """
    from lwmecps_rllib.train import ensure_ray

    folder = experiment_folder(cfg, storage_path)
    sweep_file = folder / "sweep.yaml"
    if resume:
        if not sweep_file.exists():
            raise SweepError(f"nothing to resume in {str(folder)!r} (no sweep.yaml)")
        cfg = load_sweep(sweep_file)
    elif folder.exists() and any(folder.iterdir()):
        raise SweepError(f"sweep folder {str(folder)!r} exists; pass --resume to continue it "
                         f"or choose another name/storage path")
    ensure_ray(address)
    tuner = build_tuner(cfg, storage_path, resume)
    if not resume:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(sweep_file, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    results = tuner.fit()
    unfinished = _unfinished(results, cfg)
    if unfinished:
        raise SweepInterruptedError(f"sweep {cfg.name!r} stopped with {unfinished} trial(s) "
                               f"unfinished; continue it with --resume (folder {folder})")
    rows = trial_rows(results, cfg)
    ok = [r for r in results if r.error is None and r.checkpoint is not None]
    if not ok:
        raise SweepError(f"every trial of sweep {cfg.name!r} failed; see {folder}")
    best = results.get_best_result(cfg.metric, cfg.mode, scope="last", filter_nan_and_inf=True)
    summary: dict[str, Any] = {
        "name": cfg.name, "folder": str(folder), "algorithm": cfg.algorithm, "env": cfg.env,
        "scenario": cfg.scenario, "metric": cfg.metric, "mode": cfg.mode,
        "num_trials": len(rows), "num_errors": sum(r["error"] is not None for r in rows),
        "trials": rows,
        "best": {"config": {k: best.config.get(k) for k in cfg.search_space},
                 "metric": _get(best.metrics, cfg.metric),
                 "checkpoint": best.checkpoint.path if best.checkpoint else None,
                 "path": best.path,
                 "train": {k: v for k, v in (best.metrics.get("env") or {}).items()}},
    }
    if plot:
        plot_trials(folder, cfg.metric, Path(plot))
        summary["plot"] = str(plot)
    if cfg.evaluation.enabled:
        summary["evaluation"] = evaluate_best(cfg, best.checkpoint.path)
    if cfg.register:
        summary["model_id"] = register_best(cfg, best.checkpoint.path, summary, registry_path)
    atomic.write_json(folder / "summary.json", summary)
    return summary


def evaluate_best(cfg: SweepConfig, checkpoint: str) -> dict[str, Any]:
    """The checkpoint's greedy policy over the evaluation trace, beside the baselines."""
    from lwmecps_rllib.train import algorithm_label, evaluate_checkpoint

    day = EnvOptions(scenario=cfg.scenario, trace=cfg.evaluation.trace)  # on the simulator
    result = evaluate_checkpoint(checkpoint, cfg.env, day,
                                 baselines=cfg.evaluation.baselines, seed=cfg.seed,
                                 steps=cfg.evaluation.steps, name=algorithm_label(cfg.algorithm))
    for run in result["results"].values():
        run.pop("series", None)
    return result


def register_best(cfg: SweepConfig, checkpoint: str, summary: dict[str, Any],
                  registry_path: str | Path | None) -> str:
    """Register the best checkpoint as a `candidate`; returns the model id."""
    from lwmecps_rllib.algorithms import canonical_name
    from lwmecps_rllib.model_registry import ModelRegistry
    from lwmecps_rllib.train import algorithm_label

    metrics: dict[str, Any] = {cfg.metric: summary["best"]["metric"]}
    metrics.update({f"env/{k}": v for k, v in summary["best"]["train"].items()})
    ev = summary.get("evaluation")
    if ev:
        own = ev["results"][algorithm_label(cfg.algorithm)]
        metrics.update({f"eval/{k}": v for k, v in own.items() if isinstance(v, (int, float))})
        metrics["eval/total_reward"] = own["mean_reward"]
        metrics["eval/trace"] = ev.get("trace", cfg.evaluation.trace)
    config = {**cfg.params, **summary["best"]["config"], "seed": cfg.seed, "sweep": cfg.name}
    record = ModelRegistry(registry_path).register(
        checkpoint, algorithm=canonical_name(cfg.algorithm), env=cfg.env,
        scenario=cfg.scenario, config=config, metrics=metrics)
    return record.id


def plot_trials(folder: Path, metric: str, path: Path) -> None:
    """Learning curves of every trial (metric against env steps) from `progress.csv`."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for progress in sorted(folder.glob("*/progress.csv")):
        with progress.open() as fh:
            rows = list(csv.DictReader(fh))
        xs, ys = [], []
        for row in rows:
            y = row.get(metric)
            x = row.get("num_env_steps_sampled_lifetime") or row.get("training_iteration")
            if y not in (None, "") and x not in (None, ""):
                xs.append(float(x))
                ys.append(float(y))
        if xs:
            ax.plot(xs, ys, label=progress.parent.name.split("_")[2][:12], lw=1.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.set_title(folder.name)
    if ax.lines:
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_summary(summary: dict[str, Any]) -> str:
    """The trials, the best config and (when evaluated) the day-long comparison."""
    from lwmecps_rllib.evaluate import format_table

    lines = [f"sweep {summary['name']}: {summary['num_trials']} trials "
             f"({summary['num_errors']} failed), metric {summary['metric']} ({summary['mode']})"]
    for r in sorted(summary["trials"], key=lambda r: -(r["metric"] or -math.inf)
                    if summary["mode"] == "max" else (r["metric"] or math.inf)):
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["config"].items())
        metric = "nan" if r["metric"] is None else f"{r['metric']:.3f}"
        lines.append(f"  {metric:>10}  iters {r['iterations']}  {params}"
                     + (f"  ERROR {r['error']}" if r["error"] else ""))
    best = summary["best"]
    lines.append(f"best: {json.dumps(best['config'])}  {summary['metric']}={best['metric']:.3f}")
    lines.append(f"checkpoint: {best['checkpoint']}")
    if "evaluation" in summary:
        lines.append(format_table(summary["evaluation"]))
    if "model_id" in summary:
        lines.append(f"registered: {summary['model_id']} (candidate)")
    return "\n".join(lines)
