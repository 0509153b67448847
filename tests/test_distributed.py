"""One training across Ray workers: resources in the run spec (no Ray), then our algorithms
with remote env runners and two learners, checkpoints and resume. Several nodes and
losing one: tests/test_nodes.py."""

from __future__ import annotations

import json

import pytest

from lwmecps_rllib.algorithms import build_config
from lwmecps_rllib.spec import EnvOptions, Resources, TrainingSpec, check_run

DISTRIBUTED = {"env_runners": 2, "cpus_per_env_runner": 0.5, "learners": 2,
               "cpus_per_learner": 0.25, "gpus_per_learner": 0.0}


@pytest.mark.parametrize(("data", "message"), [
    ({"env_runners": -1}, "resources.env_runners must be >= 0, got -1"),
    ({"env_runners": 1.5}, "resources.env_runners must be an integer, got 1.5"),
    ({"learners": -2}, "resources.learners must be >= 0, got -2"),
    ({"cpus_per_env_runner": -0.5}, "resources.cpus_per_env_runner must be >= 0"),
    ({"cpus_per_learner": -1}, "resources.cpus_per_learner must be >= 0"),
    ({"gpus_per_learner": 1.5},
     "resources.gpus_per_learner must be a fraction below 1 or a whole number, got 1.5"),
    ({"env_runner_resources": {"CPU": 1}},
     "resources.env_runner_resources must name custom resources only"),
    ({"env_runner_resources": {"sampler": 0}},
     "resources.env_runner_resources must map resource names to numbers > 0, got sampler=0"),
    ({"env_runnrs": 1}, "unknown key resources.env_runnrs; allowed: ['num_envs'"),
])
def test_bad_resources_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        TrainingSpec.parse({"resources": data})
    assert message in str(err.value)


def test_resources_reach_the_algorithm_config() -> None:
    config = build_config(TrainingSpec(algorithm="ppo", resources=Resources(
        **DISTRIBUTED, cpus=0.5, env_runner_resources={"sampler": 1})))
    assert (config.num_env_runners, config.num_cpus_per_env_runner) == (2, 0.5)
    assert config.custom_resources_per_env_runner == {"sampler": 1}
    assert (config.num_learners, config.num_cpus_per_learner) == (2, 0.25)
    assert config.num_gpus_per_learner == 0 and config.num_cpus_for_main_process == 0.5
    assert config.restart_failed_env_runners
    local = build_config("dqn")
    assert (local.num_env_runners, local.num_learners, local.num_cpus_per_learner) == (
        0, 0, "auto")


def test_qlearning_refuses_more_than_one_learner() -> None:
    build_config(TrainingSpec(algorithm="qlearning", resources=Resources(learners=1)))
    with pytest.raises(ValueError, match=r"resources\.learners must be at most 1 for "
                                         "lwmecps-qlearning, got 2"):
        build_config(TrainingSpec(algorithm="qlearning", resources=Resources(learners=2)))


def test_a_real_cluster_takes_one_remote_env_runner_at_most() -> None:
    k8s = EnvOptions(backend="k8s")
    check_run(k8s, TrainingSpec(resources=Resources(env_runners=1)))
    with pytest.raises(ValueError, match=r"resources\.env_runners must be 0 or 1 with "
                                         "backend='k8s'"):
        check_run(k8s, TrainingSpec(resources=Resources(env_runners=2)))


def test_train_flags_give_the_resources(capsys: pytest.CaptureFixture) -> None:
    from lwmecps_rllib.cli import run_specs_from_args
    from lwmecps_rllib.train import __main__ as train_cli

    args = train_cli.build_parser().parse_args(
        ["--env-runners", "2", "--cpus-per-env-runner", "0.5", "--learners", "2",
         "--cpus-per-learner", "0.25", "--gpus-per-learner", "0"])
    _, training = run_specs_from_args(args)
    assert training.resources == Resources(**DISTRIBUTED)
    _, default = run_specs_from_args(train_cli.build_parser().parse_args([]))
    assert (default.resources.env_runners, default.resources.learners) == (0, 0)
    assert train_cli.main(["--learners", "-1"]) == 2
    assert "resources.learners must be >= 0, got -1" in capsys.readouterr().err
    assert train_cli.main(["--algo", "qlearning", "--learners", "2"]) == 2
    assert "resources.learners must be at most 1" in capsys.readouterr().err


def test_a_sweeps_resources_are_each_trials_placement_group() -> None:
    from lwmecps_rllib.tune import sweep_from_dict
    from lwmecps_rllib.tune.tuner import make_trainable

    cfg = sweep_from_dict({"resources": {"cpu": 1, **DISTRIBUTED}})
    assert cfg.training().resources == Resources(cpus=1.0, **DISTRIBUTED)
    trainable = make_trainable(cfg)
    # What Tune asks of the trainable for every trial (with its sampled parameters).
    group = trainable.default_resource_request({"entropy_coeff": 0.01})
    assert group.bundles == [{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 0.5},
                             {"CPU": 0.25}, {"CPU": 0.25}]
    # Without remote workers the main process holds the learner: one bundle, `cpu` CPUs.
    single = make_trainable(sweep_from_dict({"resources": {"cpu": 2}}))
    assert single.default_resource_request({}).bundles == [{"CPU": 2.0}]


@pytest.mark.parametrize(("resources", "message"), [
    ({"env_runners": -1}, "resources.env_runners must be an integer >= 0, got -1"),
    ({"cpus_per_env_runner": "1"}, "resources.cpus_per_env_runner must be a number >= 0"),
    ({"gpus_per_learner": 2.5}, "resources.gpus_per_learner must be a fraction below 1"),
    ({"gpu": 1}, "unknown key resources.gpu; allowed: ['cpu', 'env_runners'"),
])
def test_bad_sweep_resources_name_the_key(resources: dict, message: str) -> None:
    from lwmecps_rllib.tune import SweepError, sweep_from_dict

    with pytest.raises(SweepError) as err:
        sweep_from_dict({"resources": resources})
    assert message in str(err.value)


def test_tune_flags_override_each_trials_resources(capsys: pytest.CaptureFixture) -> None:
    from conftest import REPO

    from lwmecps_rllib.tune import __main__ as tune_cli

    smoke = str(REPO / "tune_configs" / "smoke.yaml")
    args = tune_cli.build_parser().parse_args(
        ["--config", smoke, "--env-runners", "2", "--learners", "2", "--cpus-per-learner",
         "0.5"])
    resources = tune_cli.build_sweep(args).training().resources
    assert (resources.env_runners, resources.learners, resources.cpus_per_learner) == (
        2, 2, 0.5)
    assert tune_cli.main(["--config", smoke, "--env-runners", "-1"]) == 2
    assert "resources.env_runners must be an integer >= 0, got -1" in capsys.readouterr().err
    assert tune_cli.main(["--config", smoke, "--resume", "--learners", "2"]) == 2
    assert "--learners: --resume continues the sweep as its sweep.yaml records it" in (
        capsys.readouterr().err)


def test_a_sweep_of_qlearning_refuses_two_learners() -> None:
    from lwmecps_rllib.tune import SweepError, sweep_from_dict

    with pytest.raises(SweepError, match=r"resources\.learners must be at most 1"):
        sweep_from_dict({"algorithm": "qlearning", "preset": None,
                         "search_space": {"epsilon": {"uniform": [0.01, 0.1]}},
                         "resources": {"learners": 2}})


def test_a_training_task_carries_the_resources() -> None:
    from pydantic import ValidationError

    from lwmecps_rllib.jobs import TrainingTask

    task = TrainingTask(name="ppo-3", env_runners=2, cpus_per_env_runner=0.5, learners=2)
    assert task.training_spec().resources == Resources(env_runners=2, cpus_per_env_runner=0.5,
                                                       learners=2)
    assert task.entrypoint().endswith("--output runs/jobs/ppo-3 --env-runners 2 "
                                      "--cpus-per-env-runner 0.5 --learners 2")
    with pytest.raises(ValidationError, match="env_runners"):
        TrainingTask(name="x", env_runners=-1)
    with pytest.raises(ValidationError, match=r"resources\.learners must be at most 1"):
        TrainingTask(name="x", model_type="qlearning", learners=2)
    from conftest import REPO

    smoke = str(REPO / "tune_configs" / "smoke.yaml")
    sweep = TrainingTask(name="x", sweep=smoke, env_runners=4)
    assert sweep.entrypoint().endswith("--storage-path runs/jobs/tune --env-runners 4")
    assert sweep.sweep_config().training().resources.env_runners == 4
    qlearning = REPO / "tune_configs" / "qlearning.yaml"
    with pytest.raises(ValidationError, match=r"resources\.learners must be at most 1"):
        TrainingTask(name="x", sweep=str(qlearning), learners=2)


def test_jobs_submit_flags_give_the_tasks_resources(capsys: pytest.CaptureFixture) -> None:
    import asyncio

    from lwmecps_rllib.jobs import __main__ as jobs_cli

    class Service:
        """Takes the task `submit` makes."""

        async def create_task(self, task: object) -> object:
            self.task = task
            return task

        async def start_training(self, name: str) -> str:
            return f"job-{name}"

    service = Service()
    args = jobs_cli.build_parser().parse_args(
        ["submit", "--name", "ppo-4", "--env-runners", "4", "--learners", "2"])
    assert asyncio.run(jobs_cli.run_command(args, service)) == 0
    assert "submitted job-ppo-4" in capsys.readouterr().out
    assert (service.task.env_runners, service.task.learners) == (4, 2)
    assert service.task.entrypoint().endswith("--env-runners 4 --learners 2")


# --------------------------------------------------------------------------- on a local Ray
# The shared Ray has 2 CPUs: the main process takes 1, so remote env runners and learners
# reserve fractions of the other.
ONE_RUNNER = {"env_runners": 1, "cpus_per_env_runner": 0.5}
TWO_LEARNERS = {"learners": 2, "cpus_per_learner": 0.5}


def distributed_algo(algo: str, resources: dict, *, params: dict | None = None,
                     scenario: object = "testbed-4bs", num_envs: int = 4) -> object:
    """A built algorithm of `algo` with `resources` (tiny settings of tests/test_algorithms)."""
    from test_algorithms import SMALL

    return build_config(TrainingSpec(algorithm=algo, params=params or SMALL[algo], seed=0,
                                     resources=Resources(num_envs=num_envs, **resources)),
                        "LWMECPSEnv3", EnvOptions(scenario=scenario)).build_algo()


def learner_parameters(algo_obj: object) -> list[list[object]]:
    """Every remote learner's module parameters."""
    results = algo_obj.learner_group.foreach_learner(
        lambda learner: [p.detach().clone() for p in learner.module["default_policy"].parameters()])
    return [r.get() for r in results]


def assert_runners_hold_the_learners_weights(algo_obj: object) -> None:
    """Every remote env runner's module has the local learner's current weights."""
    import torch

    learner = algo_obj.learner_group._learner.module["default_policy"].state_dict()
    runners = algo_obj.env_runner_group.foreach_env_runner(
        lambda runner: runner.module.state_dict(), local_env_runner=False)
    assert len(runners) == algo_obj.config.num_env_runners
    for state in runners:
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), learner[key]), key


@pytest.mark.integration
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_two_learners_hold_identical_weights_after_an_update(ray_session, algo: str) -> None:
    import torch

    algo_obj = distributed_algo(algo, TWO_LEARNERS)
    try:
        before = learner_parameters(algo_obj)
        for _ in range(2):
            result = algo_obj.train()
        after = learner_parameters(algo_obj)
    finally:
        algo_obj.stop()
    assert len(after) == 2
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] > 0
    assert not all(torch.equal(a, b) for a, b in zip(before[0], after[0], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(after[0], after[1], strict=True))


@pytest.mark.integration
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_two_seeded_learners_learn_the_known_optimum(ray_session, algo: str) -> None:
    # tests/test_algorithms.py: one learner, same seed and settings, learns [2, 2] too.
    import torch
    from test_algorithms import LEARN, tiny_scenario, train_until_optimal

    params, budget = LEARN[algo]
    sc = tiny_scenario()
    algo_obj = distributed_algo(algo, TWO_LEARNERS, params=params, scenario=sc, num_envs=8)
    # The sampling module gets the learners' weights after every update.
    module = algo_obj.env_runner_group.local_env_runner.module
    try:
        learned, actions = train_until_optimal(algo_obj, module, sc, budget)
        ranks = learner_parameters(algo_obj)
    finally:
        algo_obj.stop()
    assert learned, f"{algo} with 2 learners did not learn [2, 2] within {budget} iterations: " \
                    f"{actions}"
    assert all(torch.equal(a, b) for a, b in zip(ranks[0], ranks[1], strict=True))


@pytest.mark.integration
def test_ppo_with_a_remote_env_runner_learns_the_known_optimum(ray_session) -> None:
    from test_algorithms import LEARN, tiny_scenario, train_until_optimal

    params, budget = LEARN["ppo"]
    sc = tiny_scenario()
    algo_obj = distributed_algo("ppo", ONE_RUNNER, params=params, scenario=sc, num_envs=8)
    module = algo_obj.learner_group._learner.module["default_policy"]
    try:
        learned, actions = train_until_optimal(
            algo_obj, module, sc, budget,
            after_iteration=lambda: assert_runners_hold_the_learners_weights(algo_obj))
        sampled = algo_obj.env_runner_group.foreach_env_runner(
            lambda runner: runner.num_env_steps_sampled_lifetime, local_env_runner=False)
    finally:
        algo_obj.stop()
    assert learned, f"ppo did not learn [2, 2] within {budget} iterations: {actions}"
    assert sampled[0] > 0  # the remote runner sampled


@pytest.mark.integration
def test_dqn_replays_the_remote_runners_episodes(ray_session) -> None:
    algo_obj = distributed_algo("dqn", ONE_RUNNER)
    try:
        for _ in range(3):
            result = algo_obj.train()
            assert_runners_hold_the_learners_weights(algo_obj)
        stored = algo_obj.replay.get_num_timesteps()
    finally:
        algo_obj.stop()
    sampled = result["env_runners"]["num_env_steps_sampled_lifetime"]
    assert stored == sampled == 3 * 64 * 4
    assert result["learners"]["default_policy"]["td_loss"] > 0


@pytest.mark.integration
def test_qlearning_table_reaches_the_remote_runner(ray_session) -> None:
    import numpy as np

    from lwmecps_rllib.algorithms.inference import greedy_actions
    from lwmecps_rllib.envs import make_env

    env = make_env("LWMECPSEnv3", {})
    obs = np.stack([env.reset(seed=s)[0] for s in range(16)])
    algo_obj = distributed_algo("qlearning", ONE_RUNNER)
    try:
        for _ in range(3):
            algo_obj.train()
            assert_runners_hold_the_learners_weights(algo_obj)
        module = algo_obj.learner_group._learner.module["default_policy"]
        here = greedy_actions(module, obs)
        there = algo_obj.env_runner_group.foreach_env_runner(
            lambda runner: greedy_actions(runner.module, obs), local_env_runner=False)
        filled = int((module.q != 0).sum())
    finally:
        algo_obj.stop()
    assert filled > 0
    np.testing.assert_array_equal(there[0], here)


# --------------------------------------------------------------------------- checkpoints, resume
TINY_PPO = ["--algo", "ppo", "--scenario", "testbed-4bs", "--num-envs", "4", "--no-eval",
            "--param", "train_batch_size_per_learner=128", "--param", "minibatch_size=64",
            "--param", "num_epochs=1"]


class TrainingKilledError(Exception):
    """Stands for a training killed mid-run."""


def test_resume_refuses_what_would_change_or_lose_the_run(tmp_path, capsys) -> None:
    from lwmecps_rllib.train import __main__ as train_cli

    assert train_cli.main(["--resume", "--output", str(tmp_path)]) == 2
    assert "holds no run to continue (no run.json and checkpoint" in capsys.readouterr().err
    assert train_cli.main(["--resume", "--overwrite", "--output", str(tmp_path)]) == 2
    assert "--overwrite would replace it" in capsys.readouterr().err
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "rllib_checkpoint.json").write_text("{}")
    (tmp_path / "run.json").write_text("{}")
    assert train_cli.main(["--resume", "--algo", "dqn", "--output", str(tmp_path)]) == 2
    assert "--algo: --resume continues the recorded run" in capsys.readouterr().err
    assert train_cli.main(["--checkpoint-every", "0", "--output", str(tmp_path / "x")]) == 2
    assert "--checkpoint-every must be an integer >= 1, got 0" in capsys.readouterr().err


def test_resume_takes_the_flags_the_run_was_started_with() -> None:
    from lwmecps_rllib.cli import run_specs_from_args
    from lwmecps_rllib.train import __main__ as train_cli

    parser = train_cli.build_parser()
    started = parser.parse_args([*TINY_PPO, "--preset", "recommended", "--scenario",
                                 "testbed-4bs-peak", "--env-runners", "4"])
    run = json.loads(json.dumps(train_cli.run_record(started.env, *run_specs_from_args(
        started))))
    again = parser.parse_args([*TINY_PPO, "--preset", "recommended", "--scenario",
                               "testbed-4bs-peak", "--resume", "--iterations", "9"])
    assert train_cli.records_the_run(run, again)
    other = parser.parse_args([*TINY_PPO, "--preset", "recommended", "--scenario",
                               "testbed-4bs-peak", "--param", "num_epochs=2"])
    assert not train_cli.records_the_run(run, other)
    assert not train_cli.records_the_run({}, again)


@pytest.mark.integration
def test_an_interrupted_training_resumes_from_its_last_checkpoint(ray_session, tmp_path,
                                                                  monkeypatch) -> None:
    from lwmecps_rllib.train import __main__ as train_cli

    out = tmp_path / "run"
    progress = train_cli.progress

    def dies_in_iteration_3(i: int, m: dict) -> None:
        progress(i, m)
        if i == 3:
            raise TrainingKilledError

    monkeypatch.setattr(train_cli, "progress", dies_in_iteration_3)
    with pytest.raises(TrainingKilledError):
        train_cli.main([*TINY_PPO, "--iterations", "5", "--checkpoint-every", "2",
                        "--output", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    assert [m["training_iteration"] for m in saved] == [1, 2]  # at most 2 iterations lost
    monkeypatch.setattr(train_cli, "progress", progress)
    # The command that started the run, with --resume (as a resubmitted job gives it).
    assert train_cli.main([*TINY_PPO, "--resume", "--iterations", "4", "--output",
                           str(out)]) == 0
    history = json.loads((out / "metrics.json").read_text())
    assert [m["training_iteration"] for m in history] == [1, 2, 3, 4]
    assert history[:2] == saved  # appended, not replaced
    steps = [m["env/env_steps_lifetime"] for m in history]
    assert steps == [128, 256, 384, 512]  # the counters continue from the checkpoint
    assert json.loads((out / "run.json").read_text())["training"]["budget"]["iterations"] == 4
