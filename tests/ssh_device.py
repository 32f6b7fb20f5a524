"""A real OpenSSH server on loopback standing in for a device: Debian's sshd started on a free
port with its own host key, an authorized test key and its own configuration, stopped by pid.

The client side is a HOME folder of its own: ``.ssh/config`` (one Host entry per device),
``known_hosts`` and the test key, so builds run with ``HOME=<it>`` find the device as a user's
OpenSSH client would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen")


def missing_tools() -> str | None:
    """Why no test device can start here (None: it can)."""
    if not SSHD.exists():
        return f"{SSHD} is missing: apt-get install openssh-server"
    if SSH_KEYGEN is None:
        return "ssh-keygen is missing: apt-get install openssh-client"
    if os.geteuid() != 0:
        return "sshd's privilege separation needs root to start a test device"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> str:
    """An ed25519 key pair at ``path`` (no passphrase); returns the public key line."""
    assert SSH_KEYGEN is not None
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
                   check=True)
    return path.with_suffix(".pub").read_text().strip()


def fingerprint_of(public_key: Path) -> str:
    """``SHA256:...`` of a public key file, as ssh-keygen -l prints it."""
    assert SSH_KEYGEN is not None
    line = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(public_key)],
                          check=True, capture_output=True, text=True).stdout
    return line.split()[1]


@dataclass
class SshDevice:
    """One sshd on 127.0.0.1:``port`` whose host key is ``host_key`` (its .pub beside it)."""

    folder: Path
    port: int
    host_key: Path
    environment: dict[str, str] = field(default_factory=dict)  # SetEnv for every session
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    def start(self, authorized: str) -> None:
        (self.folder / "authorized_keys").write_text(authorized + "\n")
        setenv = "".join(f"SetEnv {name}={value}\n" for name, value in self.environment.items())
        config = self.folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {self.folder / 'sshd.pid'}\nAuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
            "AllowTcpForwarding yes\nLogLevel ERROR\n" + setenv)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation folder
        self.log = (self.folder / "sshd.log").open("wb")
        self.process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / 'sshd.log').read_text()}")
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on port {self.port} within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.log is not None:
            self.log.close()

    @property
    def known_hosts_line(self) -> str:
        kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {key}"


def client_home(folder: Path, devices: dict[str, SshDevice], identity: Path,
                known: list[str]) -> Path:
    """A HOME whose ~/.ssh/config names each device (Host NAME → 127.0.0.1:port as root) and
    whose known_hosts holds ``known`` lines."""
    ssh = folder / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    entries = [f"Host {name}\n  HostName 127.0.0.1\n  Port {device.port}\n  User root\n"
               f"  IdentityFile {identity}\n" for name, device in devices.items()]
    (ssh / "config").write_text("\n".join(entries))
    (ssh / "known_hosts").write_text("".join(line + "\n" for line in known))
    return folder


# A device in a container: Debian's sshd, python3 and venv on the project's Debian base image
# (bootstrapped by `invoke images --base bootstrap`), on the default bridge network with its SSH
# port published on loopback only.
DEVICE_DOCKERFILE = """ARG BASE
FROM ${BASE}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \\
      --no-install-recommends openssh-server python3 python3-venv >/dev/null \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /run/sshd
"""


def device_image(base: str, folder: Path) -> str:
    """The container device's image, built from ``base`` unless a build of this Dockerfile
    exists (its tag is the Dockerfile's and base's hash)."""
    import hashlib

    from converters.runners import docker_cli

    digest = hashlib.sha256((base + DEVICE_DOCKERFILE).encode()).hexdigest()[:12]
    tag = f"tensor-edge-converter/test-ssh-device:{digest}"
    if docker_cli.image_inspect(tag) is None:
        (folder / "Dockerfile").write_text(DEVICE_DOCKERFILE)
        built = subprocess.run([docker_cli.docker_cli(), "build", "-q", "--build-arg", f"BASE={base}",
                                "-t", tag, str(folder)], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "DOCKER_BUILDKIT": "0"})
        if built.returncode != 0:
            raise RuntimeError(f"building {tag} failed: {built.stderr[-2000:]}")
    return tag


@dataclass
class DockerDevice:
    """sshd in a container of ``image``, reachable on 127.0.0.1:``port``."""

    image: str
    port: int
    container: str = ""

    def start(self, host_key: Path, authorized_keys: Path) -> None:
        from converters.runners import docker_cli

        started = docker_cli.docker(
            "run", "-d", "--rm", "--network", "bridge", "-p", f"127.0.0.1:{self.port}:22",
            "-v", f"{host_key}:/keys/host_key:ro", "-v", f"{authorized_keys}:/keys/authorized_keys:ro",
            self.image, "/usr/sbin/sshd", "-D", "-e", "-o", "HostKey=/keys/host_key",
            "-o", "AuthorizedKeysFile=/keys/authorized_keys", "-o", "StrictModes=no",
            "-o", "PermitRootLogin=prohibit-password", "-o", "PasswordAuthentication=no", timeout=60)
        if started.returncode != 0:
            raise RuntimeError(f"docker run failed: {started.stderr}")
        self.container = started.stdout.strip()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the published port answers once sshd speaks
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as attempt:
                attempt.settimeout(2)
                try:
                    if attempt.recv(4).startswith(b"SSH"):
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"sshd in container {self.container[:12]} did not answer")

    def stop(self) -> None:
        if self.container:
            from converters.runners import docker_cli

            docker_cli.docker("rm", "-f", self.container, timeout=60)
