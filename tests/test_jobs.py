"""Training jobs: the task model, the RayJob resource (schema, emulated Kubernetes API),
and real jobs on a real Ray head through the Job Submission API."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import kuberay_crds_dir
from pydantic import ValidationError

from lwmecps_rllib import jobs
from lwmecps_rllib.jobs import (
    JobError,
    RayJobCRLauncher,
    RayJobsLauncher,
    TrainingService,
    TrainingTask,
    rayjob_manifest,
)

ROOT = Path(__file__).resolve().parents[1]


def test_task_fields_are_checked_by_name():
    with pytest.raises(ValidationError, match="model_type"):
        TrainingTask(name="a", model_type="sarsa")
    with pytest.raises(ValidationError, match="name"):
        TrainingTask(name="Bad_Name")
    with pytest.raises(ValidationError, match="total_episodes"):
        TrainingTask(name="a", total_episodes=0)
    with pytest.raises(ValidationError, match="colour"):
        TrainingTask(name="a", colour="red")
    with pytest.raises(ValidationError, match="env"):
        TrainingTask(name="a", env="CartPole-v1")


def test_entrypoints():
    t = TrainingTask(name="ppo-1", model_type="ppo", total_episodes=50,
                     parameters={"learning_rate": 0.001, "epsilon": 0.2}, output="/data")
    assert t.entrypoint() == ("python -m lwmecps_rllib.train --algo ppo --env LWMECPSEnv3 "
                              "--scenario testbed-4bs --episodes 50 --seed 0 --output "
                              "/data/ppo-1 --param epsilon=0.2 --param learning_rate=0.001")
    s = TrainingTask(name="sw", sweep="tune_configs/smoke.yaml", output="/data")
    assert s.entrypoint("/opt/py") == ("/opt/py -m lwmecps_rllib.tune --config "
                                       "tune_configs/smoke.yaml --name sw --storage-path "
                                       "/data/tune")


def test_cli_rejects_bad_task_naming_the_field(capsys):
    assert jobs.main(["--address", "http://127.0.0.1:9", "submit", "--name", "x",
                      "--model-type", "sarsa"]) == 2
    assert "model_type" in capsys.readouterr().err


def crd_schema(kind: str) -> dict:
    doc = yaml.safe_load((kuberay_crds_dir() / f"ray.io_{kind.lower()}s.yaml").read_text())
    (version,) = [v for v in doc["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("mode", ["selector", "spec"])
def test_rayjob_manifest_matches_kuberay_schema(mode):
    import jsonschema

    task = TrainingTask(name="sweep-1", sweep="tune_configs/smoke.yaml", output="/data")
    if mode == "spec":
        cluster = next(d for d in yaml.safe_load_all((ROOT / "k8s" / "raycluster.yaml")
                       .read_text()) if d["kind"] == "RayCluster")
        body = rayjob_manifest(task, "lwmecps", cluster_spec=cluster["spec"])
        assert body["spec"]["shutdownAfterJobFinishes"] is True
    else:
        body = rayjob_manifest(task, "lwmecps", cluster_selector={"ray.io/cluster": "lwmecps"})
    jsonschema.validate(body, crd_schema("RayJob"))
    assert body["spec"]["entrypoint"].startswith("python -m lwmecps_rllib.tune")
    with pytest.raises(ValueError, match="exactly one"):
        rayjob_manifest(task, "ns")


def k8s_client(url: str):
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = str(url).rstrip("/")
    return client.ApiClient(cfg)


async def test_rayjob_resource_lifecycle_on_emulated_api(kmock):
    launcher = RayJobCRLauncher(k8s_client(kmock.url), "lwmecps")
    service = TrainingService(launcher)
    await service.create_task(TrainingTask(name="ppo-1", total_episodes=10))
    assert await service.start_training("ppo-1") == "ppo-1"
    stored = kmock.objects["ray.io/v1/rayjobs", "lwmecps", "ppo-1"]
    assert stored["spec"]["clusterSelector"] == {"ray.io/cluster": "lwmecps"}
    assert "--episodes 10" in stored["spec"]["entrypoint"]
    assert await service.get_status("ppo-1") == "PENDING"
    with pytest.raises(JobError, match="no dashboard"):
        await service.get_logs("ppo-1")
    # What the KubeRay operator would write.
    stored.patch({"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}})
    assert await service.get_status("ppo-1") == "RUNNING"
    assert await service.stop("ppo-1") is True
    assert kmock.objects["ray.io/v1/rayjobs", "lwmecps", "ppo-1"]["spec"]["suspend"] is True
    with pytest.raises(JobError, match="404"):
        await service.get_status("nope")
    with pytest.raises(JobError, match="exists"):
        await service.create_task(TrainingTask(name="ppo-1"))
    with pytest.raises(JobError, match="unknown task"):
        await service.start_training("other")


@pytest.mark.integration
def test_jobs_on_a_real_ray_head(ray_head, tmp_path):
    sweep = yaml.safe_load((ROOT / "tune_configs" / "smoke.yaml").read_text())
    sweep["wandb"] = {"enabled": False}
    sweep_file = tmp_path / "smoke.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    registry = tmp_path / "reg.sqlite"
    launcher = RayJobsLauncher(ray_head, runtime_env={"env_vars": {
        "LWMECPS_REGISTRY": str(registry), "RAY_AUTH_MODE": "disabled"}})
    service = TrainingService(launcher)

    async def scenario() -> None:
        await service.create_task(TrainingTask(name="sweep-job", sweep=str(sweep_file),
                                               output=str(tmp_path / "out")))
        await service.create_task(TrainingTask(name="long-job", total_episodes=10**7,
                                               output=str(tmp_path / "out")))
        job = await service.start_training("sweep-job")
        assert await service.wait(job, timeout=400) == "SUCCEEDED", \
            await service.get_logs(job)
        logs = await service.get_logs(job)
        assert "sweep sweep-job: 2 trials (0 failed)" in logs
        assert "registered: ppo-" in logs
        long = await service.start_training("long-job")
        await service.wait(long, timeout=120, states=("RUNNING",))
        assert await service.stop(long) is True
        assert await service.wait(long, timeout=60) == "STOPPED"
        with pytest.raises(JobError):
            await service.get_status("never-submitted")

    asyncio.run(scenario())
    summary = json.loads((tmp_path / "out" / "tune" / "sweep-job" / "summary.json").read_text())
    from lwmecps_rllib.model_registry import ModelRegistry

    assert ModelRegistry(registry).get(summary["model_id"]).stage == "candidate"
    assert os.path.exists(summary["best"]["checkpoint"])


def test_a_task_is_checked_through_the_run_specs() -> None:
    task = TrainingTask(name="ppo-2", model_type="dqn", parameters={"learning_rate": 1e-3},
                        total_episodes=50, preset="recommended")
    assert task.training_spec().budget.episodes == 50
    assert "--preset recommended" in task.entrypoint()
    with pytest.raises(ValidationError, match="learning_rate must be a number > 0"):
        TrainingTask(name="x", parameters={"learning_rate": -1.0})
    with pytest.raises(ValidationError, match="learning_rat"):
        TrainingTask(name="x", parameters={"learning_rat": 1.0})
