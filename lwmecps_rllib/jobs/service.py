"""Training jobs: a training task run as a Ray Job, or as a KubeRay `RayJob`.

The reference ran training inside its FastAPI server; here a task becomes a job on a Ray
cluster, so it survives the caller and runs where the CPUs are:

* :class:`RayJobsLauncher` submits the entry point through Ray's Job Submission API to a
  dashboard address (a local head by default, `http://127.0.0.1:8265`);
* :class:`~lwmecps_rllib.jobs.kuberay.RayJobCRLauncher` creates a `ray.io/v1` `RayJob`
  custom resource through the Kubernetes API (an injected `ApiClient`), for KubeRay.

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
import functools
import json
import logging
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from lwmecps_rllib.cli import RESOURCE_FLAGS
from lwmecps_rllib.envs.names import ENV_NAMES
from lwmecps_rllib.spec import EnvOptions, TrainingSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Job states, as Ray's Job Submission API names them.
JOB_STATES = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")
TERMINAL_STATES = ("STOPPED", "SUCCEEDED", "FAILED")
DEFAULT_DASHBOARD = "http://127.0.0.1:8265"

#: KubeRay's rule for a RayJob name (`ValidateRayJobMetadata`): a DNS-1035 label of at most
#: 47 characters, since KubeRay appends 6 characters to it for the RayCluster it makes and a
#: RayCluster name is at most 53 (63 minus the `-serve-svc` of its Service).
MAX_NAME_LENGTH = 47
NAME_PATTERN = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")



class JobError(Exception):
    """A job operation that failed (unknown task, unreachable cluster, rejected job)."""


class TrainingTask(BaseModel):
    """A training task: train one algorithm, or run a sweep file.

    Example:
        >>> TrainingTask(name="ppo-1", model_type="ppo", total_episodes=2000,
        ...              parameters={"learning_rate": 3e-4})
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Job name: a DNS-1035 label of at most 47 characters "
                                  "(KubeRay's RayJob name rule).")
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
    # The training's resources; for a sweep, each trial's (over the file's `resources:`).
    env_runners: int | None = Field(None, ge=0, description="Remote env runners (null: the "
                                                            "sweep file's, else 0: sample "
                                                            "in the main process).")
    cpus_per_env_runner: float | None = Field(None, ge=0, description="CPUs per env runner "
                                                                      "(null: the sweep "
                                                                      "file's, else 1).")
    learners: int | None = Field(None, ge=0, description="Remote learners (torch DDP; null: "
                                                         "the sweep file's, else 0: learn "
                                                         "in the main process).")
    cpus_per_learner: float | None = Field(None, ge=0, description="CPUs per learner (null: "
                                                                   "the sweep file's, else 1 "
                                                                   "without GPUs, 0 with).")
    gpus_per_learner: float | None = Field(None, ge=0, description="GPUs per learner "
                                                                   "(null: the sweep file's, "
                                                                   "else 0).")

    @field_validator("name")
    @classmethod
    def _kuberay_name(cls, v: str) -> str:
        if len(v) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(v):
            raise ValueError(
                f"{v!r} is not a RayJob name: at most {MAX_NAME_LENGTH} characters, lowercase "
                "letters, digits and '-', starting with a letter and ending with a letter "
                "or a digit (KubeRay's rule: a DNS-1035 label short enough for the "
                "RayCluster name made from it)")
        return v

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
        if self.sweep and self.resource_fields() and Path(self.sweep).is_file():
            self.sweep_config()  # checked here when the file is here too
        if not self.sweep:
            from lwmecps_rllib.algorithms import get_algorithm_class
            from lwmecps_rllib.algorithms.catalog import check_learners

            self.env_options()
            spec = self.training_spec()
            check_learners(spec)
            try:  # the algorithm's own checks, before anything is submitted
                get_algorithm_class(spec.algorithm).get_default_config().training(**spec.params)
            except TypeError as exc:
                raise ValueError(f"parameters: {exc}") from None
        return self

    def sweep_config(self) -> Any:
        """The sweep file with the task's resources over its `resources:` (what the job's
        `tune` command runs), checked.

        Raises:
            SweepError: naming the bad key (a `ValueError`).
        """
        from lwmecps_rllib.tune import load_sweep, override_sweep

        return override_sweep(load_sweep(self.sweep), resources=self.resource_fields())

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
                                   "resources": self.resource_fields(),
                                   "budget": {"episodes": self.total_episodes}})

    def resource_fields(self) -> dict[str, Any]:
        """The training's resources the task sets (`train`'s flags of the same names)."""
        return {name: getattr(self, name) for name in RESOURCE_FLAGS
                if getattr(self, name) is not None}

    def resource_args(self) -> list[str]:
        """The resource flags of `train` or `tune` (each trial's, for a sweep) the task
        sets."""
        args = []
        for name, value in self.resource_fields().items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        return args

    def entrypoint(self, python: str = "python") -> str:
        """The shell command the job runs."""
        if self.sweep:
            args = [python, "-m", "lwmecps_rllib.tune", "--config", self.sweep, "--name",
                    self.name, "--storage-path", f"{self.output}/tune"]
            args += self.resource_args()
        else:
            args = [python, "-m", "lwmecps_rllib.train", "--algo", self.model_type,
                    "--env", self.env, "--scenario", self.scenario,
                    "--episodes", str(self.total_episodes), "--seed", str(self.seed),
                    "--output", f"{self.output}/{self.name}"]
            if self.preset:
                args += ["--preset", self.preset]
            if self.overwrite:
                args.append("--overwrite")
            args += self.resource_args()
            for key, value in sorted(self.parameters.items()):
                args += ["--param", f"{key}={json.dumps(value)}"]
        return shlex.join(args)


class Launcher(Protocol):
    """Where jobs run: submit, read status and logs, stop (blocking calls)."""

    def submit(self, task: TrainingTask) -> str: ...
    def status(self, job_id: str) -> str: ...
    def logs(self, job_id: str) -> str: ...
    def stop(self, job_id: str) -> bool: ...


def _network_errors() -> tuple[type[BaseException], ...]:
    """Errors of a request that got no answer: refused or reset connections and timeouts
    (`requests`' errors are `OSError`s; the Kubernetes client raises urllib3's)."""
    import urllib3

    return (OSError, urllib3.exceptions.HTTPError)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


class CallPolicy(BaseModel):
    """How a launcher calls a Ray dashboard or the Kubernetes API: a timeout on every
    request, and retries with exponential backoff of status reads that got no answer.

    Example:
        >>> CallPolicy(timeout_s=5, retries=2).timeout_s
        5.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(15.0, gt=0, description="Timeout of every request but a "
                                                     "submission (seconds, to connect and "
                                                     "for each read).")
    submit_timeout_s: float = Field(120.0, gt=0, description="Timeout of a submission and "
                                                             "its uploads (a head starts the "
                                                             "job's supervisor first).")
    retries: int = Field(3, ge=0, description="Retries of a status read that got no answer.")
    backoff_s: float = Field(0.5, ge=0, description="Wait before the first retry (seconds); "
                                                    "doubles each retry.")
    backoff_max_s: float = Field(8.0, ge=0, description="Longest wait between retries.")

    def retrying(self, what: str, fn: Callable[[], T],
                 transient: Callable[[BaseException], bool],
                 sleep: Callable[[float], None] = time.sleep) -> T:
        """`fn()`, called again after an error `transient` accepts, up to `retries` times.

        Raises:
            The last error when every attempt failed, or the first one that is not
            transient.
        """
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:
                if attempt == self.retries or not transient(exc):
                    raise
                log.warning("%s: %s; retry %d/%d in %.2f s", what, _short(exc), attempt + 1,
                            self.retries, delay)
            sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)
        raise AssertionError("unreachable")  # pragma: no cover


@functools.cache
def _timed_client_class() -> type:
    """Ray's `JobSubmissionClient` with a timeout on every request it sends (Ray's own
    client sends them without one, so a head that accepts and never answers hangs it)."""
    from ray.job_submission import JobSubmissionClient

    class TimedJobSubmissionClient(JobSubmissionClient):
        def __init__(self, address: str, policy: CallPolicy, **kwargs: Any) -> None:
            self._policy = policy  # before the version check the parent makes
            super().__init__(address, **kwargs)

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            submits = (method == "POST" and endpoint == "/api/jobs/") or (
                method == "PUT" and endpoint.startswith("/api/packages/"))
            kwargs.setdefault("timeout", self._policy.submit_timeout_s if submits
                              else self._policy.timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedJobSubmissionClient


class RayJobsLauncher:
    """Ray's Job Submission API on a dashboard address.

    Every request has the policy's timeout; a status read is retried with backoff when it
    got no answer; every failure is a :class:`JobError` naming the address.

    Args:
        address: Dashboard URL (`http://127.0.0.1:8265`).
        runtime_env: Ray runtime env of every job (e.g. `{"working_dir": "."}`).
        python: Interpreter the entry point calls on the cluster.
        client: An existing `JobSubmissionClient` (made on first use otherwise).
        policy: Timeouts and retries (:class:`CallPolicy` defaults otherwise).
    """

    def __init__(self, address: str = DEFAULT_DASHBOARD, runtime_env: dict[str, Any] | None = None,
                 python: str = "python", client: Any = None,
                 policy: CallPolicy | None = None) -> None:
        self.address = address
        self.runtime_env = runtime_env
        self.python = python
        self.policy = policy if policy is not None else CallPolicy()
        self._client = client

    @property
    def client(self) -> Any:
        """The `JobSubmissionClient` (connects on first use; raises what the connection
        raised, see :meth:`_call`)."""
        if self._client is None:
            self._client = _timed_client_class()(self.address, self.policy)
        return self._client

    def _call(self, what: str, fn: Callable[[Any], T], *, retry: bool = False) -> T:
        """`fn(client)` under the policy (retried if `retry`).

        Raises:
            JobError: naming the address, for no answer, a refused token or an error answer.
        """
        from ray.exceptions import AuthenticationError

        network = _network_errors()
        try:
            if retry:
                return self.policy.retrying(f"{what} at {self.address}",
                                            lambda: fn(self.client),
                                            lambda exc: isinstance(exc, network))
            return fn(self.client)
        except network as exc:
            raise JobError(f"{what}: no answer from the Ray dashboard at {self.address}: "
                           f"{_short(exc)}") from exc
        except AuthenticationError as exc:
            raise JobError(f"{what}: the Ray dashboard at {self.address} refused the request "
                           f"(set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN): {exc}") from exc
        except (RuntimeError, ValueError) as exc:
            raise JobError(f"{what} at {self.address}: {exc}") from exc

    def submit(self, task: TrainingTask) -> str:
        """Submit the task's entry point; the job id is the task name."""
        return self._call(f"submit job {task.name!r}", lambda c: c.submit_job(
            entrypoint=task.entrypoint(self.python), submission_id=task.name,
            runtime_env=self.runtime_env, entrypoint_num_cpus=task.num_cpus,
            metadata={"lwmecps.model_type": task.model_type, "lwmecps.env": task.env,
                      "lwmecps.scenario": task.scenario}))

    def status(self, job_id: str) -> str:
        """`PENDING`, `RUNNING`, `STOPPED`, `SUCCEEDED` or `FAILED` (retried)."""
        return self._call(f"status of job {job_id!r}",
                          lambda c: str(c.get_job_status(job_id).value), retry=True)

    def logs(self, job_id: str) -> str:
        """The job's output so far."""
        return self._call(f"logs of job {job_id!r}", lambda c: c.get_job_logs(job_id))

    def stop(self, job_id: str) -> bool:
        """Ask the job to stop; True if it was running."""
        return bool(self._call(f"stop job {job_id!r}", lambda c: c.stop_job(job_id)))


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
