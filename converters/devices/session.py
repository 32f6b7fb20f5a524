"""One artifact on one device: copy its bundle, check it, install its runtime offline (once per
set of wheels), run ``run.py --benchmark`` and bring the outputs and timings back.

Everything goes under the device's cache folder: ``runs/<id>/`` for this run (removed at the end,
failed or not) and ``envs/<wheels hash>/`` for the runtime environment, kept and reused while
the bundle's wheels are the same.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters import console
from converters.bundles import verify
from converters.errors import DeviceError

if TYPE_CHECKING:  # the connection module imports Paramiko: only when a device is reached
    from converters.devices.connection import DeviceConnection

COMPLETE_MARKER = ".complete"  # written last into a runtime environment: it installed fully


@dataclass(frozen=True)
class Benchmark:
    """How ``run.py --benchmark`` measures."""

    runs: int
    warmup: int
    threads: int


@dataclass(frozen=True)
class DeviceResult:
    """What came back: the outputs file, the timings and the runtime environment used."""

    outputs: Path  # local copy of outputs.npz
    latency: dict[str, Any]  # latency.json
    environment: str  # the runtime environment's folder on the device
    reused_environment: bool


def cache_root(connection: DeviceConnection, folder: str) -> str:
    """The cache folder as an absolute path on the device (a relative one is under its login
    folder)."""
    return folder.rstrip("/") if folder.startswith("/") else f"{connection.home()}/{folder}"


def bundle_listing(archive: Path) -> tuple[str, dict[str, Any]]:
    """(the bundle's folder name, its bundle.json) read from the archive on this host."""
    with tarfile.open(archive, "r:gz") as handle:
        for member in handle:
            if member.name.endswith("/" + verify.BUNDLE_JSON) and member.name.count("/") == 1:
                extracted = handle.extractfile(member)
                if extracted is not None:
                    return member.name.split("/")[0], json.loads(extracted.read())
    raise DeviceError(f"{archive} has no {verify.BUNDLE_JSON}")


def wheels_key(listing: dict[str, Any]) -> str:
    """What the runtime environment is made of: the wheels' and requirements' hashes."""
    parts = sorted(f"{name}:{record['sha256']}" for name, record in listing["files"].items()
                   if name.startswith("wheels/") or name == "requirements.txt")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def run_bundle(connection: DeviceConnection, archive: Path, cache_folder: str,
               benchmark: Benchmark, fetch_to: Path) -> DeviceResult:
    """Ship ``archive`` (with its ``.sha256`` beside it) to the device, check it, install its
    runtime, benchmark it, and copy outputs.npz and latency.json into ``fetch_to``."""
    name, listing = bundle_listing(archive)
    root = cache_root(connection, cache_folder)
    run_dir = f"{root}/runs/{uuid.uuid4().hex[:12]}"
    connection.check(["mkdir", "-p", run_dir], f"creating {run_dir}")
    try:
        remote_archive = f"{run_dir}/{archive.name}"
        connection.put(archive, remote_archive)
        checksum = archive.with_name(archive.name + verify.CHECKSUM_SUFFIX)
        connection.put(checksum, remote_archive + verify.CHECKSUM_SUFFIX)
        connection.put(Path(verify.__file__), f"{run_dir}/verify.py")
        # The archive (every member, its .sha256) before anything is extracted, then the files.
        connection.check(["python3", f"{run_dir}/verify.py", remote_archive],
                         "checking the bundle archive with verify.py")
        connection.check(["tar", "-xzf", remote_archive, "-C", run_dir], "extracting the bundle")
        folder = f"{run_dir}/{name}"
        connection.check(["python3", f"{folder}/verify.py"], "checking the extracted bundle")
        environment, reused = install_runtime(connection, root, folder, wheels_key(listing))
        out = f"{run_dir}/out"
        connection.check([f"{environment}/bin/python", f"{folder}/run.py", f"{folder}/samples.npz",
                          "--benchmark", out, "--runs", str(benchmark.runs),
                          "--warmup", str(benchmark.warmup), "--threads", str(benchmark.threads)],
                         "run.py --benchmark")
        fetch_to.mkdir(parents=True, exist_ok=True)
        connection.get(f"{out}/outputs.npz", fetch_to / "outputs.npz")
        connection.get(f"{out}/latency.json", fetch_to / "latency.json")
        latency = json.loads((fetch_to / "latency.json").read_text())
    finally:
        remove_run_folder(connection, root, run_dir)
    return DeviceResult(fetch_to / "outputs.npz", latency, environment, reused)


def remove_run_folder(connection: DeviceConnection, root: str, run_dir: str) -> None:
    """Remove this run's folder (and ``runs/`` when no other run uses it). Best effort: when the
    connection itself failed, the error that says so is the one to report."""
    try:
        connection.run(["rm", "-rf", run_dir])
        connection.run(["rmdir", f"{root}/runs"])  # fails, harmlessly, while another run uses it
    except DeviceError as error:
        console.warn(f"could not remove {run_dir} from the device: {error}")


def install_runtime(connection: DeviceConnection, root: str, folder: str, key: str) -> tuple[str, bool]:
    """The runtime environment for these wheels: reused when an earlier run completed it, else
    made with ``python3 -m venv`` and ``pip install --no-index`` from the bundle's wheels.
    Returns (its folder, reused)."""
    environment = f"{root}/envs/{key}"
    if connection.run(["test", "-f", f"{environment}/{COMPLETE_MARKER}"]).exit_code == 0:
        return environment, True
    device = connection.address.name
    console.info(f"device {device}: installing the runtime into {environment} (offline, from the "
                 "bundle's wheels)")
    connection.check(["rm", "-rf", environment], f"clearing {environment}")
    try:
        connection.check(["python3", "-m", "venv", environment],
                         "creating a Python environment (python3 -m venv; Debian and Ubuntu need "
                         "the python3-venv package)")
        # No byte-compiling: Python compiles what it imports, when it first does.
        result = connection.run([f"{environment}/bin/python", "-m", "pip", "install", "--no-index",
                                 "--no-cache-dir", "--no-compile", "--disable-pip-version-check", "--quiet",
                                 "--find-links", f"{folder}/wheels", "-r",
                                 f"{folder}/requirements.txt"])
        if result.exit_code != 0:
            requirements = connection.run(["cat", f"{folder}/requirements.txt"]).stdout.split()
            raise DeviceError(
                f"device {device}: installing the runtime ({', '.join(requirements)}) from the "
                f"bundle's wheels failed (pip exit code {result.exit_code}): the device cannot "
                f"use the wheels built for it, or lacks what they need:\n{result.tail()}")
        connection.check(["touch", f"{environment}/{COMPLETE_MARKER}"], "marking the environment")
    except DeviceError:
        connection.run(["rm", "-rf", environment])  # no half-installed environment stays
        raise
    return environment, False
