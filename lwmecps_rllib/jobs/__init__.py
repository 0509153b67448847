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

from lwmecps_rllib.jobs.service import (
    DEFAULT_DASHBOARD,
    JOB_STATES,
    RAYJOB,
    TERMINAL_STATES,
    JobError,
    Launcher,
    RayJobCRLauncher,
    RayJobsLauncher,
    TrainingService,
    TrainingTask,
    rayjob_manifest,
)


def main(argv: list[str] | None = None) -> int:
    """`python -m lwmecps_rllib.jobs` (see :mod:`lwmecps_rllib.jobs.__main__`)."""
    from lwmecps_rllib.jobs.__main__ import main as cli

    return cli(argv)


__all__ = [
    "DEFAULT_DASHBOARD",
    "JOB_STATES",
    "RAYJOB",
    "TERMINAL_STATES",
    "JobError",
    "Launcher",
    "RayJobCRLauncher",
    "RayJobsLauncher",
    "TrainingService",
    "TrainingTask",
    "main",
    "rayjob_manifest",
]
