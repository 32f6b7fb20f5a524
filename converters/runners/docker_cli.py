"""The Docker engine as this project uses it: find the CLI, ask whether the engine answers, read
image metadata, remove containers. Every call is an argv list and fails with a message that says
what to do: a ConverterError naming the command, its exit code and its output (docs/development.md),
never a shell string.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from converters.errors import EngineUnavailable

DOCKER_TIMEOUT_S = 30
# Debian's docker.io CLI builds with BuildKit (secret mounts) without the buildx plugin; a newer
# CLI without buildx refuses DOCKER_BUILDKIT=1 (Docker 23+ builds through buildx:
# https://docs.docker.com/build/buildkit/). Prefer it when both are installed.
DEBIAN_DOCKER_CLI = Path("/usr/bin/docker")
PROJECT_LABEL = "io.tensor-edge-converter"
CODE_LABEL = f"{PROJECT_LABEL}.code"
BUILD_DIR_LABEL = f"{PROJECT_LABEL}.build-dir"


def docker_cli() -> str:
    if DEBIAN_DOCKER_CLI.exists():
        return str(DEBIAN_DOCKER_CLI)
    found = shutil.which("docker")
    if found is None:
        raise EngineUnavailable(
            "no docker command on this machine: install Docker (Debian/Ubuntu: "
            "`sudo apt-get install docker.io`), or use --runner local"
        )
    return found


def docker(*args: str, timeout: float = DOCKER_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a short docker command and capture its output (no check: callers read returncode)."""
    return subprocess.run([docker_cli(), *args], capture_output=True, text=True, timeout=timeout)


def engine_problem() -> str | None:
    """None when a Docker engine answers, else why not, with the command that fixes it."""
    try:
        result = docker("version", "--format", "{{.Server.Version}}")
    except EngineUnavailable as error:
        return str(error)
    except subprocess.TimeoutExpired:
        return f"the Docker engine did not answer within {DOCKER_TIMEOUT_S} s"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return (f"the Docker engine does not answer ({last}): start it, for example with "
                "`sudo systemctl start docker` or `sudo dockerd &`, or use --runner local")
    return None


def require_engine() -> None:
    problem = engine_problem()
    if problem is not None:
        raise EngineUnavailable(problem)


def image_inspect(tag: str) -> dict[str, object] | None:
    """``docker image inspect`` of ``tag`` (its first entry), or None when the image is absent."""
    result = docker("image", "inspect", tag)
    if result.returncode != 0:
        return None
    entries = json.loads(result.stdout)
    return entries[0] if entries else None


def image_labels(inspected: dict[str, object]) -> dict[str, str]:
    config = inspected.get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    return dict(labels) if isinstance(labels, dict) else {}


def remove_container(name: str) -> None:
    """Force-remove a container if it still exists (a no-op when --rm already removed it)."""
    docker("rm", "--force", name)


def remove_containers_labelled(label: str, value: str) -> list[str]:
    """Force-remove every container carrying ``label=value``; return their names."""
    listed = docker("ps", "--all", "--filter", f"label={label}={value}",
                    "--format", "{{.Names}}")
    names = listed.stdout.split() if listed.returncode == 0 else []
    for name in names:
        remove_container(name)
    return names
