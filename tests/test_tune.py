"""Ray Tune sweeps end to end on a local Ray: files, W&B, registry, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lwmecps_rllib.algorithms.inference import greedy_actions, load_module
from lwmecps_rllib.envs import make_env
from lwmecps_rllib.model_registry import ModelRegistry
from lwmecps_rllib.tune import SweepError, load_sweep, run_sweep

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def test_smoke_sweep_end_to_end(ray_session, tmp_path):
    cfg = load_sweep(ROOT / "tune_configs" / "smoke.yaml")
    reg = tmp_path / "reg.sqlite"
    summary = run_sweep(cfg, tmp_path / "tune", registry_path=reg, plot=tmp_path / "c.png")
    folder = Path(summary["folder"])
    assert summary["num_trials"] == 2 and summary["num_errors"] == 0
    assert np.isfinite(summary["best"]["metric"])
    assert json.loads((folder / "summary.json").read_text())["model_id"] == summary["model_id"]
    assert load_sweep(folder / "sweep.yaml") == cfg
    assert (tmp_path / "c.png").stat().st_size > 1000
    trials = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("PPO_"))
    assert len(trials) == 2
    for t in trials:
        assert (t / "progress.csv").exists() and list(t.glob("events.out.tfevents*"))
        rows = [json.loads(line) for line in (t / "result.json").read_text().splitlines()]
        assert len(rows) == 2
        last = rows[-1]
        assert set(last["config"]) == {"learning_rate", "epsilon"}
        for key in ("total_reward", "steps", "latency", "resource_usage", "pod_count"):
            assert np.isfinite(last["env"][key]), key
        assert "policy_loss" in last["losses"]
    # W&B, offline, in the sweep folder, with the fixed metric names.
    runs = list((folder / "wandb").glob("offline-run-*/*.wandb"))
    assert len(runs) == 2
    assert all(b"env/total_reward" in r.read_bytes() for r in runs)
    # The evaluation on trace B beside the baselines.
    ev = summary["evaluation"]
    assert set(ev["results"]) == {"static", "hpa", "ppo"} and ev["trace"] == "b"
    # The registered model is the best trial's checkpoint, with its metrics.
    rec = ModelRegistry(reg).get(summary["model_id"])
    assert rec.stage == "candidate" and rec.algorithm == "lwmecps-ppo"
    assert rec.config["learning_rate"] == summary["best"]["config"]["learning_rate"]
    assert rec.metrics["eval/total_reward"] == ev["results"]["ppo"]["mean_reward"]
    space = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs"}).observation_space
    space.seed(0)
    obs = np.stack([space.sample() for _ in range(64)]).astype(np.float32)
    np.testing.assert_array_equal(greedy_actions(load_module(rec.checkpoint), obs),
                                  greedy_actions(load_module(summary["best"]["checkpoint"]), obs))
    # Nothing is overwritten by running the same sweep again.
    with pytest.raises(SweepError, match="pass --resume"):
        run_sweep(cfg, tmp_path / "tune", registry_path=reg)


def _wait(predicate, timeout: float, proc: subprocess.Popen, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep exited ({proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def test_interrupted_sweep_resumes_without_repeating_finished_trials(tmp_path):
    sweep = yaml.safe_load((ROOT / "tune_configs" / "smoke.yaml").read_text())
    # Long enough trials that the second is still running when Ctrl-C lands: it is sent
    # once the second has one iteration done, and nine more take seconds.
    iters = 10
    sweep.update(name="resume", stop={"training_iteration": iters}, register=False)
    sweep["search"].update(num_samples=3, max_concurrent_trials=1)
    sweep["wandb"] = {"enabled": False}
    sweep["evaluation"] = {"steps": 20, "baselines": ["static"]}
    cfg_file = tmp_path / "resume.yaml"
    cfg_file.write_text(yaml.safe_dump(sweep))
    cmd = [sys.executable, "-m", "lwmecps_rllib.tune", "--config", str(cfg_file),
           "--storage-path", str(tmp_path / "tune")]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    folder = tmp_path / "tune" / "resume"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def first_done_second_started() -> bool:
            progress = sorted(folder.glob("PPO_*/progress.csv"))
            return len(progress) >= 2 and sorted(_rows(p) for p in progress)[-1] == iters \
                and min(_rows(p) for p in progress) >= 1
        _wait(first_done_second_started, 240, proc, "one finished and one running trial")
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (folder / "summary.json").exists()
    before = {p.parent.name: p.read_text() for p in folder.glob("PPO_*/progress.csv")}
    finished = [name for name, text in before.items() if len(text.splitlines()) - 1 == iters]
    assert len(finished) == 1
    out = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["num_trials"] == 3 and summary["num_errors"] == 0
    assert all(r["iterations"] == iters for r in summary["trials"])
    # The finished trial was not run again.
    assert (folder / finished[0] / "progress.csv").read_text() == before[finished[0]]
    # The interrupted one continued from its checkpoint, not from scratch.
    for name, text in before.items():
        rows = (folder / name / "progress.csv").read_text().splitlines()
        assert rows[: len(text.splitlines())] == text.splitlines()
