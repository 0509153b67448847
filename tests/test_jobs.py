"""Training jobs: the task model, the RayJob resource (schema, emulated Kubernetes API),
and real jobs on a real Ray head through the Job Submission API."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import free_port, kuberay_crds_dir
from pydantic import ValidationError

from lwmecps_rllib import jobs
from lwmecps_rllib.jobs import (
    DEPLOYMENT_STATES,
    CallPolicy,
    JobError,
    RayJobCRLauncher,
    RayJobsLauncher,
    TrainingService,
    TrainingTask,
    rayjob_manifest,
    rayjob_state,
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


# --------------------------------------------------------------------------- KubeRay's rules
#: KubeRay's JobDeploymentStatus values (ray-operator/apis/ray/v1/rayjob_types.go).
KUBERAY_DEPLOYMENT_STATUSES = {"", "Initializing", "Running", "Complete", "Failed",
                               "ValidationFailed", "Suspending", "Suspended", "Retrying",
                               "Waiting", "Scheduling", "Scheduled"}


@pytest.mark.parametrize("name", ["a", "ppo-1", "a" * 47, "sweep-2026-default"])
def test_names_kuberay_accepts(name):
    assert TrainingTask(name=name).name == name


@pytest.mark.parametrize("name", ["a" * 48, "1ppo", "ppo-", "-ppo", "Ppo", "ppo_1", "ppo.1",
                                  ""])
def test_names_kuberay_refuses_are_refused_naming_the_field_and_the_rule(name):
    with pytest.raises(ValidationError) as err:
        TrainingTask(name=name)
    (e,) = err.value.errors()
    assert e["loc"] == ("name",)
    assert "at most 47 characters" in e["msg"] and "starting with a letter" in e["msg"]


def test_every_kuberay_deployment_status_has_a_state():
    assert set(DEPLOYMENT_STATES) >= KUBERAY_DEPLOYMENT_STATUSES


@pytest.mark.parametrize(("status", "state"), [
    ({}, "PENDING"),
    ({"jobDeploymentStatus": "Initializing"}, "PENDING"),
    ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, "PENDING"),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, "RUNNING"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, "SUCCEEDED"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, "STOPPED"),
    # KubeRay's verdict wins over a Ray status it has stopped updating.
    ({"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed"}, "FAILED"),
    ({"jobDeploymentStatus": "ValidationFailed", "jobStatus": "RUNNING"}, "FAILED"),
    ({"jobDeploymentStatus": "Failed", "jobStatus": "RUNNING",
      "reason": "DeadlineExceeded"}, "FAILED"),
    ({"jobDeploymentStatus": "Suspended"}, "STOPPED"),
    ({"jobDeploymentStatus": "Suspending", "jobStatus": "RUNNING"}, "RUNNING"),
    ({"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED"}, "PENDING"),
])
def test_rayjob_states(status, state):
    assert rayjob_state("j", status) == state


def test_rayjob_states_that_make_no_sense_are_errors():
    with pytest.raises(JobError, match="unknown jobDeploymentStatus 'Exploded'"):
        rayjob_state("j", {"jobDeploymentStatus": "Exploded"})
    with pytest.raises(JobError, match="Complete without a final job status"):
        rayjob_state("j", {"jobDeploymentStatus": "Complete", "jobStatus": "RUNNING"})


async def test_wait_ends_when_kuberay_refuses_the_rayjob(kmock):
    service = TrainingService(RayJobCRLauncher(k8s_client(kmock.url), "lwmecps"))
    await service.create_task(TrainingTask(name="ppo-1", total_episodes=10))
    await service.start_training("ppo-1")
    kmock.objects["ray.io/v1/rayjobs", "lwmecps", "ppo-1"].patch({"status": {
        "jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed",
        "message": "the ClusterSelector mode doesn't support the suspend operation"}})
    t0 = time.monotonic()
    assert await service.wait("ppo-1", timeout=30, poll=0.05) == "FAILED"
    assert time.monotonic() - t0 < 10


# --------------------------------------------------------------------------- fake servers
class FakeDashboard(BaseHTTPRequestHandler):
    """The part of Ray's Jobs API the launcher uses, recording every request."""

    calls: list[tuple[str, str]]

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path))
        if self.path == "/api/version":
            self._answer({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})
        elif self.path.endswith("/logs"):
            self._answer({"logs": "iteration 1\n"})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        self.calls.append(("POST", self.path))
        if self.path.endswith("/stop"):
            self._answer({"stopped": True})
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def dashboard() -> Iterator[tuple[str, list]]:
    """A fake Ray dashboard on a free port: (URL, recorded calls)."""
    calls: list[tuple[str, str]] = []
    handler = type("Handler", (FakeDashboard,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung Ray head)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


FAST = CallPolicy(timeout_s=0.3, submit_timeout_s=0.3, retries=2, backoff_s=0.01,
                  backoff_max_s=0.02)


# --------------------------------------------------------------------------- stop and logs
def put_rayjob(kmock, name: str, spec: dict, status: dict) -> None:
    kmock.objects["ray.io/v1/rayjobs", "lwmecps", name] = {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": name, "namespace": "lwmecps"}, "spec": spec, "status": status}


RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": "ppo-1-x7k2",
           "dashboardURL": "lwmecps-head-svc.lwmecps.svc.cluster.local:8265"}


async def test_stop_on_an_existing_cluster_goes_through_the_dashboard_not_suspend(kmock,
                                                                                  dashboard):
    url, calls = dashboard
    put_rayjob(kmock, "ppo-1", {"entrypoint": "x", "clusterSelector": {"ray.io/cluster": "c"}},
               RUNNING)
    service = TrainingService(RayJobCRLauncher(k8s_client(kmock.url), "lwmecps",
                                               dashboard=url))
    assert await service.stop("ppo-1") is True
    assert ("POST", "/api/jobs/ppo-1-x7k2/stop") in calls
    assert "suspend" not in kmock.objects["ray.io/v1/rayjobs", "lwmecps", "ppo-1"]["spec"]
    assert await service.get_logs("ppo-1") == "iteration 1\n"
    assert ("GET", "/api/jobs/ppo-1-x7k2/logs") in calls


async def test_stop_of_a_job_with_its_own_cluster_suspends_it(kmock):
    put_rayjob(kmock, "ppo-2", {"entrypoint": "x", "rayClusterSpec": {},
                                "shutdownAfterJobFinishes": True}, RUNNING)
    service = TrainingService(RayJobCRLauncher(k8s_client(kmock.url), "lwmecps"))
    assert await service.stop("ppo-2") is True
    assert kmock.objects["ray.io/v1/rayjobs", "lwmecps", "ppo-2"]["spec"]["suspend"] is True


async def test_stop_before_kuberay_submitted_deletes_and_after_the_end_does_nothing(kmock):
    selector = {"entrypoint": "x", "clusterSelector": {"ray.io/cluster": "c"}}
    put_rayjob(kmock, "ppo-3", selector, {"jobDeploymentStatus": "Initializing"})
    put_rayjob(kmock, "ppo-4", selector, {"jobDeploymentStatus": "Complete",
                                          "jobStatus": "SUCCEEDED", **{
                                              k: RUNNING[k] for k in ("jobId", "dashboardURL")}})
    service = TrainingService(RayJobCRLauncher(k8s_client(kmock.url), "lwmecps"))
    assert await service.stop("ppo-3") is True
    with pytest.raises(JobError, match="404"):
        await service.get_status("ppo-3")
    assert await service.stop("ppo-4") is False


async def test_logs_from_kuberays_in_cluster_address_say_to_give_a_reachable_one(kmock):
    dead = f"127.0.0.1:{free_port()}"
    put_rayjob(kmock, "ppo-5", {"entrypoint": "x", "clusterSelector": {"ray.io/cluster": "c"}},
               {**RUNNING, "dashboardURL": dead})
    service = TrainingService(RayJobCRLauncher(k8s_client(kmock.url), "lwmecps"))
    with pytest.raises(JobError, match=rf"http://{dead}.*--address"):
        await service.get_logs("ppo-5")


# --------------------------------------------------------------------------- unreachable heads
def test_a_silent_head_fails_within_the_timeout_naming_the_address(silent):
    launcher = RayJobsLauncher(silent.url, policy=FAST)
    t0 = time.monotonic()
    with pytest.raises(JobError, match=rf"no answer from the Ray dashboard at {silent.url}"):
        launcher.status("ppo-1")
    assert time.monotonic() - t0 < 5
    assert len(silent.accepted) == 3  # the first try and two retries, each timed out
    n = len(silent.accepted)
    with pytest.raises(JobError, match=silent.url):
        launcher.submit(TrainingTask(name="ppo-1"))
    assert len(silent.accepted) == n + 1  # a submission is not repeated


def test_a_closed_port_fails_at_once_naming_the_address():
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    for call in (lambda la: la.status("x"), lambda la: la.logs("x"), lambda la: la.stop("x")):
        with pytest.raises(JobError, match=rf"no answer from the Ray dashboard at {url}"):
            call(RayJobsLauncher(url, policy=FAST))
    assert time.monotonic() - t0 < 5


def test_a_silent_kubernetes_api_fails_within_the_timeout_naming_it(silent):
    launcher = RayJobCRLauncher(k8s_client(silent.url), "lwmecps",
                                policy=CallPolicy(timeout_s=0.3, retries=1, backoff_s=0.01))
    t0 = time.monotonic()
    with pytest.raises(JobError, match=rf"no answer from the Kubernetes API at {silent.url}"):
        launcher.status("ppo-1")
    assert time.monotonic() - t0 < 15


async def test_wait_on_a_silent_head_ends_with_an_error(silent):
    service = TrainingService(RayJobsLauncher(silent.url, policy=FAST))
    with pytest.raises(JobError, match=silent.url):
        await service.wait("ppo-1", timeout=3600, poll=0.01)


@pytest.mark.parametrize("command", [["status", "ppo-1"], ["logs", "ppo-1"], ["stop", "ppo-1"]])
@pytest.mark.parametrize("kind", ["silent", "closed"])
def test_cli_prints_one_line_for_an_unreachable_head(command, kind, silent, capsys):
    url = silent.url if kind == "silent" else f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    code = jobs.main(["--address", url, "--timeout", "0.3", "--submit-timeout", "0.3",
                      "--retries", "1", *command])
    out = capsys.readouterr()
    assert code != 0
    assert time.monotonic() - t0 < 10
    assert "Traceback" not in out.err + out.out
    (line,) = out.err.strip().splitlines()
    assert line.startswith("error: ") and url in line


def test_call_policy_checks_its_fields():
    with pytest.raises(ValidationError, match="timeout_s"):
        CallPolicy(timeout_s=0)
    with pytest.raises(ValidationError, match="retries"):
        CallPolicy(retries=-1)
