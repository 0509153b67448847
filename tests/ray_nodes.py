"""A multi-node Ray cluster on this machine, each node a `ray start --block` process.

The head and every other node get free ports and their own temp dir; a node is lost the
way a machine is, by killing its raylet (found by its pid). Used by the two-node tests of
`tests/test_nodes.py`; `conftest.ray_head` starts its single head the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

RAY = str(Path(sys.executable).parent / "ray")

# A killed raylet refuses the GCS's health checks at once: it is known lost after 5 failed
# checks a second apart (Ray's default takes ~30 s). A live but busy raylet has 5 s to
# answer each, so a loaded machine does not lose nodes that are there.
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_timeout_ms": 5000,
                 "health_check_failure_threshold": 5}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(temp: str, *, head_port: int, head: bool, num_cpus: int,
                 resources: dict[str, float] | None = None,
                 dashboard_port: int | None = None) -> list[str]:
    """`ray start --block` for a head or another node joining it, on free ports.

    Args:
        temp: The node's own temp dir.
        head_port: The head's GCS port (the head's `--port`, the others' `--address`).
        head: Start the head (with the health checks of :data:`HEALTH_CHECKS`).
        num_cpus: CPUs the node offers.
        resources: Custom resources the node offers.
        dashboard_port: The head's dashboard and Jobs API port (None: no dashboard).

    Returns:
        The command's arguments.
    """
    cmd = [RAY, "start", "--block", f"--num-cpus={num_cpus}",
           f"--temp-dir={temp}", "--disable-usage-stats",
           f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
           "--min-worker-port=0", "--max-worker-port=0"]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    if not head:
        return [*cmd, f"--address=127.0.0.1:{head_port}"]
    cmd += ["--head", f"--port={head_port}", f"--ray-client-server-port={free_port()}",
            f"--system-config={json.dumps(HEALTH_CHECKS)}"]
    if dashboard_port is None:
        return [*cmd, "--include-dashboard=false"]
    return [*cmd, "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}"]


def ray_env() -> dict[str, str]:
    """The environment of a node: no auth, `ray` on PATH, no inherited RAY_ADDRESS."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class RayNode:
    """One `ray start --block` process (its own process group) and its temp dir."""

    proc: subprocess.Popen
    temp: Path
    node_id: str = ""
    log: IO[str] | None = field(default=None, repr=False)

    def raylet_pid(self) -> int:
        """The pid of this node's raylet (its socket lives in this node's temp dir)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and args[0].endswith(b"/raylet") and any(
                    a.startswith(b"--raylet_socket_name=" + str(self.temp).encode())
                    for a in args):
                return int(entry.name)
        raise RuntimeError(f"no raylet of the node in {self.temp}")

    def started(self) -> bool:
        """Whether `ray start` says the node's processes are up."""
        return "Ray runtime started" in (self.temp / "node.log").read_text(errors="replace")

    def output(self) -> str:
        """The end of the node's `ray start` output."""
        return (self.temp / "node.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGKILL to the node's process group (a graceful `ray start` stop takes ~30 s;
        the tests' nodes hold nothing to save); its temp dir removed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL: only if stuck in D
            self.proc.wait(timeout=30)
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def start_node(cmd_for: Callable[[str], list[str]]) -> RayNode:
    """Start a node in a new process group, its output in `temp/node.log`.

    Args:
        cmd_for: The node's command for its temp dir (made here).

    Returns:
        The started node (not yet known to be up).
    """
    temp = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))  # short: Ray's socket paths
    log = open(temp / "node.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd_for(str(temp)), env=ray_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return RayNode(proc, temp, log=log)


class LocalCluster:
    """A head (1 CPU, custom resource `head`) and the nodes a test adds, the calling
    process connected as the driver.

    Attributes:
        address: The head's GCS address (`ray start --address`, `ray.init(address=...)`).
        head: The head node.
        nodes: Every node started, the head first.
    """

    def __init__(self, num_cpus: int = 1, timeout_s: float = 90) -> None:
        import ray

        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.timeout_s = timeout_s
        self.nodes: list[RayNode] = []
        self.head = self._start(lambda t: node_command(t, head_port=port, head=True,
                                                       num_cpus=num_cpus,
                                                       resources={"head": 1}))
        try:
            self._wait(self.head.started, "the head did not come up", self.head)
            ray.init(address=self.address, log_to_driver=False)
            self.head.node_id = ray.get_runtime_context().get_node_id()
        except BaseException:
            self.shutdown()
            raise

    def _start(self, cmd_for: Callable[[str], list[str]]) -> RayNode:
        node = start_node(cmd_for)
        self.nodes.append(node)
        return node

    def _wait(self, condition: Callable[[], bool], what: str, node: RayNode | None = None
              ) -> None:
        """Poll `condition()` every 0.25 s; raise naming `what` after the timeout, or at
        once when `node`'s `ray start` has exited (with its output)."""
        deadline = time.monotonic() + self.timeout_s
        while not condition():
            ended = node is not None and node.proc.poll() is not None
            if ended or time.monotonic() > deadline:
                output = f":\n{node.output()}" if node is not None else ""
                raise RuntimeError(f"{what} within {self.timeout_s} s{output}")
            time.sleep(0.25)

    def add_node(self, num_cpus: int = 1, resources: dict[str, float] | None = None) -> RayNode:
        """Start another node joining the head; return once Ray counts it alive."""
        import ray

        port = int(self.address.rsplit(":", 1)[1])
        before = {n["NodeID"] for n in ray.nodes()}
        node = self._start(lambda t: node_command(t, head_port=port, head=False,
                                                  num_cpus=num_cpus, resources=resources))

        def joined() -> bool:
            new = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] not in before]
            if new:
                node.node_id = new[0]["NodeID"]
            return bool(new)

        self._wait(joined, "the node did not join", node)
        return node

    def kill_raylet(self, node: RayNode) -> None:
        """Lose `node` as a machine is lost: SIGKILL to its raylet; wait until Ray knows."""
        import ray

        os.kill(node.raylet_pid(), signal.SIGKILL)
        # (Not `node`: its `ray start` exits with the raylet.)
        self._wait(lambda: not any(n["NodeID"] == node.node_id and n["Alive"]
                                   for n in ray.nodes()),
                   f"Ray did not count node {node.node_id} lost")

    def shutdown(self) -> None:
        """Disconnect the driver and stop every node, the head last."""
        import ray

        ray.shutdown()
        for node in reversed(self.nodes):
            node.stop()
