"""Checks of a sweep across its keys, and of the names it looks up elsewhere.

:class:`~lwmecps_rllib.tune.SweepConfig` runs :func:`check_sweep` once every key has
passed its own type and range check: the algorithm, env, scenario and baselines exist,
`params` and `search_space` name parameters the algorithm's `training()` takes (with
values it accepts), grid against model-based search, ASHA's `max_t`, and one trial at a
time on a Kubernetes cluster. Each check raises :class:`~lwmecps_rllib.tune.SweepError`
naming the key (or the `ValueError` of a shared check, the Kubernetes backend's or the
augmentation's, whose message names the key already).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from lwmecps_rllib.envs.names import ENV_NAMES
from lwmecps_rllib.spec import check_run
from lwmecps_rllib.tune.fields import SweepError
from lwmecps_rllib.tune.space import DISTRIBUTIONS, extremes, spec_kind

if TYPE_CHECKING:
    from lwmecps_rllib.tune.schema import SweepConfig


def check_sweep(cfg: SweepConfig) -> None:
    """Every check across keys, in the order of the file.

    Raises:
        SweepError: naming the first bad key.
        ValueError: from the backend or augmentation check (naming the key).
    """
    from lwmecps_rllib.algorithms.catalog import check_learners

    algo_cls = check_names(cfg)
    check_backend(cfg)
    training = cfg.training()
    check_run(cfg.env_options(), training)
    check_learners(training)
    check_parameters(cfg, algo_cls)
    check_search(cfg)
    check_scheduler(cfg)
    check_baselines(cfg)


def check_names(cfg: SweepConfig) -> type:
    """The algorithm, env and scenario exist; returns the algorithm class."""
    from lwmecps_rllib.algorithms import get_algorithm_class
    from lwmecps_rllib.scenarios import ScenarioError, load_scenario

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
    return algo_cls


def check_backend(cfg: SweepConfig) -> None:
    """`backend_config` only with `k8s`, valid there, and one trial at a time (one cluster)."""
    if cfg.backend != "k8s":
        if cfg.backend_config:
            raise SweepError("backend_config is only used with backend 'k8s'")
        return
    from lwmecps_rllib.backends.config import KubernetesConfig

    KubernetesConfig.from_dict(cfg.backend_config)
    if cfg.search.max_concurrent_trials != 1:
        raise SweepError("search.max_concurrent_trials must be 1 with backend 'k8s' "
                         f"(one cluster), got {cfg.search.max_concurrent_trials!r}")


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


def check_parameters(cfg: SweepConfig, algo_cls: type) -> None:
    """`params` and `search_space` name parameters of the algorithm's `training()`, and
    it accepts every fixed value and both ends of every range."""
    allowed = training_parameters(algo_cls.get_default_config())
    for name, value in cfg.params.items():
        if name not in allowed:
            raise SweepError(f"unknown parameter params.{name} for {cfg.algorithm}; "
                             f"allowed: {allowed}")
        _check_value(algo_cls, f"params.{name}", name, value)
    if not cfg.search_space:
        raise SweepError("search_space must be a non-empty mapping of parameter -> "
                         f"distribution ({list(DISTRIBUTIONS)})")
    for name, spec in cfg.search_space.items():
        key = f"search_space.{name}"
        if name not in allowed:
            raise SweepError(f"unknown parameter {key} for {cfg.algorithm}; allowed: {allowed}")
        for value in extremes(key, spec):
            _check_value(algo_cls, key, name, value)


def _check_value(algo_cls: type, key: str, name: str, value: Any) -> None:
    try:
        algo_cls.get_default_config().training(**{name: value})
    except (ValueError, TypeError) as exc:
        raise SweepError(f"{key}: {exc}") from exc


def check_search(cfg: SweepConfig) -> None:
    """`grid` search needs grid or choice entries; Optuna and HyperOpt cannot search a
    grid and need their package."""
    algorithm = cfg.search.algorithm
    kinds = {name: spec_kind(spec) for name, spec in cfg.search_space.items()}
    if algorithm == "grid":
        bad = [n for n, k in kinds.items() if k not in ("grid", "choice", "value")]
        if bad:
            raise SweepError(f"search.algorithm 'grid' needs grid or choice entries; "
                             f"search_space.{bad[0]} is {kinds[bad[0]]}")
    if algorithm in ("optuna", "hyperopt"):
        bad = [n for n, k in kinds.items() if k == "grid"]
        if bad:
            raise SweepError(f"search.algorithm {algorithm!r} cannot search a grid; "
                             f"use choice for search_space.{bad[0]}")
        try:
            __import__(algorithm)
        except ImportError as exc:
            raise SweepError(f"search.algorithm {algorithm!r} needs the {algorithm} package "
                             f"(pip install {algorithm})") from exc


def check_scheduler(cfg: SweepConfig) -> None:
    """ASHA needs an integer `max_t` (or `stop.training_iteration`) >= `grace_period`."""
    sch = cfg.scheduler
    if sch.type != "asha":
        return
    max_t = sch.max_t if sch.max_t is not None else cfg.stop.get("training_iteration")
    if max_t is None:
        raise SweepError("scheduler.max_t (or stop.training_iteration) is needed by asha")
    if not (isinstance(max_t, int) and max_t >= sch.grace_period):
        raise SweepError(f"scheduler.max_t must be an integer >= grace_period, got {max_t!r}")


def check_baselines(cfg: SweepConfig) -> None:
    """`evaluation.baselines` are baselines of the env."""
    if cfg.evaluation.baselines is None:
        return
    from lwmecps_rllib.baselines import policies_for

    known = policies_for(cfg.env)
    for b in cfg.evaluation.baselines:
        if b not in known:
            raise SweepError(f"evaluation.baselines: {b!r} is not one of {known}")
