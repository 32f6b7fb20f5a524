"""What a device offers: machine, operating system, Python, glibc, runtimes, accelerators and
free disk, found with ``uname -m`` and one standard-library Python script run by its ``python3``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from converters.errors import ConverterError, DeviceError

if TYPE_CHECKING:  # the connection module imports Paramiko: only when a device is reached
    from converters.devices.connection import DeviceConnection

# Machine names as `uname -m` prints them → the bundle platform built for them.
PLATFORMS = {"x86_64": "linux/x86_64", "amd64": "linux/x86_64", "aarch64": "linux/aarch64",
             "arm64": "linux/aarch64"}
# Python modules that run artifacts, by what the report calls them.
RUNTIME_MODULES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime",
                   "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}

PROBE_SCRIPT = """
import ctypes.util, glob, importlib.util, json, os, platform, shutil, sys
try:
    release = platform.freedesktop_os_release().get("PRETTY_NAME")
except (AttributeError, OSError):
    release = None
home = os.path.expanduser("~")
print(json.dumps({
    "os": release or platform.system() + " " + platform.release(),
    "python": platform.python_version(),
    "libc": " ".join(platform.libc_ver()).strip(),
    "runtimes": {name: importlib.util.find_spec(module) is not None
                 for name, module in json.loads(sys.argv[1]).items()},
    "edgetpu": ctypes.util.find_library("edgetpu") is not None,
    "nvidia_gpu": bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/nvhost-ctrl-gpu"),
    "free_disk_bytes": shutil.disk_usage(home).free,
    "cpus": os.cpu_count(),
    "cached_environments": len(glob.glob(os.path.join(home, sys.argv[2], "envs", "*", ".complete"))),
}))
"""


@dataclass(frozen=True)
class DeviceFacts:
    """A device as probed. ``identity`` is what a device run's stage key holds of it."""

    name: str
    host: str
    port: int
    user: str
    host_key: str  # key type and SHA256 fingerprint
    arch: str  # uname -m
    os: str
    python: str  # x.y.z of its python3
    libc: str  # e.g. "glibc 2.36"
    runtimes: dict[str, bool]  # system-wide Python runtimes found
    edgetpu: bool  # libedgetpu found
    nvidia_gpu: bool
    free_disk_bytes: int
    cpus: int | None
    cached_environments: int  # runtime environments in its cache folder

    @property
    def platform(self) -> str:
        """The bundle platform (linux/x86_64, linux/aarch64) for its machine."""
        found = PLATFORMS.get(self.arch)
        if found is None:
            raise DeviceError(f"device {self.name} is a {self.arch} machine: bundles are built for "
                              f"{', '.join(sorted(set(PLATFORMS.values())))} only")
        return found

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    def identity(self) -> dict[str, Any]:
        """What makes a run on this device what it is: who answered (its host key) and the
        platform a bundle is built for. Free disk and the like do not change results."""
        return {"host": self.host, "port": self.port, "user": self.user, "host_key": self.host_key,
                "arch": self.arch, "os": self.os, "python": self.python, "libc": self.libc}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """What ``invoke device-check`` prints."""
        found = [name for name, present in self.runtimes.items() if present]
        return [
            f"device {self.name}: {self.user}@{self.host}:{self.port}",
            f"  host key:  {self.host_key}",
            f"  machine:   {self.arch} ({self.platform}), {self.cpus or '?'} CPU(s)",
            f"  system:    {self.os}, {self.libc or 'libc unknown'}",
            f"  python3:   {self.python}",
            f"  runtimes:  {', '.join(found) if found else 'none installed system-wide'}; "
            f"{self.cached_environments} cached by earlier runs (bundles bring their own)",
            f"  Edge TPU:  {'libedgetpu found' if self.edgetpu else 'no libedgetpu'}",
            f"  NVIDIA:    {'GPU device found' if self.nvidia_gpu else 'no GPU device'}",
            f"  free disk: {self.free_disk_bytes / 2**30:.1f} GiB in the login folder",
        ]


def probe(connection: DeviceConnection, cache_folder: str) -> DeviceFacts:
    """Ask the device what it is (no build, nothing written); ``cache_folder``: where runtime
    environments of earlier runs are (they are counted)."""
    name = connection.address.name
    arch = connection.check(["uname", "-m"], "uname -m").stdout.strip()
    result = connection.run(["python3", "-c", PROBE_SCRIPT, json.dumps(RUNTIME_MODULES),
                             cache_folder])
    if result.exit_code == 127 or "not found" in result.stderr and not result.stdout:
        raise DeviceError(f"device {name} has no python3 on its PATH: install Python 3.9 or "
                          "newer there (e.g. apt-get install python3 python3-venv)")
    if result.exit_code != 0:
        raise DeviceError(f"device {name}: probing it with python3 failed (exit code "
                          f"{result.exit_code}):\n{result.tail()}")
    try:
        found = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeviceError(f"device {name}: its python3 printed no probe result:\n{result.tail()}") from None
    address = connection.address
    return DeviceFacts(name=name, host=address.host, port=address.port, user=address.user,
                       host_key=connection.host_key, arch=arch, os=found["os"],
                       python=found["python"], libc=found["libc"], runtimes=found["runtimes"],
                       edgetpu=found["edgetpu"], nvidia_gpu=found["nvidia_gpu"],
                       free_disk_bytes=found["free_disk_bytes"], cpus=found["cpus"],
                       cached_environments=found["cached_environments"])


@dataclass(frozen=True)
class ProbeOutcome:
    """One device as a build found it: its facts, or why it could not be probed."""

    name: str
    facts: DeviceFacts | None
    problem: str | None


def probe_device(name: str, timeout: float, accept_new_host_key: bool,
                 cache_folder: str) -> ProbeOutcome:
    """Connect to ``name`` and probe it; a failure (unreachable, refused, no Python) is the
    outcome's ``problem``, not an exception."""
    from converters.devices.connection import connect

    try:
        with connect(name, timeout, accept_new_host_key) as connection:
            return ProbeOutcome(name, probe(connection, cache_folder), None)
    except ConverterError as error:
        return ProbeOutcome(name, None, str(error))


def probe_devices(names: tuple[str, ...], timeout: float, accept_new_host_key: bool,
                  cache_folder: str) -> tuple[ProbeOutcome, ...]:
    """Every device probed in parallel, one connection each, in the order given."""
    if not names:
        return ()
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return tuple(pool.map(
            lambda name: probe_device(name, timeout, accept_new_host_key, cache_folder), names))
