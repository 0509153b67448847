"""KubeRay's side of training jobs: a task as a `ray.io/v1` `RayJob` custom resource,
created, watched and stopped through the Kubernetes API (an injected `ApiClient`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from lwmecps_rllib.jobs.service import (
    JOB_STATES,
    TERMINAL_STATES,
    CallPolicy,
    JobError,
    RayJobsLauncher,
    T,
    TrainingTask,
    _network_errors,
    _short,
)

log = logging.getLogger(__name__)

#: The job state a KubeRay `status.jobDeploymentStatus` stands for when it decides alone
#: (None: Ray's own `status.jobStatus` decides, PENDING until there is one). The values are
#: KubeRay's `JobDeploymentStatus` constants (ray-operator/apis/ray/v1/rayjob_types.go).
DEPLOYMENT_STATES: dict[str, str | None] = {
    "": None, "New": None, "Initializing": None, "Waiting": None, "Scheduling": None,
    "Scheduled": None, "Running": None, "Suspending": None, "Complete": None,
    "Retrying": "PENDING",         # a new attempt; the last one's Ray status is stale
    "Failed": "FAILED",            # deadline exceeded, submission failed, retries used up
    "ValidationFailed": "FAILED",  # KubeRay refused the spec; nothing runs or will run
    "Suspended": "STOPPED",        # the cluster and its job were deleted
}


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


def rayjob_state(name: str, status: dict[str, Any]) -> str:
    """The job state (one of :data:`JOB_STATES`) of a RayJob's `status`.

    KubeRay's verdict on the RayJob (`jobDeploymentStatus`) wins where it is final: `Failed`
    and `ValidationFailed` are FAILED, `Suspended` is STOPPED, and `Retrying` is PENDING
    whatever the previous attempt's Ray status said. Otherwise Ray's own `jobStatus`
    decides, PENDING until Ray has one.

    Raises:
        JobError: for a deployment status KubeRay does not define, or a `Complete` RayJob
            without a final Ray status.
    """
    deployment = status.get("jobDeploymentStatus") or ""
    if deployment not in DEPLOYMENT_STATES:
        raise JobError(f"RayJob {name!r}: unknown jobDeploymentStatus {deployment!r}; known: "
                       f"{sorted(k for k in DEPLOYMENT_STATES if k)}")
    if DEPLOYMENT_STATES[deployment] is not None:
        return DEPLOYMENT_STATES[deployment]
    job = status.get("jobStatus")
    if deployment == "Complete" and job not in TERMINAL_STATES:
        raise JobError(f"RayJob {name!r} is Complete without a final job status ({job!r}): "
                       f"{status.get('message', '')}")
    return job if job in JOB_STATES else "PENDING"


class RayJobCRLauncher:
    """KubeRay `RayJob` custom resources through the Kubernetes API.

    Args:
        api_client: A `kubernetes.client.ApiClient` (from kubeconfig, in-cluster config,
            or built by the caller); nothing connects until a method is called.
        namespace: Namespace of the RayJobs.
        cluster_spec: `rayClusterSpec` for a cluster per job, or
        cluster_selector: labels of an existing RayCluster to run on.
        python: Interpreter on the cluster's image.
        dashboard: Dashboard URL of the cluster this machine reaches (e.g. a
            `kubectl port-forward` to `http://127.0.0.1:8265`) for logs and stops; KubeRay's
            `status.dashboardURL`, an in-cluster address, otherwise.
        policy: Timeouts and retries of the Kubernetes API and dashboard calls.
    """

    def __init__(self, api_client: Any, namespace: str = "default", *,
                 cluster_spec: dict | None = None, cluster_selector: dict[str, str] | None = None,
                 python: str = "python", dashboard: str | None = None,
                 policy: CallPolicy | None = None) -> None:
        if cluster_spec is None and cluster_selector is None:
            cluster_selector = {"ray.io/cluster": "lwmecps"}
        self.api_client = api_client
        self.namespace = namespace
        self.cluster_spec = cluster_spec
        self.cluster_selector = cluster_selector
        self.python = python
        self.dashboard = dashboard
        self.policy = policy if policy is not None else CallPolicy()

    @property
    def api(self) -> Any:
        """`CustomObjectsApi` on the injected client."""
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    @property
    def host(self) -> str:
        """The Kubernetes API address of the client."""
        return str(getattr(getattr(self.api_client, "configuration", None), "host", "?"))

    def _call(self, what: str, fn: Any, *, retry: bool = False, **kwargs: Any) -> Any:
        """`fn` on the RayJobs of the namespace, with the policy's timeout (and retries of
        no answer, 429 and 5xx if `retry`).

        Raises:
            JobError: naming the API status, or the API address when it did not answer.
        """
        from kubernetes.client.exceptions import ApiException

        network = _network_errors()

        def transient(exc: BaseException) -> bool:
            return isinstance(exc, network) or (isinstance(exc, ApiException) and (
                exc.status == 429 or 500 <= (exc.status or 0) < 600))

        def once() -> Any:
            return fn(**RAYJOB, namespace=self.namespace,
                      _request_timeout=self.policy.timeout_s, **kwargs)

        try:
            return self.policy.retrying(what, once, transient) if retry else once()
        except ApiException as exc:
            raise JobError(f"{what}: Kubernetes API answered {exc.status} {exc.reason}") from exc
        except network as exc:
            raise JobError(f"{what}: no answer from the Kubernetes API at {self.host} "
                           f"(timeout {self.policy.timeout_s:g} s): {_short(exc)}") from exc

    def submit(self, task: TrainingTask) -> str:
        """Create the RayJob; its name is the job id."""
        body = rayjob_manifest(task, self.namespace, cluster_spec=self.cluster_spec,
                               cluster_selector=self.cluster_selector, python=self.python)
        self._call(f"create RayJob {task.name!r}", self.api.create_namespaced_custom_object,
                   body=body)
        return task.name

    def get(self, job_id: str, retry: bool = False) -> dict[str, Any]:
        """The RayJob object."""
        return self._call(f"RayJob {job_id!r}", self.api.get_namespaced_custom_object,
                          retry=retry, name=job_id)

    def status(self, job_id: str) -> str:
        """The job's state (:func:`rayjob_state`; the read is retried)."""
        return rayjob_state(job_id, self.get(job_id, retry=True).get("status") or {})

    def _ray_job(self, job_id: str, status: dict[str, Any]) -> tuple[RayJobsLauncher, str]:
        """The Jobs API of the RayJob's cluster and the Ray job id in it."""
        url, ray_job = self.dashboard or status.get("dashboardURL"), status.get("jobId")
        if not url or not ray_job:
            raise JobError(f"RayJob {job_id!r} has no dashboard or job id yet "
                           f"(deployment status {status.get('jobDeploymentStatus')!r})")
        return RayJobsLauncher(url if "://" in url else f"http://{url}",
                               policy=self.policy), ray_job

    def _on_dashboard(self, what: Callable[[RayJobsLauncher, str], T], job_id: str,
                      status: dict[str, Any]) -> T:
        launcher, ray_job = self._ray_job(job_id, status)
        try:
            return what(launcher, ray_job)
        except JobError as exc:
            if self.dashboard:
                raise
            raise JobError(f"{exc} (KubeRay's in-cluster address; from outside the cluster "
                           f"give one this machine reaches, e.g. --address "
                           f"http://127.0.0.1:8265 after kubectl port-forward)") from exc

    def logs(self, job_id: str) -> str:
        """The job's output, read from the cluster's dashboard."""
        return self._on_dashboard(lambda launcher, ray_job: launcher.logs(ray_job), job_id,
                                  self.get(job_id).get("status") or {})

    def stop(self, job_id: str) -> bool:
        """Stop the job the way KubeRay allows it; True if it had not ended.

        A RayJob with a cluster of its own (`shutdownAfterJobFinishes`) is suspended:
        KubeRay deletes that cluster with the job on it and the RayJob ends `Suspended`
        (STOPPED). KubeRay refuses to suspend any other RayJob (`clusterSelector`: the
        spec fails validation and the job runs on), so its Ray job is stopped through the
        cluster's dashboard by its job id and the RayJob ends STOPPED; one KubeRay has not
        given a job id yet has nothing running and is deleted.
        """
        obj = self.get(job_id)
        status, spec = obj.get("status") or {}, obj.get("spec") or {}
        if rayjob_state(job_id, status) in TERMINAL_STATES:
            return False
        if spec.get("shutdownAfterJobFinishes") and not spec.get("clusterSelector"):
            self._call(f"suspend RayJob {job_id!r}", self.api.patch_namespaced_custom_object,
                       name=job_id, body={"spec": {"suspend": True}})
            return True
        if not status.get("jobId"):
            self._call(f"delete RayJob {job_id!r}", self.api.delete_namespaced_custom_object,
                       name=job_id)
            return True
        return self._on_dashboard(lambda launcher, ray_job: launcher.stop(ray_job), job_id,
                                  status)
