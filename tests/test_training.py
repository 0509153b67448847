"""The train command and the agent facade, end to end on a local Ray with tiny budgets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lwmecps_rllib.train import __main__ as train_cli

pytestmark = pytest.mark.integration

TINY_PPO = ["--param", "train_batch_size_per_learner=256", "--param", "minibatch_size=64",
            "--param", "num_epochs=1"]


def test_train_cli_trains_checkpoints_and_evaluates(ray_session, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = train_cli.main(["--algo", "ppo", "--env", "LWMECPSEnv3", "--scenario", "testbed-4bs",
                           "--iterations", "2", "--output", str(out), "--eval-steps", "20",
                           "--num-envs", "4", "--shuffle-stations", "--load-jitter", "0.2",
                           *TINY_PPO])
    assert code == 0
    assert torch.get_num_threads() == 1  # the default --torch-threads
    text = capsys.readouterr().out
    assert "iter    2" in text and "steps/s" in text and "oracle" in text and "ppo" in text
    history = json.loads((out / "metrics.json").read_text())
    assert len(history) == 2
    for key in ("env/total_reward", "env/steps", "env/latency", "env/resource_usage",
                "env/pod_count", "losses/policy_loss", "time/env_steps_per_s"):
        assert key in history[-1]
    result = json.loads((out / "evaluation.json").read_text())
    assert {"ppo", "oracle", "hpa"} <= set(result["results"])
    assert (out / "checkpoint" / "rllib_checkpoint.json").exists()

    # The checkpoint beside baselines in `evaluate`, without training, and what it refuses.
    from lwmecps_rllib import evaluate

    table = tmp_path / "eval.json"
    assert evaluate.main(["--scenario", "testbed-4bs", "--policy", "static", "--steps", "5",
                          "--model", str(out / "checkpoint"), "--output", str(table)]) == 0
    runs = json.loads(table.read_text())["results"]
    assert set(runs) == {"static", "checkpoint:checkpoint"}
    assert runs["checkpoint:checkpoint"]["steps"] == 5
    capsys.readouterr()
    assert evaluate.main(["--scenario", "metro-16", "--policy", "none", "--steps", "2",
                          "--model", str(out / "checkpoint")]) == 2
    assert "does not take LWMECPSEnv3 observations of metro-16" in capsys.readouterr().err
    assert evaluate.main(["--policy", "none", "--model", "production", "--registry",
                          str(tmp_path / "empty.sqlite")]) == 2
    assert "neither a checkpoint folder nor usable in the registry" in capsys.readouterr().err


def test_train_cli_rejects_bad_input(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert train_cli.main(["--algo", "a3c", "--output", str(tmp_path)]) == 2
    assert "algorithm must be one of" in capsys.readouterr().err
    assert train_cli.main(["--algo", "dqn", "--param", "learning_rate=-1",
                           "--output", str(tmp_path)]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert train_cli.main(["--algo", "ppo", "--torch-threads", "-1",
                           "--output", str(tmp_path)]) == 2
    assert "resources.torch_threads must be >= 1" in capsys.readouterr().err
    assert train_cli.main(["--algo", "ppo", "--load-jitter", "1.5",
                           "--output", str(tmp_path)]) == 2
    assert "load_jitter must be a number in [0, 1)" in capsys.readouterr().err


def test_agent_facade_round_trip(ray_session, tmp_path: Path) -> None:
    from lwmecps_rllib.agent import make_agent
    from lwmecps_rllib.envs import make_env

    agent = make_agent("dqn", "LWMECPSEnv3", scenario="testbed-4bs", learning_rate=1e-3,
                       learning_starts=64)
    stats = agent.train(episodes=4)
    assert set(stats) == {"episode_rewards", "episode_steps", "episode_latencies"}
    assert len(stats["episode_rewards"]) >= 4
    # Each episode is truncated at 5 steps or terminated earlier by a step under -500.
    assert all(s == 5 or (1 <= s < 5 and r < -500) for s, r in zip(
        stats["episode_steps"], stats["episode_rewards"], strict=True))
    env = make_env("LWMECPSEnv3", {})
    obs = [env.reset(seed=s)[0] for s in range(5)]
    before = [agent.choose_action(o) for o in obs]
    path = agent.save_model(tmp_path / "agent")
    agent.train(episodes=200)
    agent.load_model(path)
    after = [agent.choose_action(o) for o in obs]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    with pytest.raises(FileNotFoundError, match="not an algorithm checkpoint"):
        agent.load_model(tmp_path)
    # A run folder is never replaced by a checkpoint; an earlier checkpoint is.
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "metrics.json").write_text("[]")
    with pytest.raises(FileExistsError, match="not an algorithm checkpoint"):
        agent.save_model(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "metrics.json"]
    # Killed between the two renames of a replacement: the next load restores the old one.
    moved = {"path": False}
    real_rename = os.rename

    def dying_rename(src, dst):
        if moved["path"]:
            raise KeyboardInterrupt
        real_rename(src, dst)
        moved["path"] = Path(src) == path

    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "rename", dying_rename)
        with pytest.raises(KeyboardInterrupt):
            agent.save_model(path)
    assert not path.exists()
    agent.load_model(path)
    assert all(np.array_equal(a, b) for a, b in zip(
        before, [agent.choose_action(o) for o in obs], strict=True))
    agent.close()
