"""Whether an artifact in a build folder still belongs with that folder's metadata.

``invoke infer`` runs an artifact with the preprocessing and class names its build folder
records (``data/dataset.json``, ``export/model.json``). After a rebuild that did not finish
(a stage failed, the build was killed), the folder can hold an artifact from one build beside
metadata from another, or no metadata at all: running it would silently use other class names
and preprocessing. The manifest says which stages are stale until a build finishes.
"""

from __future__ import annotations

from pathlib import Path

from converters import console
from converters.cache import stage_cache
from converters.errors import ModelError
from converters.fsutil import read_json

METADATA_STAGES = ("export", "data")  # whose outputs infer reads beside the artifact


def build_folder(artifact: Path) -> Path | None:
    """The model build folder ``artifact`` sits in (the one with a ``.stages`` folder), if any."""
    for folder in list(artifact.resolve().parents)[:3]:
        if (folder / stage_cache.STAMP_DIR).is_dir() and (folder / stage_cache.MANIFEST).is_file():
            return folder
    return None


def check_artifact(artifact: Path, build_dir: Path, needed: tuple[str, ...]) -> None:
    """Refuse an artifact whose build, or the metadata beside it (``needed``: files relative to
    the build folder), is stale or missing; warn when the last build of the folder failed
    elsewhere."""
    manifest = read_json(build_dir / stage_cache.MANIFEST)
    relative = Path(artifact.resolve().relative_to(build_dir.resolve()))
    recorded = manifest.get("artifacts", {})
    # The file itself, or the folder a stage wrote it in (an output may be a folder).
    record = next((recorded[p.as_posix()] for p in (relative, *relative.parents)
                   if p.as_posix() in recorded), None)
    if record is None:
        raise ModelError(f"{artifact} is not recorded by any finished stage of {build_dir} (its "
                         "build did not finish, or the file was put there by hand): run invoke "
                         "convert again")
    stale = set(manifest.get("stale_stages") or []) if manifest.get("complete") is False else set()
    blocking = sorted(stale & {record["stage"], *METADATA_STAGES})
    if blocking:
        raise ModelError(
            f"the last build of {build_dir} did not finish and left stage(s) "
            f"{', '.join(blocking)} stale: {artifact.name} and the class names and "
            "preprocessing beside it may come from different inputs. Run invoke convert again "
            "(invoke verify shows the state)")
    for metadata_file in needed:
        if not (build_dir / metadata_file).is_file():
            raise ModelError(f"{build_dir} has no {metadata_file} (the preprocessing, class names and "
                             f"input names {artifact.name} was validated with): run invoke "
                             "convert again")
    failed = sorted(stage_cache.read_failures(build_dir))
    if failed:
        console.warn(f"the last build of {build_dir} failed ({', '.join(failed[:5])}"
                     f"{' ...' if len(failed) > 5 else ''}); {artifact.name} and the metadata "
                     "beside it are from a finished earlier stage")
