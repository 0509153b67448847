"""A sweep as Ray Tune objects: the trainable, searcher, scheduler, callbacks and Tuner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lwmecps_rllib.tune.schema import STOP_KEYS, SweepConfig, SweepError
from lwmecps_rllib.tune.space import search_space


def base_config(cfg: SweepConfig) -> Any:
    """The algorithm config every trial starts from (fixed params, env, seed, resources).

    Args:
        cfg: The sweep.

    Returns:
        An RLlib `AlgorithmConfig` trained on trace A.
    """
    from lwmecps_rllib.algorithms import build_config

    return build_config(cfg.training(), cfg.env, cfg.env_options())


def make_trainable(cfg: SweepConfig) -> type:
    """The algorithm class with the sweep's base config as its default.

    Tune then only carries the searched parameters (shown in its tables and in W&B),
    and every trial builds `base config + sampled parameters`.

    Args:
        cfg: The sweep.

    Returns:
        A subclass of the algorithm class (with :class:`_SweepTrial` mixed in).
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
    algorithm config (which stays in the checkpoints), and the Ray node the trial's
    main process runs on as `node_id` (Tune's `node_ip` does not tell apart nodes that
    share an address)."""

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        import ray

        self._sampled = ({k: v for k, v in config.items() if not k.startswith("__")}
                         if isinstance(config, dict) else {})
        self._node_id = ray.get_runtime_context().get_node_id()
        super().__init__(config=config, **kwargs)

    def get_auto_filled_metrics(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super().get_auto_filled_metrics(*args, **kwargs)
        if "config" in out:
            out["config"] = dict(self._sampled)
        out["node_id"] = self._node_id
        return out


def _searcher(cfg: SweepConfig) -> Any:
    """Tune's search algorithm for `search.algorithm`, seeded."""
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
    """Tune's trial scheduler for `scheduler`."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sch = cfg.scheduler
    if sch.type == "fifo":
        return FIFOScheduler()
    max_t = sch.max_t if sch.max_t is not None else int(cfg.stop["training_iteration"])
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                         grace_period=sch.grace_period, reduction_factor=sch.reduction_factor)


def wandb_mode() -> str:
    """The W&B mode for this process.

    Returns:
        `WANDB_MODE` when set; else `online` when a W&B API key is configured
        (`WANDB_API_KEY` or a netrc login); else `offline`.
    """
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
    """The W&B logger (runs under `folder/wandb`), when enabled."""
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
    """A `ray.tune.Tuner` for the sweep, or the restored one.

    Args:
        cfg: The sweep.
        storage_path: Folder of sweeps; this one is `storage_path/cfg.name`.
        resume: Restore the interrupted Tune experiment in that folder.

    Returns:
        The Tuner, ready to `fit()`.

    Raises:
        SweepError: `resume` with no Tune experiment in the folder.
    """
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
