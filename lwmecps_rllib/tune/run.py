"""Running a sweep: fit the Tuner, then evaluate and register the best trial.

:func:`run_sweep` leaves `sweep.yaml` (the sweep as run, what `--resume` reads) and
`summary.json` in the sweep folder next to Tune's own files. A new sweep takes its
folder by creating `sweep.yaml` exclusively before Ray starts (:func:`claim_folder`).
"""

from __future__ import annotations

import shutil
from contextlib import suppress
from pathlib import Path
from typing import Any

import yaml

from lwmecps_rllib import atomic
from lwmecps_rllib.spec import observation_options
from lwmecps_rllib.tune.report import metric_value, plot_trials, trial_rows
from lwmecps_rllib.tune.schema import SweepConfig, SweepError, load_sweep
from lwmecps_rllib.tune.space import expected_trials
from lwmecps_rllib.tune.tuner import build_tuner, experiment_folder


class SweepInterruptedError(SweepError):
    """The sweep stopped before every trial finished (Ctrl-C, driver stopped); resumable."""


SWEEP_FILE = "sweep.yaml"


def claim_folder(folder: Path, cfg: SweepConfig) -> bool:
    """Take the sweep folder for a new sweep by creating its `sweep.yaml` exclusively.

    Done before Ray starts: of concurrent starts of one sweep name exactly one gets the
    folder, the others are refused without starting anything.

    Args:
        folder: The sweep folder (missing, or an empty folder).
        cfg: The sweep, written to `sweep.yaml`.

    Returns:
        Whether the folder itself was created here.

    Raises:
        SweepError: the folder holds anything (an earlier or a concurrent sweep).
    """
    taken = SweepError(f"sweep folder {str(folder)!r} exists; pass --resume to continue it "
                       f"or choose another name/storage path")
    folder.parent.mkdir(parents=True, exist_ok=True)
    created = True
    try:
        folder.mkdir()
    except FileExistsError:
        created = False
        if not folder.is_dir() or any(folder.iterdir()):
            raise taken from None
    try:
        atomic.write_text(folder / SWEEP_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False),
                          exclusive=True)
    except FileExistsError:
        raise taken from None
    return created


def release_folder(folder: Path, created: bool) -> None:
    """Give up a folder taken by :func:`claim_folder` before any trial ran.

    Everything in it was written by this start; `sweep.yaml` goes last, so the name is
    free only once the folder is empty (removed too when `created`).
    """
    for entry in folder.iterdir():
        if entry.name == SWEEP_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    (folder / SWEEP_FILE).unlink(missing_ok=True)
    if created:
        with suppress(OSError):
            folder.rmdir()


def _unfinished(results: Any, cfg: SweepConfig) -> int:
    """Trials still running or never started when `fit()` returned."""
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
        SweepInterruptedError: when trials are left unfinished (resume it).
        SweepError: when the folder holds anything (an earlier sweep, or a concurrent
            start of the same name, refused before Ray starts) and `resume` is False, when
            there is nothing to resume, or when every trial failed.
    """
    from lwmecps_rllib.train import ensure_ray

    folder = experiment_folder(cfg, storage_path)
    sweep_file = folder / SWEEP_FILE
    created = False
    if resume:
        if not sweep_file.exists():
            raise SweepError(f"nothing to resume in {str(folder)!r} (no {SWEEP_FILE})")
        cfg = load_sweep(sweep_file)
    else:
        created = claim_folder(folder, cfg)
    try:
        ensure_ray(address)
        tuner = build_tuner(cfg, storage_path, resume)
    except BaseException:
        if not resume:  # nothing ran: the name is free again
            release_folder(folder, created)
        raise
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
                 "metric": metric_value(best.metrics, cfg.metric),
                 "checkpoint": best.checkpoint.path if best.checkpoint else None,
                 "path": best.path,
                 "train": {k: v for k, v in (best.metrics.get("env") or {}).items()}},
    }
    if plot:
        plot_trials(folder, cfg.metric, Path(plot))
        summary["plot"] = str(plot)
    if cfg.evaluation.enabled:
        summary["evaluation"] = evaluate_best(cfg, best.checkpoint.path)
    if cfg.register_model:
        summary["model_id"] = register_best(cfg, best.checkpoint.path, summary, registry_path)
    atomic.write_json(folder / "summary.json", summary)
    return summary


def evaluate_best(cfg: SweepConfig, checkpoint: str) -> dict[str, Any]:
    """The checkpoint's greedy policy over the evaluation trace, beside the baselines.

    Args:
        cfg: The sweep (`evaluation` says which trace, steps and baselines).
        checkpoint: The best trial's checkpoint folder.

    Returns:
        The evaluation (per policy, without the step-by-step series).
    """
    from lwmecps_rllib.train import algorithm_label, evaluate_checkpoint

    observation = observation_options(cfg.env_options().to_env_config())
    result = evaluate_checkpoint(checkpoint, cfg.env, cfg.evaluation_options(),
                                 observation=observation,
                                 baselines=cfg.evaluation.baselines, seed=cfg.seed,
                                 steps=cfg.evaluation.steps, name=algorithm_label(cfg.algorithm))
    for run in result["results"].values():
        run.pop("series", None)
    return result


def register_best(cfg: SweepConfig, checkpoint: str, summary: dict[str, Any],
                  registry_path: str | Path | None) -> str:
    """Register the best checkpoint as a `candidate` with its training and eval metrics.

    Args:
        cfg: The sweep.
        checkpoint: The best trial's checkpoint folder.
        summary: The sweep's summary so far (its `best` and, if run, `evaluation`).
        registry_path: Model registry file (None: the default one).

    Returns:
        The model id.
    """
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
        scenario=cfg.scenario, config=config, metrics=metrics,
        observation=observation_options(cfg.env_options().to_env_config()))
    return record.id
