"""What a dataset folder's files are: which count as images, and that none is a link to a file
outside the folder (image folders and array-sample folders follow one rule)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from converters.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def check_inside(root: Path, files: Sequence[Path], what: str = "image") -> None:
    """Refuse files (images, or array samples: ``what``) that are symlinks to files outside
    ``root``: the docker runner mounts only the dataset folder, so they would be found locally
    and missing in a container."""
    resolved_root = root.resolve()
    outside = [path for path in files if resolved_root not in path.resolve().parents]
    if outside:
        raise DatasetError(
            f"dataset {root}: {len(outside)} {what}(s) are symlinks to files outside the folder "
            f"(first: {outside[0]} → {outside[0].resolve()}); a container sees only the dataset "
            f"folder. Copy the {what}s into it, or pass the folder they live in as --dataset")
