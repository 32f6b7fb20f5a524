"""Which runner runs each image's stages: ``--runner local|docker|auto``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from converters import console
from converters.config import Runner
from converters.errors import ToolMissingError
from converters.runners import StageRunner, docker_cli
from converters.runners.docker import DockerRunner
from converters.runners.images import optional_images
from converters.runners.local import LocalRunner


def select_runners(choice: Runner, images: Iterable[str], out_dir: Path,
                   volume: str | None = None) -> dict[str, StageRunner]:
    """Image name → runner. ``auto`` takes docker for an image when an engine answers and the
    image exists and is current, else local, and says which it chose and why."""
    names = sorted(set(images))
    local = LocalRunner()
    if choice is Runner.LOCAL:
        return dict.fromkeys(names, local)
    engine_problem = docker_cli.engine_problem()
    if engine_problem is not None:
        if choice is Runner.DOCKER:
            raise ToolMissingError(f"--runner docker: {engine_problem}")
        console.info(f"runner auto: every stage runs locally because {engine_problem}")
        return dict.fromkeys(names, local)
    container = DockerRunner(out_dir, volume)
    chosen: dict[str, StageRunner] = {}
    local_because: dict[str, str] = {}
    for image in names:
        problem = container.image_problem(image)
        if problem is None:
            chosen[image] = container
        elif choice is Runner.DOCKER and image not in optional_images():
            raise ToolMissingError(f"--runner docker: {problem}")
        else:
            chosen[image] = local
            local_because[image] = problem
    say_choice(choice, [i for i in names if i not in local_because], local_because, container)
    return chosen


def say_choice(choice: Runner, in_docker: list[str], local_because: dict[str, str],
               container: DockerRunner) -> None:
    """One calm line saying where each image's stages run; a warning only where something is
    wrong: an image that exists but holds other code, or a missing one under --runner docker."""
    parts = [f"{', '.join(in_docker)} stages in docker"] if in_docker else []
    if local_because:
        missing = sorted(local_because)
        parts.append(f"{', '.join(missing)} stages locally (no current image; `invoke images "
                     f"--target {','.join(missing)}` builds it)")
    console.info(f"runner {choice.value}: " + "; ".join(parts))
    for image, problem in local_because.items():
        if choice is Runner.DOCKER or container.image_exists(image):
            console.warn(f"{image} stages run locally: {problem}")
