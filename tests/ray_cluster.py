"""A real Ray cluster of several nodes on this machine, for tests and benchmarks.

Each node is ``ray start --block`` in its own session, temp dir and environment (a node may get
its own PATH), all sharing this process's token (Ray 2.60 turns token authentication on by
default). One token per process, not per cluster: a driver reads it once, when Ray is first
imported, so a process that builds a second cluster (a test module run again after another, as
pytest-xdist's work stealing does) must give it the same token. Stopping goes by pid: SIGTERM
to each ``ray start``, then SIGKILL to whatever is still running below them (found in /proc), so
no other Ray on the machine is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAY = Path(sys.executable).parent / "ray"
TOKEN = secrets.token_hex(16)


@dataclass(frozen=True)
class NodeSpec:
    num_cpus: int
    resources: dict[str, float] = field(default_factory=dict)
    path_prefix: Path | None = None  # prepended to this node's PATH (its tools)


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]  # what a driver needs in its environment to join (the token)
    nodes: tuple[dict[str, Any], ...]  # ray.nodes() entries, alive ones
    processes: tuple[subprocess.Popen[bytes], ...]

    def node_with(self, resource: str) -> str:
        return next(str(n["NodeID"]) for n in self.nodes if resource in n["Resources"])

    def node_without(self, resource: str) -> str:
        return next(str(n["NodeID"]) for n in self.nodes if resource not in n["Resources"])


@contextlib.contextmanager
def loopback_cluster(specs: list[NodeSpec], pythonpath: Path) -> Iterator[Cluster]:
    """Start a head node (``specs[0]``) and the other nodes joining it; stop them all at the end."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    join = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    base = {**os.environ, **join, "PYTHONPATH": str(pythonpath)}
    temp_dirs: list[Path] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index, spec in enumerate(specs):
            temp = Path(tempfile.mkdtemp(prefix=f"tec-ray-{index}-"))
            temp_dirs.append(temp)
            where = (["--head", f"--port={port}", "--include-dashboard=false"] if index == 0
                     else [f"--address={address}"])
            argv = [*where, "--node-ip-address=127.0.0.1", f"--num-cpus={spec.num_cpus}",
                    f"--temp-dir={temp}"]
            if spec.resources:
                argv += ["--resources", json.dumps(spec.resources)]
            env = dict(base)
            if spec.path_prefix is not None:
                env["PATH"] = f"{spec.path_prefix}{os.pathsep}{env['PATH']}"
            processes.append(start_node(argv, env, temp / "start.log"))
            if index == 0:
                wait_for_port(port, processes[0], temp / "start.log")
        nodes = wait_for_nodes(address, join, len(specs))
        yield Cluster(address, join, tuple(nodes), tuple(processes))
    finally:
        stop(tuple(processes))
        for temp in temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_node(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen([str(RAY), "start", *argv, "--disable-usage-stats",
                                 "--object-store-memory=200000000", "--block"],
                                stdout=handle, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(120):
        if process.poll() is not None:
            raise RuntimeError(f"ray start --head exited:\n{log.read_text()[-3000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray head did not open port {port}:\n{log.read_text()[-3000:]}")


def cluster_nodes(address: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """The alive nodes, asked by a separate driver process (this one may not import Ray yet)."""
    probe = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "  # noqa: UP031
             "print(json.dumps([n for n in ray.nodes() if n['Alive']]))" % address)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120, check=True)
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def wait_for_nodes(address: str, env: dict[str, str], count: int) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for _ in range(30):
        nodes = cluster_nodes(address, env)
        if len(nodes) >= count:
            return nodes
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} has {len(nodes)} nodes, not {count}")


def descendants(pids: list[int]) -> list[int]:
    """Every process below ``pids`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(parent_pid(int(entry.name)), []).append(int(entry.name))
    found, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def parent_pid(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot): tells a process from a later one that
    reuses its pid."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (field 3, the state, comes first)."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stop(processes: tuple[subprocess.Popen[bytes], ...]) -> None:
    """SIGTERM each ``ray start --block`` (it stops its node), then SIGKILL what is left below it."""
    below = [(pid, start_time(pid)) for pid in descendants([p.pid for p in processes])]
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    for pid, started in below:
        if started is not None and start_time(pid) == started:  # still that process
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
