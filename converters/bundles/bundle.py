"""Air-gapped deployment bundles: one built artifact and everything a device needs to run it.

``dist/<model>-<target>-<variant>-<os>_<arch>.tar.gz`` holds the artifact(s), their report
entries, ``bundle.json`` (every file's sha256 and size, the model's inputs (names, shapes,
dtypes) and quantization, preprocessing, class names, tool versions, the source manifest's
hash), ``run.py`` with ``imaging.py`` (the build's own image pipeline), ``verify.py`` (a
standard-library-only check of the bundle), ``requirements.txt`` and the runtime wheels for the
chosen platform and Python (``pip download --only-binary=:all:``), a README with the offline
install steps, and with ``--with-images`` the stage images (``docker save``). Every file taken
from the build folder is checked against the build's ``manifest.json`` first. Beside the
archive: ``<bundle>.sha256`` and, with a signing key, the detached Ed25519 signature
``<bundle>.sig``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from converters import console, native_output
from converters.bundles import verify
from converters.bundles.archive import file_record, write_archive
from converters.bundles.verify import BUNDLE_JSON, CHECKSUM_SUFFIX, SIGNATURE_SUFFIX, checksum_line
from converters.cache import stage_cache
from converters.errors import BundleError, ConfigError
from converters.fsutil import (
    read_json,
    sha256_file,
    sha256_tree,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from converters.inputs import array_files, imaging
from converters.reporting.report import REPORT_JSON
from converters.runners import docker_cli
from converters.runners.images import image_definition
from converters.stages import data, export
from converters.targets import BundleHooks, all_targets
from converters.targets import get as get_target

DEVICE_RUNNER = Path(__file__).resolve().parent / "run.py"  # ships as the bundle's run.py
RUNNER_SUPPORT = Path(__file__).resolve().parent / "runner_support.py"
SAMPLES = "samples.npz"  # validation inputs for run.py --benchmark, when the bundle has them
PLATFORMS = {"linux/x86_64": "x86_64", "linux/aarch64": "aarch64"}
# glibc versions a manylinux wheel may target: any the device's glibc (2.17 or newer) can load.
MANYLINUX_MINORS = range(17, 40)


@dataclass(frozen=True)
class BundleRequest:
    build_dir: Path  # build/<model>
    target: str
    variant: str
    platform: str
    python: str
    with_images: bool
    dist: Path
    constraints: Path
    sign_key: Path | None = None
    # Validation inputs (.npz, one array per input name) shipped as samples.npz: what run.py's
    # --benchmark runs on a device.
    samples: Path | None = None

    def __post_init__(self) -> None:
        bundled = [name for name, target in all_targets().items() if target.bundle is not None]
        if self.target not in bundled:
            raise ConfigError(f"unknown bundle target '{self.target}': expected one of "
                              f"{', '.join(bundled)}")
        if self.platform not in PLATFORMS:
            raise ConfigError(f"unknown platform '{self.platform}': expected one of "
                              f"{', '.join(PLATFORMS)}")
        parts = self.python.split(".")
        if len(parts) != 2 or not all(part.isdigit() for part in parts):
            raise ConfigError(f"--python must look like 3.11, got '{self.python}'")

    @property
    def hooks(self) -> BundleHooks:
        hooks = get_target(self.target).bundle
        assert hooks is not None  # checked in __post_init__
        return hooks

    @property
    def name(self) -> str:
        return (f"{self.build_dir.name}-{self.target}-{self.variant}-"
                f"{self.platform.replace('/', '_')}")


def build_bundle(request: BundleRequest) -> Path:
    """Write ``dist/<name>.tar.gz`` with its ``.sha256`` (and ``.sig``); return its path."""
    if not (request.build_dir / REPORT_JSON).exists():
        raise ConfigError(f"no report in {request.build_dir}: run invoke convert --model ... "
                          f"--target {request.target} first")
    signing_key = load_signing_key(request.sign_key)
    manifest, manifest_sha256 = read_manifest(request.build_dir)
    for inputs in (REPORT_JSON, data.DATASET_INFO, export.MODEL_INFO):
        check_build_file(request.build_dir, manifest, inputs)
    return write_bundle(request, read_json(request.build_dir / REPORT_JSON), manifest,
                        manifest_sha256, signing_key)


def write_bundle(request: BundleRequest, report_data: dict[str, Any], manifest: dict[str, Any],
                 manifest_sha256: str, signing_key: Any = None) -> Path:
    """The bundle of ``request``'s artifact as ``report_data`` describes it (report.json, or
    during a build the entry its report will hold); each artifact file is checked against
    ``manifest`` as it is packed."""
    artifacts, entry = select_artifacts(request, report_data)
    destination = request.dist / f"{request.name}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="tec-bundle-") as folder:
        staging = Path(folder) / request.name
        (staging / "artifacts").mkdir(parents=True)
        for source in artifacts:
            copy = staging / "artifacts" / source.name
            shutil.copy2(source, copy)
            check_build_file(request.build_dir, manifest,
                             source.relative_to(request.build_dir).as_posix(), copy)
        write_json_atomic(staging / "report.json",
                          report_entries(report_data, entry, request.target))
        for name, source in shipped_code(request.hooks.device_runner).items():
            shutil.copy2(source, staging / name)
        if request.samples is not None:
            shutil.copy2(request.samples, staging / SAMPLES)
        requirements = pinned_requirements(request)
        write_text_atomic(staging / "requirements.txt", "\n".join(requirements) + "\n")
        download_wheels(requirements, request, staging / "wheels")
        if request.with_images:
            save_images(request.hooks.images, staging / "images")
        write_text_atomic(staging / "README.md", readme(request, report_data, entry))
        bundle = bundle_document(request, report_data, entry, manifest, manifest_sha256, staging)
        write_json_atomic(staging / BUNDLE_JSON, bundle)
        request.dist.mkdir(parents=True, exist_ok=True)
        digest = write_archive(staging, destination, request.name)
    write_anchors(destination, checksum_line(digest, request.name), signing_key)
    console.info(f"bundle: {destination} ({destination.stat().st_size / 2**20:.1f} MiB)")
    return destination


def load_signing_key(path: Path | None) -> Any:
    """The --sign-key, loaded before anything is built (a bad key writes nothing)."""
    if path is None:
        return None
    from converters.bundles.signing import load_signing_key as load

    return load(path)


def write_anchors(destination: Path, line: str, signing_key: Any) -> None:
    """``<bundle>.sha256`` always; ``<bundle>.sig`` when signing (a stale one goes)."""
    checksum = destination.with_name(destination.name + CHECKSUM_SUFFIX)
    signature = destination.with_name(destination.name + SIGNATURE_SUFFIX)
    write_text_atomic(checksum, line)
    console.info(f"sha256: {line.strip()} (written to {checksum})")
    if signing_key is None:
        signature.unlink(missing_ok=True)
        return
    from converters.bundles.signing import sign

    write_bytes_atomic(signature, sign(signing_key, line.encode()))
    console.info(f"signature: {signature} (Ed25519 over {checksum.name})")


def read_manifest(build_dir: Path, during_build: bool = False) -> tuple[dict[str, Any], str]:
    """The build's manifest.json and its sha256; refused when the build is marked incomplete,
    unless ``during_build`` (a stage of the running build bundles what its stages finished)."""
    path = build_dir / stage_cache.MANIFEST
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError) as error:
        raise BundleError(f"cannot read {path} ({error}): rebuild with invoke convert") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} does not hold a JSON object: rebuild with invoke convert")
    if manifest.get("complete") is False and not during_build:
        stale = ", ".join(manifest.get("stale_stages") or []) or "not recorded"
        raise BundleError(f"the build in {build_dir} is incomplete (stale stages: {stale}): its "
                          "artifacts may come from other inputs. Finish it with invoke convert, "
                          "then bundle")
    return manifest, hashlib.sha256(raw).hexdigest()


def check_build_file(build_dir: Path, manifest: dict[str, Any], relative: str,
                     copy: Path | None = None) -> None:
    """Refuse a build file that differs from the manifest (``copy``: the bytes being packed)."""
    recorded, record = manifest_record(build_dir, manifest, relative)
    if copy is not None and recorded == relative:
        actual = sha256_file(copy)
    else:  # recorded as part of a folder (Edge TPU, TensorRT): the folder's hash
        actual = sha256_tree(build_dir / recorded)
    if actual != record["sha256"]:
        raise BundleError(f"{build_dir / recorded} changed after the build: sha256 {actual[:12]}… "
                          f"but {stage_cache.MANIFEST} records {record['sha256'][:12]}…. Rebuild it with "
                          "invoke convert (invoke verify lists every changed file)")


def manifest_record(build_dir: Path, manifest: dict[str, Any],
                    relative: str) -> tuple[str, dict[str, Any]]:
    """The manifest entry covering ``relative``: its own, or that of the folder holding it."""
    artifacts = manifest.get("artifacts") or {}
    path = PurePosixPath(relative)
    for candidate in (path, *path.parents):
        if candidate.as_posix() in artifacts:
            return candidate.as_posix(), artifacts[candidate.as_posix()]
    raise BundleError(f"{build_dir / relative} is not recorded in {build_dir / stage_cache.MANIFEST}: "
                      "rebuild with invoke convert")


def select_artifacts(request: BundleRequest, report: dict[str, Any]) -> tuple[list[Path], dict[str, Any]]:
    """The files that run on the device, and the report entry that describes them."""
    if request.hooks.select is not None:
        return request.hooks.select(request, report)
    build_dir, target, variant = request.build_dir, request.target, request.variant
    entry = next((a for a in report["artifacts"] if a["target"] == target and a["variant"] == variant),
                 None)
    if entry is None:
        built = ", ".join(f"{a['target']} {a['variant']}" for a in report["artifacts"]) or "none"
        raise BundleError(f"{build_dir} has no {target} {variant} artifact (built: {built}): run "
                          f"invoke convert --target {target} first")
    return [build_dir / entry["path"]], entry


def report_entries(report: dict[str, Any], entry: dict[str, Any], target: str) -> dict[str, Any]:
    """The bundle's report.json: the model, dataset facts, reference, the artifact's entry and
    the target's own report section when it has one."""
    own = get_target(target).report
    return {"model": report["model"], "dataset": {k: report["dataset"][k] for k in
                                                  ("class_names", "validation_count", "preprocessing")},
            "reference": report["reference"], "artifact": entry,
            **({target: report.get(target)} if own is not None else {})}


def pinned_requirements(request: BundleRequest) -> list[str]:
    pins = {}
    for line in request.constraints.read_text().splitlines():
        name, separator, version = line.strip().partition("==")
        if separator:
            pins[name.lower()] = version
    return [f"{name}=={pins[name]}" if name in pins else name
            for name in request.hooks.requirements]


def download_wheels(requirements: list[str], request: BundleRequest, folder: Path) -> None:
    """Binary wheels for the device's platform and Python, dependencies included."""
    arch = PLATFORMS[request.platform]
    tags = [f"manylinux_2_{minor}_{arch}" for minor in MANYLINUX_MINORS]
    tags += [f"manylinux2014_{arch}", f"linux_{arch}"]
    version = request.python.replace(".", "")
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "--python-version", request.python, "--implementation", "cp",
            "--abi", f"cp{version}", "--abi", "abi3", "--abi", "none",
            "-c", str(request.constraints), "-d", str(folder)]
    for tag in tags:
        argv += ["--platform", tag]
    console.info(f"$ pip download --only-binary=:all: --platform ..._{arch} --python-version "
                 f"{request.python} {' '.join(requirements)}")
    result = subprocess.run([*argv, *requirements], capture_output=True, text=True)
    if result.returncode != 0:
        detail = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        raise BundleError(f"pip could not download the runtime wheels for {request.platform}, "
                          f"Python {request.python}: {'; '.join(detail) or result.stderr[-500:]}")


def save_images(names: tuple[str, ...], folder: Path) -> None:
    docker_cli.require_engine()
    folder.mkdir()
    for name in names:
        tag = image_definition(name).tag
        if docker_cli.image_inspect(tag) is None:
            raise BundleError(f"--with-images: the {name} image {tag} does not exist: build it "
                              f"with invoke images --target {name}")
        console.info(f"$ docker save {tag}")
        saved = docker_cli.docker("save", "--output", str(folder / f"{name}.tar"), tag, timeout=1800)
        if saved.returncode != 0:
            raise BundleError(f"docker save {tag} failed: {saved.stderr.strip()}")


def bundle_document(request: BundleRequest, report: dict[str, Any], entry: dict[str, Any],
                    manifest: dict[str, Any], manifest_sha256: str,
                    staging: Path) -> dict[str, Any]:
    dataset = read_json(request.build_dir / data.DATASET_INFO)
    stages = manifest["stages"]
    files = {path.relative_to(staging).as_posix(): file_record(path)
             for path in sorted(staging.rglob("*")) if path.is_file()}
    artifact = next(name for name in files if name.startswith("artifacts/")
                    and not name.endswith(".json"))
    inputs = export.model_inputs(request.build_dir)
    image = inputs[0] if len(inputs) == 1 and inputs[0].is_image else None
    return {
        "schema_version": 1,
        "name": request.name,
        "target": request.target,
        "variant": request.variant,
        "platform": request.platform,
        "python": request.python,
        "runtime": request.hooks.runtime,
        "artifact": artifact,
        "model": {"name": report["model"]["name"],
                  "inputs": [tensor.as_dict() for tensor in inputs],
                  # what run.py reads an image file as: the one image input (null otherwise)
                  "input_shape": list(image.shape) if image is not None else None,
                  "input": entry.get("io", {}).get("input"),
                  "output": entry.get("io", {}).get("output")},
        "preprocessing": dataset["preprocessing"],
        "class_names": dataset["class_names"],
        "validation": {"metrics": entry.get("metrics"), "latency_ms": entry.get("latency_ms")},
        **request.hooks.facts(report),
        "tools": {name: stage["environment"] for name, stage in sorted(stages.items())},
        "source_manifest_sha256": manifest_sha256,
        "files": files,
    }


def readme(request: BundleRequest, report: dict[str, Any], entry: dict[str, Any]) -> str:
    name = request.name
    lines = [
        f"# {name}",
        "",
        f"{request.target} {request.variant} build of `{report['model']['name']}` for "
        f"{request.platform}, Python {request.python}.",
        "",
        "## Check, then install without a network",
        "",
        "```bash",
        *(check_signed(name) if request.sign_key is not None else check_unsigned(name)),
        f"tar -xzf {name}.tar.gz && cd {name}",
        "python3 verify.py                       # every file against bundle.json (stdlib only)",
        f"python{request.python} -m venv ../venv && . ../venv/bin/activate   # outside the bundle",
        "pip install --no-index --find-links wheels -r requirements.txt",
        "python run.py IMAGE                     # prints the top classes with scores",
        "python run.py INPUTS.npz                # or arrays: one per input name (a .npy: one input)",
        "```",
        "",
        *(trust_signed(name) if request.sign_key is not None else trust_unsigned(name)),
    ]
    if request.samples is not None:
        lines += ["", "## Measure on this device", "", f"`{SAMPLES}` holds validation inputs of the "
                  "build: `python run.py samples.npz --benchmark OUT --runs 30 --threads 1` runs "
                  "each once (outputs to `OUT/outputs.npz`) and times the first after a warm-up "
                  "(`OUT/latency.json`: median and p10-p90 in ms)."]
    lines += request.hooks.readme(request, report)
    if request.with_images:
        lines += ["", "## Build images", "", "`images/*.tar` are the stage images: on an "
                  f"air-gapped build host, `invoke images --load {name}.tar.gz`."]
    return "\n".join(lines) + "\n"


def shipped_code(device_runner: str) -> dict[str, Path]:
    """The code a bundle ships, by its name in the bundle: run.py and what it imports beside it
    (standard library, numpy and the runtime only), and verify.py. ``device_runner``: the
    target's module that runs its artifact (BundleHooks.device_runner)."""
    return {"run.py": DEVICE_RUNNER, "device_runner.py": module_file(device_runner),
            "runner_support.py": RUNNER_SUPPORT, "imaging.py": Path(imaging.__file__),
            "array_files.py": Path(array_files.__file__), "verify.py": Path(verify.__file__),
            "native_output.py": Path(native_output.__file__)}


def check_signed(name: str) -> list[str]:
    return [f"invoke verify-bundle {name}.tar.gz --public-key KEY.pub.pem   # on a build host, or:",
            f"openssl pkeyutl -verify -pubin -inkey KEY.pub.pem -rawin -in {name}.tar.gz.sha256 \\",
            f"    -sigfile {name}.tar.gz.sig && sha256sum -c {name}.tar.gz.sha256"]


def check_unsigned(name: str) -> list[str]:
    return [f"invoke verify-bundle {name}.tar.gz   # on a build host, or:",
            f"sha256sum -c {name}.tar.gz.sha256     # the sha256 as received through a trusted channel"]


def trust_signed(name: str) -> list[str]:
    return ["`verify.py` vouches for the files only if it is itself trusted: check the archive's "
            "signature (or its sha256 from a trusted channel) first, or run a `verify.py` kept from "
            f"a bundle you checked: `python3 verify.py {name}.tar.gz --public-key KEY.pub.pem` "
            "checks the archive and its signature before anything is extracted."]


def trust_unsigned(name: str) -> list[str]:
    return ["`verify.py` vouches for the files only if it is itself trusted: compare the "
            "archive's sha256 with one received through a trusted channel first, or run a "
            f"`verify.py` kept from a bundle you checked: `python3 verify.py {name}.tar.gz`. This "
            "bundle is not signed (`invoke bundle --sign-key KEY` signs one)."]


def module_file(name: str) -> Path:
    """The source file of module ``name``, found without importing it (a device runner imports
    what only a bundle has beside it)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise BundleError(f"the device runner module {name} was not found")
    return Path(spec.origin)
