"""Air-gapped deployment bundles: one built artifact and everything a device needs to run it.

``dist/<model>-<target>-<variant>-<os>_<arch>.tar.gz`` holds the artifact(s), their report
entries, ``bundle.json`` (every file's sha256 and size, the model's input and quantization,
preprocessing, class names, tool versions, the source manifest's hash), ``run.py`` with
``imaging.py`` (the build's own image pipeline), ``requirements.txt`` and the runtime wheels for
the chosen platform and Python (``pip download --only-binary=:all:``), a README with the offline
install steps, and with ``--with-images`` the stage images (``docker save``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters import console, docker, imaging
from converters.bundle_archive import BUNDLE_JSON, BundleError, file_record, write_archive
from converters.errors import ConfigError
from converters.fsutil import read_json, sha256_file, write_json_atomic, write_text_atomic
from converters.images import IMAGES
from converters.stages import data, export

PACKAGE_DIR = Path(__file__).resolve().parent
PLATFORMS = {"linux/x86_64": "x86_64", "linux/aarch64": "aarch64"}
TARGETS = ("tflite", "edgetpu", "onnx", "tensorrt")
# Runtime distributions per target (versions from constraints.txt); TensorRT comes with JetPack.
RUNTIME_REQUIREMENTS = {
    "tflite": ("ai-edge-litert", "numpy", "pillow"),
    "edgetpu": ("ai-edge-litert", "numpy", "pillow"),
    "onnx": ("onnxruntime", "numpy", "pillow"),
    "tensorrt": ("numpy", "pillow", "cuda-python"),
}
RUNTIMES = {"tflite": "litert", "edgetpu": "litert-edgetpu", "onnx": "onnxruntime",
            "tensorrt": "tensorrt"}
STAGE_IMAGES = {"tflite": ("tflite",), "onnx": ("tflite",), "edgetpu": ("tflite", "edgetpu"),
                "tensorrt": ("tflite", "tensorrt")}
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

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"unknown bundle target '{self.target}': expected one of "
                              f"{', '.join(TARGETS)}")
        if self.platform not in PLATFORMS:
            raise ConfigError(f"unknown platform '{self.platform}': expected one of "
                              f"{', '.join(PLATFORMS)}")
        parts = self.python.split(".")
        if len(parts) != 2 or not all(part.isdigit() for part in parts):
            raise ConfigError(f"--python must look like 3.11, got '{self.python}'")
        if not (self.build_dir / "report.json").exists():
            raise ConfigError(f"no report in {self.build_dir}: run invoke convert --model ... "
                              f"--target {self.target} first")

    @property
    def name(self) -> str:
        return (f"{self.build_dir.name}-{self.target}-{self.variant}-"
                f"{self.platform.replace('/', '_')}")


def build_bundle(request: BundleRequest) -> Path:
    """Write ``dist/<name>.tar.gz``; return its path."""
    report = read_json(request.build_dir / "report.json")
    artifacts, entry = select_artifacts(request, report)
    destination = request.dist / f"{request.name}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="tec-bundle-") as folder:
        staging = Path(folder) / request.name
        (staging / "artifacts").mkdir(parents=True)
        for source in artifacts:
            shutil.copy2(source, staging / "artifacts" / source.name)
        write_json_atomic(staging / "report.json", report_entries(report, entry, request.target))
        shutil.copy2(PACKAGE_DIR / "bundle_run.py", staging / "run.py")
        shutil.copy2(Path(imaging.__file__), staging / "imaging.py")
        requirements = pinned_requirements(request)
        write_text_atomic(staging / "requirements.txt", "\n".join(requirements) + "\n")
        download_wheels(requirements, request, staging / "wheels")
        if request.with_images:
            save_images(STAGE_IMAGES[request.target], staging / "images")
        write_text_atomic(staging / "README.md", readme(request, report, entry))
        bundle = bundle_document(request, report, entry, staging)
        write_json_atomic(staging / BUNDLE_JSON, bundle)
        request.dist.mkdir(parents=True, exist_ok=True)
        write_archive(staging, destination, request.name)
    console.info(f"bundle: {destination} ({destination.stat().st_size / 2**20:.1f} MiB, sha256 "
                 f"{sha256_file(destination)[:16]}…)")
    return destination


def select_artifacts(request: BundleRequest, report: dict[str, Any]) -> tuple[list[Path], dict[str, Any]]:
    """The files that run on the device, and the report entry that describes them."""
    build_dir, target, variant = request.build_dir, request.target, request.variant
    if target == "tensorrt":
        engine = next((e for e in report.get("tensorrt") or [] if e["precision"] == variant), None)
        if engine is None or not engine["ran"]:
            why = engine["reason"] if engine else "it was not asked for (--target tensorrt)"
            raise BundleError(f"no {variant} TensorRT engine in {build_dir}: {why}")
        path = build_dir / engine["engine"]
        return [path, path.with_suffix(".json")], {**engine, "target": "tensorrt", "variant": variant,
                                                   "path": engine["engine"]}
    kind = "edgetpu" if target == "edgetpu" else target
    entry = next((a for a in report["artifacts"] if a["target"] == kind and a["variant"] == variant),
                 None)
    if entry is None:
        built = ", ".join(f"{a['target']} {a['variant']}" for a in report["artifacts"]) or "none"
        raise BundleError(f"{build_dir} has no {target} {variant} artifact (built: {built}): run "
                          f"invoke convert --target {target} first")
    if target != "edgetpu":
        return [build_dir / entry["path"]], entry
    edgetpu = report.get("edgetpu") or {}
    if not edgetpu.get("compiled"):
        raise BundleError(f"the Edge TPU compile did not run for {build_dir}: there is no "
                          f"*_edgetpu.tflite to bundle. {edgetpu.get('not_run_reason', '')}")
    split = edgetpu.get("split") or {}  # --edgetpu-split: the CPU tail and the pair's record
    pair = [build_dir / split[key] for key in ("record", "tail")] if split.get("split") else []
    return [build_dir / path for path in edgetpu["compiled_models"]] + pair, entry


def report_entries(report: dict[str, Any], entry: dict[str, Any], target: str) -> dict[str, Any]:
    return {"model": report["model"], "dataset": {k: report["dataset"][k] for k in
                                                  ("class_names", "validation_count", "preprocessing")},
            "reference": report["reference"], "artifact": entry,
            "edgetpu": report.get("edgetpu") if target == "edgetpu" else None}


def pinned_requirements(request: BundleRequest) -> list[str]:
    pins = {}
    for line in request.constraints.read_text().splitlines():
        name, separator, version = line.strip().partition("==")
        if separator:
            pins[name.lower()] = version
    return [f"{name}=={pins[name]}" if name in pins else name
            for name in RUNTIME_REQUIREMENTS[request.target]]


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
    docker.require_engine()
    folder.mkdir()
    for name in names:
        tag = IMAGES[name].tag
        if docker.image_inspect(tag) is None:
            raise BundleError(f"--with-images: the {name} image {tag} does not exist: build it "
                              f"with invoke images --target {name}")
        console.info(f"$ docker save {tag}")
        saved = docker.docker("save", "--output", str(folder / f"{name}.tar"), tag, timeout=1800)
        if saved.returncode != 0:
            raise BundleError(f"docker save {tag} failed: {saved.stderr.strip()}")


def bundle_document(request: BundleRequest, report: dict[str, Any], entry: dict[str, Any],
                    staging: Path) -> dict[str, Any]:
    manifest = request.build_dir / "manifest.json"
    dataset = read_json(request.build_dir / data.DATASET_INFO)
    stages = read_json(manifest)["stages"]
    files = {path.relative_to(staging).as_posix(): file_record(path)
             for path in sorted(staging.rglob("*")) if path.is_file()}
    edgetpu = report.get("edgetpu") if request.target == "edgetpu" else None
    artifact = next(name for name in files if name.startswith("artifacts/")
                    and not name.endswith(".json"))
    return {
        "schema_version": 1,
        "name": request.name,
        "target": request.target,
        "variant": request.variant,
        "platform": request.platform,
        "python": request.python,
        "runtime": RUNTIMES[request.target],
        "artifact": artifact,
        "model": {"name": report["model"]["name"],
                  "input_shape": list(export.input_shape(request.build_dir)),
                  "input": entry.get("io", {}).get("input"),
                  "output": entry.get("io", {}).get("output")},
        "preprocessing": dataset["preprocessing"],
        "class_names": dataset["class_names"],
        "validation": {"metrics": entry.get("metrics"), "latency_ms": entry.get("latency_ms")},
        "edgetpu_runtime_version_needed": edgetpu["runtime_version_needed"] if edgetpu else None,
        "tools": {name: stage["environment"] for name, stage in sorted(stages.items())},
        "source_manifest_sha256": sha256_file(manifest),
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
        f"invoke verify-bundle --path {name}.tar.gz   # on a host with tensor-edge-converter",
        f"tar -xzf {name}.tar.gz && cd {name}   # bundle.json lists every file's sha256 and size",
        f"python{request.python} -m venv venv && . venv/bin/activate",
        "pip install --no-index --find-links wheels -r requirements.txt",
        "python run.py IMAGE                     # prints the top classes with scores",
        "```",
    ]
    if request.target == "tensorrt":
        lines += ["", "TensorRT itself is not in `wheels/`: the device's JetPack (or the NGC "
                  "image) provides it. The engine runs only with the TensorRT version and GPU "
                  "architecture named in `artifacts/*.json`."]
    if request.target == "edgetpu":
        version = (report.get("edgetpu") or {}).get("runtime_version_needed")
        lines += ["", "## Edge TPU runtime", "",
                  f"The compiled model needs Edge TPU runtime {version} or newer. Install "
                  "`libedgetpu1-std` (or `libedgetpu1-max`, maximum frequency, runs hotter) from "
                  "Coral's apt repository on a USB Accelerator host, or use the Dev Board's "
                  "Mendel image, which includes it. `python run.py IMAGE --device usb` (or pci)."]
    if request.with_images:
        lines += ["", "## Build images", "", "`images/*.tar` are the stage images: on an "
                  f"air-gapped build host, `invoke images --load {name}.tar.gz`."]
    return "\n".join(lines) + "\n"
