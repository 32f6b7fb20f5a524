"""Run a job's stage process inside its toolchain image, the build folder shared as a volume.

The build folder (``--out``), the model and the dataset are mounted at the same absolute paths
they have on the host (model and dataset read-only), so a job file means the same inside and
outside the container and the images hand artifacts to each other through that folder. The
folder is a bind mount, or with ``--volume NAME`` a named volume whose storage is that folder.
The container has no network, runs as the caller's uid:gid (artifacts belong to the user), is
removed when it ends and carries a label naming the build folder, so a build can remove what a
killed build left. The docker command is printed so it can be re-run by hand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from converters import console
from converters.cache import stage_cache
from converters.errors import ConfigError, ToolMissingError
from converters.runners import docker_cli
from converters.runners.images import image_definition
from converters.stages.base import StageSpec


class DockerRunner:
    name = "docker"

    def __init__(self, out_dir: Path, volume: str | None = None) -> None:
        self.out_dir = out_dir.resolve()
        self.volume = volume
        self._image_ids: dict[str, str] = {}

    def image_problem(self, image: str) -> str | None:
        """None when ``image`` can run this code's stages, else why not and how to fix it."""
        tag = image_definition(image).tag
        inspected = docker_cli.image_inspect(tag)
        fix = f"`invoke images --target {image}` (add --base bootstrap where no registry is reachable)"
        if inspected is None:
            return f"the {image} image {tag} does not exist: build it with {fix}"
        if docker_cli.image_labels(inspected).get(docker_cli.CODE_LABEL) != stage_cache.code_fingerprint():
            return (f"the {image} image {tag} holds other converters code than this checkout: "
                    f"rebuild it with {fix}")
        self._image_ids[image] = str(inspected["Id"])
        return None

    def image_exists(self, image: str) -> bool:
        """True when the image is there (current or not)."""
        return docker_cli.image_inspect(image_definition(image).tag) is not None

    def environment(self, spec: StageSpec) -> dict[str, str]:
        """The image ID stands for every tool version inside the image."""
        if spec.image not in self._image_ids and (problem := self.image_problem(spec.image)):
            raise ToolMissingError(problem)
        return {"image": image_definition(spec.image).tag, "image_id": self._image_ids[spec.image]}

    def prepare(self) -> None:
        """Make the shared volume and remove containers a killed build of this folder left."""
        if self.volume is not None:
            ensure_volume(self.volume, self.out_dir)
        for name in docker_cli.remove_containers_labelled(docker_cli.BUILD_DIR_LABEL, str(self.out_dir)):
            console.info(f"removed container {name} left by an interrupted build")

    def command(self, job_path: Path, job: dict[str, Any]) -> list[str]:
        argv = self.container_argv(job, container_name(job_path, job))
        argv += [image_definition(job["image"]).tag, "run-job", str(job_path.resolve())]
        console.info("$ " + " ".join(argv))
        return argv

    def container_argv(self, job: dict[str, Any], name: str) -> list[str]:
        """``docker run`` and its options, up to (not including) the image."""
        model, dataset = Path(job["model_path"]), Path(job["dataset_dir"])
        shared = self.volume or str(self.out_dir)
        argv = [
            docker_cli.docker_cli(), "run", "--rm", "--init", "--name", name,
            "--label", f"{docker_cli.BUILD_DIR_LABEL}={self.out_dir}",
            "--network", "none",
            "--user", f"{os.getuid()}:{os.getgid()}",
            "--mount", mount_option("volume" if self.volume else "bind", shared, self.out_dir),
            "--mount", mount_option("bind", str(model), model, read_only=True),
            "--mount", mount_option("bind", str(dataset), dataset, read_only=True),
            "--env", "HOME=/tmp",
            "--env", "CONVERTERS_PARENT_SHOWS_ERRORS=1",
        ]
        if os.environ.get(console.FORCE_TERMINAL):
            argv += ["--env", f"{console.FORCE_TERMINAL}=1"]
        if image_definition(job["image"]).gpus:
            argv += ["--gpus", "all"]
        return argv

    def finish(self, job_path: Path, job: dict[str, Any]) -> None:
        """Remove the container if it outlived its process (Ctrl-C, a killed docker CLI)."""
        docker_cli.remove_container(container_name(job_path, job))


def mount_option(kind: str, source: str, target: Path, read_only: bool = False) -> str:
    """A ``--mount`` value; unlike ``--volume``, paths may hold ``:`` and (CSV-quoted) ``,``."""
    fields = [f"type={kind}", f"source={source}", f"target={target}"]
    if read_only:
        fields.append("readonly")
    return ",".join(f'"{f.replace(chr(34), chr(34) * 2)}"' if ("," in f or '"' in f) else f
                    for f in fields)


def container_name(job_path: Path, job: dict[str, Any]) -> str:
    """Recognisable and unique per build process: tec-<model>-<job>-<pid>."""
    raw = f"tec-{job['model_name']}-{job_path.stem}-{os.getpid()}"
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", raw)


def ensure_volume(name: str, out_dir: Path) -> None:
    """A named volume stored in ``out_dir`` (local driver, bind), so host and images share it."""
    inspected = docker_cli.docker("volume", "inspect", "--format", "{{json .Options}}", name)
    if inspected.returncode != 0:
        created = docker_cli.docker("volume", "create", "--driver", "local", "--opt", "type=none",
                                "--opt", "o=bind", "--opt", f"device={out_dir}", name)
        if created.returncode != 0:
            raise ConfigError(f"cannot create docker volume {name}: {created.stderr.strip()}")
        console.info(f"created docker volume {name} stored in {out_dir}")
        return
    device = re.search(r'"device":"([^"]*)"', inspected.stdout)
    if device is None or Path(device.group(1)) != out_dir:
        where = device.group(1) if device else "docker's own storage"
        raise ConfigError(
            f"docker volume {name} is stored in {where}, not in the build folder {out_dir}: "
            f"pass another --volume name, or --out {where} if that is the build folder you mean"
        )
