"""Shared fixtures. Unit tests need no Ray; integration tests are marked `integration`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_nodes import free_port

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "offline")

SCENARIOS = ("testbed-4bs", "testbed-4bs-peak", "metro-16", "city-64")
REPO = Path(__file__).resolve().parents[1]


# A deprecated Ray/RLlib API used by this repository's code fails the test.
#
# Python DeprecationWarnings attributed to `lwmecps_rllib` are errors through
# `filterwarnings` in pyproject.toml. RLlib does not warn that way: its
# `ray._common.deprecation.deprecation_warning` logs "DeprecationWarning: ..." on the
# `ray._common.deprecation` logger, which no warning filter sees. The hooks below
# listen on that logger during every test phase and fail the test when the call that
# used the deprecated API (the caller of the function that reported it, which is
# the deprecated function itself or the wrapper RLlib's `@Deprecated` puts around it)
# is in this repository. RLlib's own uses are not ours: every `RLModule.__init__`
# still builds a deprecated `RLModuleConfig` (ray-project/ray#51630), which logs
# "`RLModule(config=[RLModuleConfig object])` has been deprecated" on any module.

DEPRECATION_LOGGER = "ray._common.deprecation"


def in_repo(filename: str) -> bool:
    """Whether `filename` is this repository's code (not an installed package)."""
    path = Path(filename).resolve()
    return (path.is_relative_to(REPO) and path.is_file() and ".venv" not in path.parts
            and "site-packages" not in path.parts)


def deprecated_call_site() -> tuple[str, int] | None:
    """File and line of the call that used the deprecated API being reported now."""
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "deprecation_warning"
                                     and "ray" in Path(frame.f_code.co_filename).parts):
        frame = frame.f_back
    caller = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
    return None if caller is None else (caller.f_code.co_filename, caller.f_lineno)


class RepoDeprecations(logging.Handler):
    """Collects RLlib's deprecation messages whose deprecated call is in this repository."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        site = deprecated_call_site()
        if site is not None and in_repo(site[0]):
            where = f"{Path(site[0]).resolve().relative_to(REPO)}:{site[1]}"
            self.found.append(f"{where}: {record.getMessage()}")


@contextlib.contextmanager
def fail_on_repo_deprecations() -> Iterator[None]:
    """Fail when the code run inside uses an API RLlib reports as deprecated."""
    handler = RepoDeprecations()
    logger = logging.getLogger(DEPRECATION_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    # RLlib's `@Deprecated` reports once per process; report every use, so a use of ours
    # is seen even after RLlib's own code used the same API first.
    module = sys.modules.get(DEPRECATION_LOGGER)
    log_once = getattr(module, "log_once", None)
    if log_once is not None:
        module.log_once = lambda key: True
    try:
        yield
    finally:
        if log_once is not None:
            module.log_once = log_once
        logger.removeHandler(handler)
        logger.setLevel(level)
    if handler.found:
        pytest.fail("deprecated Ray API used by this repository's code:\n"
                    + "\n".join(dict.fromkeys(handler.found)), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with fail_on_repo_deprecations():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with fail_on_repo_deprecations():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    with fail_on_repo_deprecations():
        return (yield)


@pytest.fixture(params=SCENARIOS)
def scenario_name(request: pytest.FixtureRequest) -> str:
    """Every shipped scenario."""
    return request.param


def start_local_ray() -> None:
    """The integration tests' local Ray (2 CPUs, no dashboard), unless one is running."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all integration tests of a pytest run (:func:`start_local_ray`)."""
    import ray

    start_local_ray()
    yield ray
    ray.shutdown()


def stop_process_group(proc) -> None:
    """SIGTERM to a process started with `start_new_session=True` and its group (how a
    background `serve run` stops; it ignores SIGINT), SIGKILL after 60 s."""
    import signal
    import subprocess

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head (`ray start --head --block`, 2 CPUs) with its dashboard and Jobs API,
    on free ports and its own temp dir (tests/ray_nodes.py); stopped at the end of the
    pytest run.

    Yields the dashboard URL.
    """
    import time
    import urllib.request

    from ray_nodes import node_command, start_node

    dash = free_port()
    node = start_node(lambda temp: node_command(temp, head_port=free_port(), head=True,
                                                num_cpus=2, dashboard_port=dash))
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
            if node.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray head did not come up:\n{node.output()}")
            time.sleep(0.5)
        yield url
    finally:
        node.stop()


def kuberay_crds_dir():
    """KubeRay's CRDs: `$LWMECPS_KUBERAY_CRDS`, else `../shared/kuberay-crds` beside the
    repository (where the project keeps its shared data, also in CI)."""
    from pathlib import Path

    path = Path(os.environ.get("LWMECPS_KUBERAY_CRDS", "")) if os.environ.get(
        "LWMECPS_KUBERAY_CRDS") else Path(__file__).resolve().parents[2] / "shared" / "kuberay-crds"
    if not (path / "ray.io_rayjobs.yaml").exists():
        pytest.fail(f"KubeRay CRDs not found in {path}; set LWMECPS_KUBERAY_CRDS")
    return path
