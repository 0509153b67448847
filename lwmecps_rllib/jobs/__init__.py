"""Training jobs: a task as a Ray Job or a KubeRay `RayJob` (see
:mod:`lwmecps_rllib.jobs.service` and, for KubeRay,
:mod:`lwmecps_rllib.jobs.kuberay`; the command line is `python -m lwmecps_rllib.jobs`)."""

from lwmecps_rllib.jobs.kuberay import (
    DEPLOYMENT_STATES,
    RAYJOB,
    RayJobCRLauncher,
    rayjob_manifest,
    rayjob_state,
)
from lwmecps_rllib.jobs.service import (
    DEFAULT_DASHBOARD,
    JOB_STATES,
    MAX_NAME_LENGTH,
    TERMINAL_STATES,
    CallPolicy,
    JobError,
    Launcher,
    RayJobsLauncher,
    TrainingService,
    TrainingTask,
)


def main(argv: list[str] | None = None) -> int:
    """`python -m lwmecps_rllib.jobs` (see :mod:`lwmecps_rllib.jobs.__main__`)."""
    from lwmecps_rllib.jobs.__main__ import main as cli

    return cli(argv)


__all__ = [
    "DEFAULT_DASHBOARD",
    "DEPLOYMENT_STATES",
    "JOB_STATES",
    "MAX_NAME_LENGTH",
    "RAYJOB",
    "TERMINAL_STATES",
    "CallPolicy",
    "JobError",
    "Launcher",
    "RayJobCRLauncher",
    "RayJobsLauncher",
    "TrainingService",
    "TrainingTask",
    "main",
    "rayjob_manifest",
    "rayjob_state",
]
