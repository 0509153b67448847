"""Hyper-parameter sweeps with Ray Tune: the sweep file, the Tuner, and what is kept.

A sweep file (YAML, see `tune_configs/`) names the algorithm, env and scenario, the
search space, the search algorithm and scheduler, the stop criteria and the metric.
:func:`load_sweep` checks it (unknown keys and bad ranges are errors naming the key),
:func:`run_sweep` runs it with Ray Tune, evaluates the best trial's checkpoint on
trace B beside the baselines and the oracle, registers it in the model registry, and
leaves `summary.json` in the sweep folder next to Tune's own files.

Modules: :mod:`~lwmecps_rllib.tune.schema` (the file), :mod:`~lwmecps_rllib.tune.validate`
(checks across keys), :mod:`~lwmecps_rllib.tune.space` (the search space),
:mod:`~lwmecps_rllib.tune.tuner` (Tune objects), :mod:`~lwmecps_rllib.tune.run` (the run),
:mod:`~lwmecps_rllib.tune.report` (rows, summary, plot); `python -m lwmecps_rllib.tune`
is the command line.
"""

from __future__ import annotations

from lwmecps_rllib.tune.report import format_summary, plot_trials, trial_rows
from lwmecps_rllib.tune.run import SweepInterruptedError, evaluate_best, register_best, run_sweep
from lwmecps_rllib.tune.schema import (
    STOP_KEYS,
    CheckpointSettings,
    EvaluationSettings,
    SchedulerSettings,
    SearchSettings,
    SweepConfig,
    SweepError,
    WandbSettings,
    load_sweep,
    override_sweep,
    sweep_from_dict,
)
from lwmecps_rllib.tune.space import DISTRIBUTIONS, expected_trials, search_space
from lwmecps_rllib.tune.tuner import (
    base_config,
    build_tuner,
    experiment_folder,
    make_trainable,
    wandb_mode,
)
from lwmecps_rllib.tune.validate import training_parameters


def main(argv: list[str] | None = None) -> int:
    """`python -m lwmecps_rllib.tune` (see :mod:`lwmecps_rllib.tune.__main__`)."""
    from lwmecps_rllib.tune.__main__ import main as cli

    return cli(argv)


__all__ = [
    "DISTRIBUTIONS",
    "STOP_KEYS",
    "CheckpointSettings",
    "EvaluationSettings",
    "SchedulerSettings",
    "SearchSettings",
    "SweepConfig",
    "SweepError",
    "SweepInterruptedError",
    "WandbSettings",
    "base_config",
    "build_tuner",
    "evaluate_best",
    "expected_trials",
    "experiment_folder",
    "format_summary",
    "load_sweep",
    "main",
    "make_trainable",
    "override_sweep",
    "plot_trials",
    "register_best",
    "run_sweep",
    "search_space",
    "sweep_from_dict",
    "training_parameters",
    "trial_rows",
    "wandb_mode",
]
