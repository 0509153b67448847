"""What a sweep reports: one row per trial, the printed summary, the learning curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lwmecps_rllib.tune.schema import SweepConfig


def metric_value(metrics: dict[str, Any], key: str) -> Any:
    """`a/b/c` from nested or flat result dicts (None when absent)."""
    if key in metrics:
        return metrics[key]
    cur: Any = metrics
    for part in key.split("/"):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def trial_rows(results: Any, cfg: SweepConfig) -> list[dict[str, Any]]:
    """One row per trial: searched parameters, metric, iterations, status.

    Args:
        results: Tune's `ResultGrid`.
        cfg: The sweep.

    Returns:
        Rows with `trial_id`, `path`, `config`, `metric`, `iterations`, `env_steps`,
        `node_id` (the Ray node of its last result) and `error` (its first line, or
        None).
    """
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({
            "trial_id": m.get("trial_id"),
            "path": r.path,
            "config": {k: r.config.get(k) for k in cfg.search_space},
            "metric": metric_value(m, cfg.metric),
            "iterations": m.get("training_iteration"),
            "env_steps": m.get("num_env_steps_sampled_lifetime"),
            "node_id": m.get("node_id"),
            "error": None if r.error is None else str(r.error).splitlines()[0],
        })
    return rows


def plot_trials(folder: Path, metric: str, path: Path) -> None:
    """Learning curves of every trial (metric against env steps) from `progress.csv`.

    Args:
        folder: The sweep folder (one sub-folder per trial).
        metric: The result key to plot.
        path: The PNG to write.
    """
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
    """The trials, the best config and (when evaluated) the day-long comparison.

    Args:
        summary: What :func:`lwmecps_rllib.tune.run_sweep` returns.

    Returns:
        Lines to print.
    """
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
