"""Devices over SSH, against real OpenSSH servers on loopback (tests/ssh_device.py): the host
key checks, device-check, and builds with --device that measure every TFLite and ONNX artifact
on the device, report it, and fail with the reason when a device cannot be used.

Without sshd (or root for it) the tests skip saying so; CI sets REQUIRE_SSHD=1, which turns
that skip into a failure.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_invoke, skip_or_fail
from tests.ssh_device import (
    DockerDevice,
    SshDevice,
    client_home,
    device_image,
    fingerprint_of,
    free_port,
    keygen,
    missing_tools,
)

TARGETS = ("tflite", "onnx")
ARTIFACTS = ("tflite/sample_fp32.tflite", "tflite/sample_int8.tflite", "onnx/sample_fp32.onnx",
             "onnx/sample_int8.onnx")
VALIDATION_SIZE = 24


@dataclass
class Devices:
    """The test devices and the client side that reaches them (HOME with ~/.ssh)."""

    home: Path
    folder: Path  # keys: host_key(.pub), id_ed25519(.pub)
    caches: Path  # each device's cache folder is caches/<name>
    fingerprint: str  # of the devices' host key
    other_fingerprint: str  # of the key the "changed" known_hosts holds
    silent_port: int  # accepts TCP connections and never says a word

    def env(self) -> dict[str, str]:
        # The pip cache stays the user's: the bundles' wheels are not downloaded again.
        return {"HOME": str(self.home), "PIP_CACHE_DIR": os.path.expanduser("~/.cache/pip")}

    def cache(self, name: str) -> Path:
        return self.caches / name

    def invoke(self, *args: str, timeout: float = 600) -> tuple[int, str]:
        result = run_invoke(*args, env=self.env(), timeout=timeout)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devices]:
    """Two sshd on loopback: ``device`` (a Debian with Python 3, as this machine is) and
    ``no-runtime`` whose pip cannot install the bundle's wheels (PIP_NO_BINARY set for every
    session). Host names in ~/.ssh/config: device, no-runtime, unknown (known_hosts empty),
    changed (known_hosts holds another key), jumped (device, through device as ProxyJump),
    silent (a port that never answers)."""
    reason = missing_tools()
    if reason is not None:
        if os.environ.get("REQUIRE_SSHD") == "1":
            pytest.fail(f"REQUIRE_SSHD=1 but {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("ssh")
    host_key, other_key, identity = folder / "host_key", folder / "other_key", folder / "id_ed25519"
    keygen(host_key)
    keygen(other_key)
    authorized = keygen(identity)
    device = SshDevice(folder / "device", free_port(), host_key)
    no_runtime = SshDevice(folder / "no-runtime", free_port(), host_key,
                           environment={"PIP_NO_BINARY": ":all:"})
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes connections; nobody ever answers on them
    started: list[SshDevice] = []
    try:
        for server in (device, no_runtime):
            server.folder.mkdir()
            server.start(authorized)
            started.append(server)
        home = client_home(folder / "home", {"device": device, "no-runtime": no_runtime}, identity,
                           [device.known_hosts_line, no_runtime.known_hosts_line])
        ssh = home / ".ssh"
        other = other_key.with_suffix(".pub").read_text().split()
        (ssh / "known_hosts_changed").write_text(f"[127.0.0.1]:{device.port} {other[0]} {other[1]}\n")
        (ssh / "known_hosts_empty").write_text("")
        with (ssh / "config").open("a") as config:
            config.write(
                f"\nHost unknown\n  HostName 127.0.0.1\n  Port {device.port}\n  User root\n"
                f"  IdentityFile {identity}\n  UserKnownHostsFile {ssh / 'known_hosts_empty'}\n"
                f"\nHost changed\n  HostName 127.0.0.1\n  Port {device.port}\n  User root\n"
                f"  IdentityFile {identity}\n  UserKnownHostsFile {ssh / 'known_hosts_changed'}\n"
                f"\nHost jumped\n  HostName 127.0.0.1\n  Port {device.port}\n  User root\n"
                f"  IdentityFile {identity}\n  ProxyJump device\n"
                f"\nHost silent\n  HostName 127.0.0.1\n  Port {silent.getsockname()[1]}\n"
                f"  User root\n  IdentityFile {identity}\n")
        yield Devices(home, folder, folder / "caches", fingerprint_of(host_key.with_suffix(".pub")),
                      fingerprint_of(other_key.with_suffix(".pub")), silent.getsockname()[1])
    finally:
        silent.close()
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def device_build(devices: Devices, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    """The sample built for tflite and onnx (fp32 and int8) with --device device: (build
    folder, the command's output, its seconds)."""
    out = tmp_path_factory.mktemp("device-build") / "build"
    started = time.monotonic()
    code, output = devices.invoke(*build_flags(out, devices.cache("device")), "--device", "device")
    seconds = time.monotonic() - started
    assert code == 0, output
    return out / "sample", output, seconds


def build_flags(out: Path, cache: Path, target: str = ",".join(TARGETS),
                quant: str = "fp32,int8", timeout: int = 60) -> list[str]:
    return ["convert", "--target", target, "--quant", quant, "--out", str(out), "--runner", "local",
            "--validation-size", str(VALIDATION_SIZE), "--calibration-size", "8",
            "--latency-runs", "10", "--threads", "1", "--device-cache", str(cache),
            "--device-timeout", str(timeout)]


def read_report(build_dir: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads((build_dir / "report.json").read_text())
    return report


def test_device_check_prints_what_the_device_offers(devices: Devices) -> None:
    code, output = devices.invoke("device-check", "device")
    assert code == 0, output
    assert f"host key:  ssh-ed25519 {devices.fingerprint}" in output
    assert f"machine:   {os.uname().machine} (linux/{os.uname().machine})" in output
    assert "python3:   3." in output and "glibc 2." in output
    assert "Edge TPU:  no libedgetpu" in output and "free disk:" in output


def test_proxy_jump_reaches_the_device_through_another(devices: Devices) -> None:
    code, output = devices.invoke("device-check", "jumped")
    assert code == 0, output
    assert f"host key:  ssh-ed25519 {devices.fingerprint}" in output


def test_changed_host_key_is_refused_with_its_fingerprint(devices: Devices) -> None:
    code, output = devices.invoke("device-check", "changed", "--accept-new-host-key")
    assert code != 0
    assert "host key" in output and "CHANGED" in output
    assert devices.fingerprint in output and devices.other_fingerprint in output
    assert "Traceback" not in output


def test_unknown_host_key_is_refused_unless_accepted(devices: Devices) -> None:
    known = devices.home / ".ssh" / "known_hosts_empty"
    code, output = devices.invoke("device-check", "unknown")
    assert code != 0
    assert "host key of [127.0.0.1]:" in output and "is not in known_hosts" in output
    assert devices.fingerprint in output and "--accept-new-host-key" in output
    assert known.read_text() == ""
    code, output = devices.invoke("device-check", "unknown", "--accept-new-host-key")
    assert code == 0, output
    assert devices.fingerprint in output
    assert known.read_text().startswith("[127.0.0.1]:")
    code, output = devices.invoke("device-check", "unknown")  # known from now on
    assert code == 0, output


def test_unreachable_device_times_out_with_a_message(devices: Devices) -> None:
    started = time.monotonic()
    code, output = devices.invoke("device-check", "silent", "--device-timeout", "2")
    assert code != 0
    assert time.monotonic() - started < 30
    assert f"root@127.0.0.1:{devices.silent_port}" in output
    assert "within 2 s (--device-timeout)" in output and "Traceback" not in output, output


def test_build_measures_every_artifact_on_the_device(device_build: tuple[Path, str, float]) -> None:
    build_dir, output, seconds = device_build
    report = read_report(build_dir)
    assert report["devices"] == ["device"]
    artifacts = {a["path"]: a for a in report["artifacts"]}  # type: ignore[attr-defined]
    assert set(ARTIFACTS) <= set(artifacts)
    for path in ARTIFACTS:
        artifact = artifacts[path]
        [entry] = artifact["devices"]
        print(f"{path}: host {artifact['latency_ms']:.3f} ms, device {entry['latency_ms']:.3f} ms "
              f"(p10-p90 {entry['latency_spread_ms'][0]:.3f}-{entry['latency_spread_ms'][1]:.3f}), "
              f"top-1 agreement host {artifact['metrics']['top1_agreement']}, device "
              f"{entry['top1_agreement']}; build {seconds:.0f} s")
        assert entry["name"] == "device" and entry["failed"] is None
        assert entry["host"] == "127.0.0.1" and entry["arch"] == os.uname().machine
        assert entry["python"].startswith("3.") and entry["threads"] == 1
        assert entry["samples"] == VALIDATION_SIZE
        assert entry["runtime"] == artifact["runtime"]
        low, high = entry["latency_spread_ms"]
        assert 0 < low <= entry["latency_ms"] <= high
        # The same runtime on the same CPU: the device's outputs are the host validation's.
        assert entry["top1_agreement"] == artifact["metrics"]["top1_agreement"] == 1.0
        assert entry["metrics"]["max_abs_error"] == pytest.approx(
            artifact["metrics"]["max_abs_error"], abs=1e-6)
    markdown = (build_dir / "report.md").read_text()
    assert "| on device |" in markdown and " ms, top-1 1.000 |" in markdown
    assert "On device `device` (127.0.0.1:" in markdown
    assert "on device" in output and "ms, top-1 1.000" in output  # the console table's column
    assert "on device" in (build_dir / "report.html").read_text()


def test_unchanged_rebuild_does_not_run_on_the_device_again(
        devices: Devices, device_build: tuple[Path, str, float]) -> None:
    build_dir, _, _ = device_build
    code, output = devices.invoke(*build_flags(build_dir.parent, devices.cache("device")),
                                  "--device", "device")
    assert code == 0, output
    assert "▶" not in output  # no stage ran
    assert "device-device-tflite-int8 is up to date" in output


def test_nothing_is_left_on_the_device_beyond_its_cache(
        devices: Devices, device_build: tuple[Path, str, float]) -> None:
    cache = devices.cache("device")
    assert sorted(p.name for p in cache.iterdir()) == ["envs"]  # no bundle, no run folder
    environments = sorted(cache.glob("envs/*"))
    assert len(environments) == 2  # one per set of wheels (LiteRT, onnxruntime), reused
    assert all((environment / ".complete").is_file() for environment in environments)


def test_unreachable_device_fails_the_build_and_keeps_the_host_results(
        devices: Devices, device_build: tuple[Path, str, float]) -> None:
    build_dir, _, _ = device_build
    flags = build_flags(build_dir.parent, devices.cache("silent"), target="tflite", quant="fp32",
                        timeout=3)
    code, output = devices.invoke(*flags, "--device", "silent")
    assert code != 0
    assert "did not answer within 3 s" in output and "Traceback" not in output
    report = read_report(build_dir)
    assert report["devices"] == ["silent"]
    artifact = next(a for a in report["artifacts"]  # type: ignore[attr-defined]
                    if a["path"] == "tflite/sample_fp32.tflite")
    [failed] = artifact["devices"]
    assert failed["name"] == "silent" and "did not answer within 3 s" in failed["failed"]
    assert artifact["latency_ms"] > 0 and artifact["metrics"]["top1_agreement"] == 1.0  # the host's
    assert "Not measured on device `silent`" in (build_dir / "report.md").read_text()


def test_device_without_the_runtime_reports_the_install_failure(
        devices: Devices, device_build: tuple[Path, str, float]) -> None:
    build_dir, _, _ = device_build
    cache = devices.cache("no-runtime")
    code, output = devices.invoke(*build_flags(build_dir.parent, cache, target="tflite",
                                               quant="fp32"), "--device", "no-runtime")
    assert code != 0
    assert "installing the runtime (ai-edge-litert==" in output
    assert "from the bundle's wheels failed (pip exit code 1)" in output
    assert "Traceback" not in output
    [entry] = next(a for a in read_report(build_dir)["artifacts"]  # type: ignore[attr-defined]
                   if a["path"] == "tflite/sample_fp32.tflite")["devices"]
    assert entry["name"] == "no-runtime" and "installing the runtime" in entry["failed"]
    assert list(cache.glob("envs/*")) == [] and not (cache / "runs").exists()


def test_recommend_on_picks_the_fastest_on_the_device() -> None:
    from converters.reporting.report import recommend

    def artifact(path: str, host_ms: float, device_ms: float | None) -> dict[str, object]:
        devices = [] if device_ms is None else [
            {"name": "pi", "failed": None, "latency_ms": device_ms,
             "latency_spread_ms": [device_ms * 0.99, device_ms * 1.01]}]
        return {"path": path, "size_bytes": 10, "accuracy_drop": 0.0, "latency_ms": host_ms,
                "latency_spread_ms": [host_ms * 0.99, host_ms * 1.01], "devices": devices}

    artifacts = [artifact("fp32", 1.0, 9.0), artifact("int8", 2.0, 3.0), artifact("fp16", 0.5, None)]
    assert recommend(artifacts, 0.01)["fastest"] == "fp16"  # type: ignore[arg-type]
    on_pi = recommend(artifacts, 0.01, device="pi")  # type: ignore[arg-type]
    assert on_pi["fastest"] == "int8" and on_pi["latency_on"] == "pi"


def test_device_names_resolve_as_openssh_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from converters.devices.address import resolve
    from converters.errors import ConfigError

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        "Host pi\n  HostName 10.0.0.7\n  Port 2200\n  User pi\n  IdentityFile ~/.ssh/pi_key\n"
        "  ProxyJump gateway\n  UserKnownHostsFile ~/.ssh/pi_hosts\n")
    pi = resolve("pi")
    assert (pi.host, pi.port, pi.user, pi.proxy_jump) == ("10.0.0.7", 2200, "pi", "gateway")
    assert pi.identity_files == (str(tmp_path / ".ssh" / "pi_key"),)
    assert pi.known_hosts == (str(tmp_path / ".ssh" / "pi_hosts"),)
    other = resolve("admin@pi:22")  # the name's user and port win over the Host entry's
    assert (other.host, other.port, other.user) == ("10.0.0.7", 22, "admin")
    plain = resolve("ubuntu@192.168.1.4")
    assert (plain.host, plain.port, plain.user, plain.proxy_jump) == ("192.168.1.4", 22, "ubuntu", None)
    assert plain.known_hosts == (str(tmp_path / ".ssh" / "known_hosts"),
                                 str(tmp_path / ".ssh" / "known_hosts2"))
    with pytest.raises(ConfigError, match="neither a Host"):
        resolve("user@host:port:extra")
    with pytest.raises(ConfigError, match="port 70000"):
        resolve("host:70000")


@pytest.fixture(scope="module")
def container_device(devices: Devices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second device, ``box``: sshd in a container (Debian bookworm's python3) on the bridge
    network, its port published on loopback; its Host entry and key join ~/.ssh."""
    from converters.runners import docker_cli
    from converters.runners.images import BOOTSTRAP_BASE

    problem = docker_cli.engine_problem()
    if problem is not None:
        skip_or_fail(problem)
    if docker_cli.image_inspect(BOOTSTRAP_BASE) is None:
        skip_or_fail(f"no {BOOTSTRAP_BASE} image: make it with invoke images --base bootstrap")
    image = device_image(BOOTSTRAP_BASE, tmp_path_factory.mktemp("device-image"))
    box = DockerDevice(image, free_port())
    try:
        box.start(devices.folder / "host_key", devices.folder / "id_ed25519.pub")
        ssh = devices.home / ".ssh"
        with (ssh / "config").open("a") as config:
            config.write(f"\nHost box\n  HostName 127.0.0.1\n  Port {box.port}\n  User root\n"
                         f"  IdentityFile {devices.folder / 'id_ed25519'}\n")
        kind, key = (devices.folder / "host_key.pub").read_text().split()[:2]
        with (ssh / "known_hosts").open("a") as known:
            known.write(f"[127.0.0.1]:{box.port} {kind} {key}\n")
        yield "box"
    finally:
        box.stop()


@pytest.mark.docker
def test_two_devices_are_measured_in_parallel(devices: Devices, container_device: str,
                                             device_build: tuple[Path, str, float]) -> None:
    build_dir, _, _ = device_build
    cache = devices.cache("parallel")  # a new cache folder: both devices run (and install)
    code, output = devices.invoke(*build_flags(build_dir.parent, cache, target="tflite",
                                               quant="fp32"),
                                  "--device", "device", "--device", container_device,
                                  "--recommend-on", container_device)
    assert code == 0, output
    report = read_report(build_dir)
    assert report["devices"] == ["device", "box"]
    artifact = next(a for a in report["artifacts"]  # type: ignore[attr-defined]
                    if a["path"] == "tflite/sample_fp32.tflite")
    on_device, on_box = artifact["devices"]
    assert on_device["name"] == "device" and on_box["name"] == "box"
    assert on_box["os"] == "Debian GNU/Linux 12 (bookworm)" and on_box["python"].startswith("3.11.")
    assert on_box["top1_agreement"] == 1.0 and on_box["latency_ms"] > 0
    assert report["recommendation"]["latency_on"] == "box"  # type: ignore[index]
    stamps = [json.loads((build_dir / ".stages" / f"device-{name}-tflite-fp32.json").read_text())
              for name in ("device", "box")]
    # One connection each, at the same time: each started before the other finished.
    assert stamps[0]["started"] <= stamps[1]["finished"] and stamps[1]["started"] <= stamps[0]["finished"]
    print(f"parallel: device {on_device['latency_ms']:.3f} ms, box {on_box['latency_ms']:.3f} ms; "
          f"stages {stamps[0]['started']}..{stamps[0]['finished']} and "
          f"{stamps[1]['started']}..{stamps[1]['finished']}")
