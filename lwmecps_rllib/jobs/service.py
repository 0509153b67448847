"""Training jobs: a training task run as a Ray Job, or as a KubeRay `RayJob`.

The reference ran training inside its FastAPI server; here a task becomes a job on a Ray
cluster, so it survives the caller and runs where the CPUs are:

* :class:`RayJobsLauncher` submits the entry point through Ray's Job Submission API to a
  dashboard address (a local head by default, `http://127.0.0.1:8265`);
* :class:`RayJobCRLauncher` creates a `ray.io/v1` `RayJob` custom resource through the
  Kubernetes API (an injected `ApiClient`), for KubeRay.

:class:`TrainingService` is the async service over either (`create_task`,
`start_training`, `get_status`, `get_logs`, `stop`). Nothing connects until a method
needs to. The command line wraps it::

    python -m lwmecps_rllib.jobs submit --name ppo-1 --model-type ppo --total-episodes 2000
    python -m lwmecps_rllib.jobs submit --name sweep-1 --sweep tune_configs/smoke.yaml
    python -m lwmecps_rllib.jobs status ppo-1
    python -m lwmecps_rllib.jobs logs ppo-1
    python -m lwmecps_rllib.jobs stop ppo-1
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from typing import Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from lwmecps_rllib.envs.names import ENV_NAMES
from lwmecps_rllib.spec import EnvOptions, TrainingSpec

#: Job states, as Ray's Job Submission API names them.
JOB_STATES = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")
TERMINAL_STATES = ("STOPPED", "SUCCEEDED", "FAILED")
DEFAULT_DASHBOARD = "http://127.0.0.1:8265"


class JobError(Exception):
    """A job operation that failed (unknown task, unreachable cluster, rejected job)."""


class TrainingTask(BaseModel):
    """A training task: train one algorithm, or run a sweep file.

    Example:
        >>> TrainingTask(name="ppo-1", model_type="ppo", total_episodes=2000,
        ...              parameters={"learning_rate": 3e-4})
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,46}[a-z0-9])?$",
                      description="Job name (DNS label: lowercase letters, digits, '-').")
    model_type: str = Field("ppo", description="Algorithm name or alias (`ppo`, `dqn`, ...).")
    parameters: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description="Hyper-parameters (`learning_rate`, ...).")
    total_episodes: int = Field(1000, gt=0, description="Episodes to train for.")
    env: str = Field("LWMECPSEnv3", description="Env name.")
    scenario: str = Field("testbed-4bs", description="Scenario name.")
    seed: int = Field(0, description="Seed.")
    sweep: str | None = Field(None, description="Run this sweep file with the tune entry "
                                                "point instead of training one config.")
    output: str = Field("runs/jobs", description="Folder for checkpoints and sweeps, "
                                                 "as seen by the cluster.")
    overwrite: bool = Field(False, description="Replace the run already in the task's output "
                                               "folder (training only; a sweep resumes).")
    num_cpus: float = Field(0.0, ge=0, description="CPUs reserved for the entry point "
                                                   "(its trials reserve their own).")
    preset: Literal["recommended"] | None = Field(
        None, description="Start from the algorithm's recommended settings on the scenario "
                          "(`lwmecps_rllib.presets`); `parameters` override them.")

    @field_validator("model_type")
    @classmethod
    def _known_algorithm(cls, v: str) -> str:
        from lwmecps_rllib.algorithms import algorithm_names

        if v not in algorithm_names():
            raise ValueError(f"must be one of {algorithm_names()}")
        return v

    @field_validator("env")
    @classmethod
    def _known_env(cls, v: str) -> str:
        if v not in ENV_NAMES:
            raise ValueError(f"must be one of {list(ENV_NAMES)}")
        return v

    @model_validator(mode="after")
    def _specs(self) -> TrainingTask:
        if self.sweep and self.overwrite:
            raise ValueError("overwrite: a sweep's folder is never overwritten (false with sweep)")
        if not self.sweep:
            from lwmecps_rllib.algorithms import get_algorithm_class

            self.env_options()
            spec = self.training_spec()
            try:  # the algorithm's own checks, before anything is submitted
                get_algorithm_class(spec.algorithm).get_default_config().training(**spec.params)
            except TypeError as exc:
                raise ValueError(f"parameters: {exc}") from None
        return self

    def env_options(self) -> EnvOptions:
        """The options of the env the task trains on (trace A)."""
        return EnvOptions.parse({"scenario": self.scenario, "trace": "a"})

    def training_spec(self) -> TrainingSpec:
        """What the task trains, as the `train` command builds it (before a preset).

        Raises:
            ValueError: naming the field (a `parameters.<name>` the algorithm does not
                take, or a bad value).
        """
        return TrainingSpec.parse({"algorithm": self.model_type,
                                   "params": dict(self.parameters), "seed": self.seed,
                                   "budget": {"episodes": self.total_episodes}})

    def entrypoint(self, python: str = "python") -> str:
        """The shell command the job runs."""
        if self.sweep:
            args = [python, "-m", "lwmecps_rllib.tune", "--config", self.sweep, "--name",
                    self.name, "--storage-path", f"{self.output}/tune"]
        else:
            args = [python, "-m", "lwmecps_rllib.train", "--algo", self.model_type,
                    "--env", self.env, "--scenario", self.scenario,
                    "--episodes", str(self.total_episodes), "--seed", str(self.seed),
                    "--output", f"{self.output}/{self.name}"]
            if self.preset:
                args += ["--preset", self.preset]
            if self.overwrite:
                args.append("--overwrite")
            for key, value in sorted(self.parameters.items()):
                args += ["--param", f"{key}={json.dumps(value)}"]
        return shlex.join(args)


class Launcher(Protocol):
    """Where jobs run: submit, read status and logs, stop (blocking calls)."""

    def submit(self, task: TrainingTask) -> str: ...
    def status(self, job_id: str) -> str: ...
    def logs(self, job_id: str) -> str: ...
    def stop(self, job_id: str) -> bool: ...


class RayJobsLauncher:
    """Ray's Job Submission API on a dashboard address.

    Args:
        address: Dashboard URL (`http://127.0.0.1:8265`).
        runtime_env: Ray runtime env of every job (e.g. `{"working_dir": "."}`).
        python: Interpreter the entry point calls on the cluster.
        client: An existing `JobSubmissionClient` (made on first use otherwise).
    """

    def __init__(self, address: str = DEFAULT_DASHBOARD, runtime_env: dict[str, Any] | None = None,
                 python: str = "python", client: Any = None) -> None:
        self.address = address
        self.runtime_env = runtime_env
        self.python = python
        self._client = client

    @property
    def client(self) -> Any:
        """The `JobSubmissionClient` (connects on first use)."""
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise JobError(f"cannot reach the Ray dashboard at {self.address}: {exc}") from exc
        return self._client

    def submit(self, task: TrainingTask) -> str:
        """Submit the task's entry point; the job id is the task name."""
        try:
            return self.client.submit_job(
                entrypoint=task.entrypoint(self.python), submission_id=task.name,
                runtime_env=self.runtime_env, entrypoint_num_cpus=task.num_cpus,
                metadata={"lwmecps.model_type": task.model_type, "lwmecps.env": task.env,
                          "lwmecps.scenario": task.scenario})
        except RuntimeError as exc:
            raise JobError(f"job {task.name!r} was not accepted: {exc}") from exc

    def status(self, job_id: str) -> str:
        """`PENDING`, `RUNNING`, `STOPPED`, `SUCCEEDED` or `FAILED`."""
        try:
            return str(self.client.get_job_status(job_id).value)
        except RuntimeError as exc:
            raise JobError(f"job {job_id!r}: {exc}") from exc

    def logs(self, job_id: str) -> str:
        """The job's output so far."""
        try:
            return self.client.get_job_logs(job_id)
        except RuntimeError as exc:
            raise JobError(f"job {job_id!r}: {exc}") from exc

    def stop(self, job_id: str) -> bool:
        """Ask the job to stop; True if it was running."""
        try:
            return bool(self.client.stop_job(job_id))
        except RuntimeError as exc:
            raise JobError(f"job {job_id!r}: {exc}") from exc


#: KubeRay's RayJob resource.
RAYJOB = {"group": "ray.io", "version": "v1", "plural": "rayjobs"}


def rayjob_manifest(task: TrainingTask, namespace: str, *, cluster_spec: dict | None = None,
                    cluster_selector: dict[str, str] | None = None,
                    python: str = "python") -> dict[str, Any]:
    """A `RayJob` that runs the task: on a new cluster (`cluster_spec`, KubeRay's
    `rayClusterSpec`, e.g. the `spec` of `k8s/raycluster.yaml`) deleted when the job ends,
    or on an existing one (`cluster_selector`, e.g. `{"ray.io/cluster": "lwmecps"}`)."""
    if (cluster_spec is None) == (cluster_selector is None):
        raise ValueError("give exactly one of cluster_spec and cluster_selector")
    spec: dict[str, Any] = {"entrypoint": task.entrypoint(python)}
    if task.num_cpus:
        spec["entrypointNumCpus"] = task.num_cpus
    if cluster_spec is not None:
        spec.update(rayClusterSpec=cluster_spec, shutdownAfterJobFinishes=True,
                    ttlSecondsAfterFinished=600)
    else:
        spec["clusterSelector"] = dict(cluster_selector or {})
    return {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": task.name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "lwmecps-rllib",
                                "lwmecps.io/model-type": task.model_type.replace("_", "-")}},
        "spec": spec,
    }


class RayJobCRLauncher:
    """KubeRay `RayJob` custom resources through the Kubernetes API.

    Args:
        api_client: A `kubernetes.client.ApiClient` (from kubeconfig, in-cluster config,
            or built by the caller); nothing connects until a method is called.
        namespace: Namespace of the RayJobs.
        cluster_spec: `rayClusterSpec` for a cluster per job, or
        cluster_selector: labels of an existing RayCluster to run on.
        python: Interpreter on the cluster's image.
    """

    def __init__(self, api_client: Any, namespace: str = "default", *,
                 cluster_spec: dict | None = None, cluster_selector: dict[str, str] | None = None,
                 python: str = "python") -> None:
        if cluster_spec is None and cluster_selector is None:
            cluster_selector = {"ray.io/cluster": "lwmecps"}
        self.api_client = api_client
        self.namespace = namespace
        self.cluster_spec = cluster_spec
        self.cluster_selector = cluster_selector
        self.python = python

    @property
    def api(self) -> Any:
        """`CustomObjectsApi` on the injected client."""
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(**RAYJOB, namespace=self.namespace, **kwargs)
        except ApiException as exc:
            raise JobError(f"{what}: Kubernetes API answered {exc.status} {exc.reason}") from exc

    def submit(self, task: TrainingTask) -> str:
        """Create the RayJob; its name is the job id."""
        body = rayjob_manifest(task, self.namespace, cluster_spec=self.cluster_spec,
                               cluster_selector=self.cluster_selector, python=self.python)
        self._call(f"create RayJob {task.name!r}", self.api.create_namespaced_custom_object,
                   body=body)
        return task.name

    def get(self, job_id: str) -> dict[str, Any]:
        """The RayJob object."""
        return self._call(f"RayJob {job_id!r}", self.api.get_namespaced_custom_object,
                          name=job_id)

    def status(self, job_id: str) -> str:
        """The Ray job status KubeRay reports (`PENDING` until the job is submitted)."""
        st = self.get(job_id).get("status") or {}
        if st.get("jobStatus") in JOB_STATES:
            return st["jobStatus"]
        if st.get("jobDeploymentStatus") == "Failed":
            return "FAILED"
        return "PENDING"

    def logs(self, job_id: str) -> str:
        """The job's output, read from the cluster's dashboard (`status.dashboardURL`)."""
        st = self.get(job_id).get("status") or {}
        url, ray_job = st.get("dashboardURL"), st.get("jobId")
        if not url or not ray_job:
            raise JobError(f"RayJob {job_id!r} has no dashboard or job id yet "
                           f"(deployment status {st.get('jobDeploymentStatus')!r})")
        base = url if "://" in url else f"http://{url}"
        return RayJobsLauncher(base).logs(ray_job)

    def stop(self, job_id: str) -> bool:
        """Suspend the RayJob (KubeRay stops the job and releases its cluster)."""
        running = self.status(job_id) not in TERMINAL_STATES
        self._call(f"suspend RayJob {job_id!r}", self.api.patch_namespaced_custom_object,
                   name=job_id, body={"spec": {"suspend": True}})
        return running


class TrainingService:
    """Create training tasks and run them as jobs (async; blocking calls go to threads).

    Args:
        launcher: Where jobs run (default: Ray's Job API on the local head).
    """

    def __init__(self, launcher: Launcher | None = None) -> None:
        self.launcher = launcher if launcher is not None else RayJobsLauncher()
        self.tasks: dict[str, TrainingTask] = {}

    async def create_task(self, task: TrainingTask | dict[str, Any]) -> TrainingTask:
        """Check and keep a task (not started yet).

        Raises:
            JobError: when a task of that name exists.
            pydantic.ValidationError: for a bad field (named in the message).
        """
        task = task if isinstance(task, TrainingTask) else TrainingTask(**task)
        if task.name in self.tasks:
            raise JobError(f"task {task.name!r} exists")
        self.tasks[task.name] = task
        return task

    def _task(self, name: str) -> TrainingTask:
        if name not in self.tasks:
            raise JobError(f"unknown task {name!r}; known: {sorted(self.tasks)}")
        return self.tasks[name]

    async def start_training(self, name: str) -> str:
        """Submit the task; returns the job id."""
        return await asyncio.to_thread(self.launcher.submit, self._task(name))

    async def get_status(self, job_id: str) -> str:
        """The job's state (one of :data:`JOB_STATES`)."""
        return await asyncio.to_thread(self.launcher.status, job_id)

    async def get_logs(self, job_id: str) -> str:
        """The job's output so far."""
        return await asyncio.to_thread(self.launcher.logs, job_id)

    async def stop(self, job_id: str) -> bool:
        """Stop the job; True if it was still running."""
        return await asyncio.to_thread(self.launcher.stop, job_id)

    async def wait(self, job_id: str, timeout: float = 600.0, poll: float = 1.0,
                   states: tuple[str, ...] = TERMINAL_STATES) -> str:
        """Poll until the job reaches one of `states`; its state.

        Raises:
            JobError: on timeout.
        """
        end = time.monotonic() + timeout
        while True:
            state = await self.get_status(job_id)
            if state in states:
                return state
            if time.monotonic() > end:
                raise JobError(f"job {job_id!r} still {state} after {timeout:.0f} s")
            await asyncio.sleep(poll)


# --------------------------------------------------------------------------- command line
