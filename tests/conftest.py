"""Shared fixtures. Unit tests need no Ray; integration tests are marked `integration`."""

from __future__ import annotations

import contextlib
import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "offline")

SCENARIOS = ("testbed-4bs", "testbed-4bs-peak", "metro-16", "city-64")


@pytest.fixture(params=SCENARIOS)
def scenario_name(request: pytest.FixtureRequest) -> str:
    """Every shipped scenario."""
    return request.param


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all integration tests of a pytest run (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head (`ray start --head --block`) with its dashboard and Jobs API, on free
    ports and its own temp dir; stopped (its process group) at the end of the pytest run.

    Yields the dashboard URL.
    """
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    bin_dir = str(Path(sys.executable).parent)
    dash = free_port()
    cmd = [str(Path(bin_dir) / "ray"), "start", "--head", "--block", "--num-cpus=2",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--port={free_port()}",
           f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
           "--min-worker-port=0", "--max-worker-port=0",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": bin_dir + os.pathsep +
           os.environ.get("PATH", "")}
    env.pop("RAY_ADDRESS", None)
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Ray head did not come up: "
                                   + (Path(temp) / "head.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def kuberay_crds_dir():
    """KubeRay's CRDs: `$LWMECPS_KUBERAY_CRDS`, else `../shared/kuberay-crds` beside the
    repository (where the project keeps its shared data, also in CI)."""
    from pathlib import Path

    path = Path(os.environ.get("LWMECPS_KUBERAY_CRDS", "")) if os.environ.get(
        "LWMECPS_KUBERAY_CRDS") else Path(__file__).resolve().parents[2] / "shared" / "kuberay-crds"
    if not (path / "ray.io_rayjobs.yaml").exists():
        pytest.fail(f"KubeRay CRDs not found in {path}; set LWMECPS_KUBERAY_CRDS")
    return path
