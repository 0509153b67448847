"""Several Ray nodes on this machine, and losing one.

A head and a second node, each a `ray start` process with 1 CPU and its own custom
resource (`head`, `node2`), free ports and temp dir (tests/ray_nodes.py); the pytest
process is the driver. A node is lost by SIGKILL to its raylet. Trainings place env
runners by resources and restart a lost one; `train` and `tune` join with `--address`;
a sweep retries the trial lost with its node from its checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import start_local_ray, stop_process_group
from ray.rllib.algorithms.algorithm import Algorithm
from ray_nodes import LocalCluster, ray_env
from test_distributed import TINY_PPO, assert_runners_hold_the_learners_weights, distributed_algo


@pytest.fixture
def cluster():
    """The head, started by the test, the driver connected to it; the test adds nodes.
    The shared local Ray, if running, is back after."""
    import ray

    had_ray = ray.is_initialized()
    ray.shutdown()
    nodes = LocalCluster()
    try:
        yield nodes
    finally:
        nodes.shutdown()
        if had_ray:
            start_local_ray()


def runner_nodes(algo_obj: Algorithm) -> list[str]:
    """The node id of every healthy remote env runner."""

    def node_id(runner: object) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    return algo_obj.env_runner_group.foreach_env_runner(node_id, local_env_runner=False)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition()` every 0.25 s until it holds; fail naming `what` after `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s} s")
        time.sleep(0.25)


def driver_env() -> dict[str, str]:
    """The environment of a driver started by a test: a node's, with this test run's
    import path (the package from this checkout)."""
    return {**ray_env(), "PYTHONPATH": os.pathsep.join(sys.path)}


TINY_PPO_PARAMS = {"train_batch_size_per_learner": 128, "minibatch_size": 64, "num_epochs": 1}


@pytest.mark.integration
def test_an_env_runner_samples_on_the_node_with_its_resource(cluster) -> None:
    second = cluster.add_node(resources={"node2": 1})
    algo_obj = distributed_algo("ppo", {"env_runners": 1, "env_runner_resources": {"node2": 1}},
                                params=TINY_PPO_PARAMS, num_envs=2)
    try:
        assert runner_nodes(algo_obj) == [second.node_id]
        result = algo_obj.train()
    finally:
        algo_obj.stop()
    assert result["env_runners"]["num_env_steps_sampled"] == 128


@pytest.mark.integration
def test_a_lost_env_runner_is_restarted_on_the_head(cluster) -> None:
    import ray

    second = cluster.add_node(resources={"node2": 1})

    @ray.remote(num_cpus=1, resources={"head": 1})
    class OtherWork:
        """Another job holding the head's CPU while the training starts."""

        def ready(self) -> bool:
            return True

    other = OtherWork.remote()
    ray.get(other.ready.remote(), timeout=60)
    # The runner (1 CPU) finds a free CPU on the second node only.
    algo_obj = distributed_algo("ppo", {"env_runners": 1}, params=TINY_PPO_PARAMS, num_envs=2)
    try:
        assert runner_nodes(algo_obj) == [second.node_id]
        first = algo_obj.train()
        cluster.kill_raylet(second)
        ray.kill(other)  # the other job ends: the head's CPU is free for the runner
        results = []
        for _ in range(30):
            results.append(algo_obj.train())
            if runner_nodes(algo_obj) == [cluster.head.node_id] and len(results) >= 3:
                break
        healthy = runner_nodes(algo_obj)
        sampled = algo_obj.env_runner_group.foreach_env_runner(
            lambda runner: runner.num_env_steps_sampled_lifetime, local_env_runner=False)
        assert_runners_hold_the_learners_weights(algo_obj)
    finally:
        algo_obj.stop()
    assert healthy == [cluster.head.node_id], "the runner was not restarted on the head"
    assert results[-1]["env_runners"]["num_env_steps_sampled"] == 128
    assert sampled[0] >= 128  # the restarted runner sampled on the head
    lifetime = [r["env_runners"]["num_env_steps_sampled_lifetime"] for r in [first, *results]]
    assert lifetime == sorted(lifetime) and lifetime[-1] > lifetime[0]


@pytest.mark.integration
def test_train_joined_with_address_samples_on_both_nodes(cluster, tmp_path) -> None:
    second = cluster.add_node(resources={"node2": 1})
    # Two runners of 1 CPU on two nodes of 1 CPU: one runner on each (the driver, with
    # its learner, reserves nothing outside Tune).
    out = subprocess.run(
        [sys.executable, "-m", "lwmecps_rllib.train", *TINY_PPO, "--iterations", "2",
         "--env-runners", "2", "--address", cluster.address, "--output", str(tmp_path / "r")],
        env=driver_env(), capture_output=True,
        text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    history = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [m["env/env_steps_lifetime"] for m in history] == [128, 256]
    assert sorted(runner_actor_nodes()) == sorted([cluster.head.node_id, second.node_id])


def runner_actor_nodes() -> list[str]:
    """The node of every env runner actor the cluster has had (ended ones too), from the
    GCS's actor table (the state API needs a dashboard; these nodes run none)."""
    from ray._private.state import state

    return [a["Address"]["NodeID"] for a in state.actor_table(None).values()
            if "EnvRunner" in a["ActorClassName"]]


# A sweep of three short PPO trials on the two nodes: each trial's main process takes the
# one CPU of a node (no remote runners), so two run side by side, one per node.
NODE_SWEEP = {
    "name": "nodes", "algorithm": "ppo", "env": "LWMECPSEnv3", "scenario": "testbed-4bs",
    "num_envs": 2, "preset": None, "params": TINY_PPO_PARAMS, "model": {"hidden": [16]},
    "search_space": {"learning_rate": {"grid": [1.0e-4, 3.0e-4, 1.0e-3]}},
    "search": {"algorithm": "grid", "num_samples": 1, "max_concurrent_trials": 2},
    "scheduler": {"type": "fifo"}, "stop": {"training_iteration": 3},
    "checkpoint": {"frequency": 1, "num_to_keep": 2}, "max_failures": 2,
    "resources": {"cpu": 1}, "evaluation": {"enabled": False}, "wandb": {"enabled": False},
}


def start_sweep(cluster: LocalCluster, tmp_path: Path, **changes: object
                ) -> tuple[subprocess.Popen, Path]:
    """`python -m lwmecps_rllib.tune --address HEAD` on NODE_SWEEP with `changes`, in the
    background (output in tmp_path/sweep.log).

    Returns:
        The process and the sweep folder.
    """
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({**NODE_SWEEP, **changes}))
    with open(tmp_path / "sweep.log", "w") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "lwmecps_rllib.tune", "--config", str(config), "--address",
             cluster.address, "--storage-path", str(tmp_path / "tune"), "--registry",
             str(tmp_path / "registry.sqlite")],
            env=driver_env(), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, tmp_path / "tune" / "nodes"


def finish(proc: subprocess.Popen, tmp_path: Path, timeout_s: float = 300) -> dict:
    """Wait for the sweep process; its summary.json (the log on failure)."""
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_process_group(proc)
        code = None
    log = (tmp_path / "sweep.log").read_text(errors="replace")
    assert code == 0, f"sweep exited {code}:\n{log[-4000:]}"
    return json.loads((tmp_path / "tune" / "nodes" / "summary.json").read_text())


def trial_history(folder: Path) -> dict[str, list[tuple[int, str]]]:
    """Per trial folder: (training_iteration, node_id) of every result, in order (a line
    Tune is still writing is left for the next look)."""
    out = {}
    for results in sorted(folder.glob("*/result.json")):
        lines = results.read_text().split("\n")[:-1]  # whole lines end with a newline
        rows = [json.loads(line) for line in lines if line.strip()]
        out[results.parent.name] = [(r["training_iteration"], r["node_id"]) for r in rows]
    return out


@pytest.mark.integration
def test_a_sweep_joined_with_address_runs_trials_on_both_nodes(cluster, tmp_path) -> None:
    second = cluster.add_node(resources={"node2": 1})
    proc, _ = start_sweep(cluster, tmp_path)
    summary = finish(proc, tmp_path)
    assert summary["num_trials"] == 3 and summary["num_errors"] == 0
    assert {t["node_id"] for t in summary["trials"]} == {cluster.head.node_id, second.node_id}
    assert all(t["iterations"] == 3 for t in summary["trials"])
    assert summary["model_id"]


@pytest.mark.integration
def test_a_sweep_retries_the_trial_lost_with_its_node_from_its_checkpoint(cluster,
                                                                          tmp_path) -> None:
    from lwmecps_rllib.model_registry import ModelRegistry

    second = cluster.add_node(resources={"node2": 1})
    iterations = 12
    proc, folder = start_sweep(cluster, tmp_path, stop={"training_iteration": iterations})

    def on_second_node_after_two() -> bool:
        return any(sum(node == second.node_id for _, node in rows) >= 2
                   for rows in trial_history(folder).values())

    try:
        wait_until(on_second_node_after_two, 180, "no trial reached 2 iterations on node 2")
        before = trial_history(folder)
        cluster.kill_raylet(second)
    except BaseException:
        stop_process_group(proc)
        raise
    summary = finish(proc, tmp_path)
    history = trial_history(folder)
    assert summary["num_trials"] == 3 and summary["num_errors"] == 0
    assert all(t["iterations"] == iterations for t in summary["trials"])
    # (A trial that has only just started has no result yet.)
    lost = [name for name, rows in before.items() if rows and rows[-1][1] == second.node_id]
    assert len(lost) == 1
    for name, rows in history.items():
        steps = [i for i, _ in rows]
        if name not in lost:  # never repeated: each iteration once
            assert steps == list(range(1, iterations + 1)), (name, rows)
            continue
        # Continued on the head from its last checkpoint (one every iteration): what ran
        # on node 2 is 1..k, what ran on the head goes on from a checkpoint c <= k, c >= 1.
        assert rows[-1][1] == cluster.head.node_id, f"the lost trial did not move: {rows}"
        moved = next(k for k, (_, node) in enumerate(rows) if node != second.node_id)
        assert steps[:moved] == list(range(1, moved + 1)), rows
        assert 2 <= steps[moved] <= moved + 1, f"not continued from a checkpoint: {rows}"
        assert steps[moved:] == list(range(steps[moved], iterations + 1)), rows
        assert {node for _, node in rows[moved:]} == {cluster.head.node_id}
    registry = ModelRegistry(tmp_path / "registry.sqlite")
    models = registry.list()
    assert [m.id for m in models] == [summary["model_id"]]
    registry.verify(models[0])
