"""One SSH connection to a device (Paramiko): host key checked against known_hosts, commands
run from argv lists, files copied over SFTP.

An unknown or changed host key is refused, naming the host and the key's SHA256 fingerprint (as
``ssh`` shows it); ``accept_new_host_key`` adds an unknown key to the first known_hosts file,
never a changed one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from converters import console
from converters.devices.address import DeviceAddress, resolve
from converters.errors import DeviceError

TAIL_LINES = 12  # of a failed command's output, in its error message
# Paramiko logs its transport thread's failures (with tracebacks) to stderr when nothing handles
# its logger; every failure reaches the user as one DeviceError message instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Completed:
    """A remote command's exit status and output."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    def tail(self) -> str:
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()[-TAIL_LINES:]
        return "\n".join(f"  | {line}" for line in lines) or "  | (no output)"


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as OpenSSH prints a host key's fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: DeviceAddress) -> str:
    """The host's name in known_hosts: ``host``, or ``[host]:port`` off port 22."""
    return address.host if address.port == 22 else f"[{address.host}]:{address.port}"


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse a host key known_hosts does not hold, or add it when the user opted in."""

    def __init__(self, address: DeviceAddress, accept_new: bool) -> None:
        self.address = address
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        shown = f"{key.get_name()} {fingerprint(key)}"
        files = ", ".join(self.address.known_hosts)
        if not self.accept_new:
            raise DeviceError(
                f"device {self.address.name}: the host key of {hostname} is not in known_hosts "
                f"({files}); it offers {shown}. Check that fingerprint on the device "
                "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and add it with ssh-keyscan, or "
                "connect once with ssh, or pass --accept-new-host-key to trust it now")
        path = Path(self.address.known_hosts[0])
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with path.open("a") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        console.warn(f"device {self.address.name}: added the host key of {hostname} ({shown}) "
                     f"to {path} (--accept-new-host-key)")


class DeviceConnection:
    """An open SSH connection: run commands, copy files. Close it (or use :func:`connect`)."""

    def __init__(self, address: DeviceAddress, client: paramiko.SSHClient, timeout: float,
                 jumps: list[paramiko.SSHClient]) -> None:
        self.address = address
        self.client = client
        self.timeout = timeout
        self._jumps = jumps
        self._sftp: paramiko.SFTPClient | None = None

    @property
    def host_key(self) -> str:
        """The device's host key: type and SHA256 fingerprint."""
        transport = self.client.get_transport()
        assert transport is not None
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {fingerprint(key)}"

    def run(self, argv: list[str], timeout: float | None = None) -> Completed:
        """Run ``argv`` on the device (quoted for its shell: no word is interpreted)."""
        limit = self.timeout if timeout is None else timeout
        command = shlex.join(argv)
        try:
            _, stdout, _ = self.client.exec_command(command, timeout=limit)
            channel = stdout.channel
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + limit
            while True:  # read as it comes: a full channel window would stall the command
                finished = channel.exit_status_ready()
                while channel.recv_ready():
                    out += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(1 << 16)
                if finished:
                    break
                if time.monotonic() > deadline:
                    channel.close()
                    raise DeviceError(f"device {self.address.name}: `{command}` did not finish "
                                      f"within {limit:g} s (--device-timeout)")
                time.sleep(0.02)
            return Completed(tuple(argv), channel.recv_exit_status(), out.decode(errors="replace"),
                             err.decode(errors="replace"))
        except TimeoutError:
            raise DeviceError(f"device {self.address.name}: `{command}` sent nothing for "
                              f"{limit:g} s (--device-timeout)") from None
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise DeviceError(f"device {self.address.name}: `{command}` failed: {error}") from None

    def check(self, argv: list[str], what: str, timeout: float | None = None) -> Completed:
        """Run ``argv``; a non-zero exit is a DeviceError saying ``what`` failed, with its output."""
        result = self.run(argv, timeout)
        if result.exit_code != 0:
            raise DeviceError(f"device {self.address.name}: {what} failed (exit code "
                              f"{result.exit_code} of `{shlex.join(argv)}`):\n{result.tail()}")
        return result

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            channel = self._sftp.get_channel()
            if channel is not None:
                channel.settimeout(self.timeout)
        return self._sftp

    def home(self) -> str:
        """The login folder on the device (where relative SFTP paths start)."""
        return self._files(lambda: self.sftp.normalize("."), "find the home folder")

    def put(self, local: Path, remote: str) -> None:
        self._files(lambda: self.sftp.put(str(local), remote), f"copy {local.name} to {remote}")

    def get(self, remote: str, local: Path) -> None:
        self._files(lambda: self.sftp.get(remote, str(local)), f"copy {remote} back")

    def _files(self, action: Any, what: str) -> Any:
        try:
            return action()
        except TimeoutError:
            raise DeviceError(f"device {self.address.name}: could not {what} within "
                              f"{self.timeout:g} s (--device-timeout)") from None
        except (paramiko.SSHException, OSError) as error:
            raise DeviceError(f"device {self.address.name}: could not {what}: {error}") from None

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()
        for jump in reversed(self._jumps):
            jump.close()


@contextmanager
def connect(name: str, timeout: float, accept_new_host_key: bool = False) -> Iterator[DeviceConnection]:
    """An open connection to device ``name`` (its ~/.ssh/config entry or [user@]host[:port])."""
    address = resolve(name)
    jumps: list[paramiko.SSHClient] = []
    try:
        client = open_client(address, timeout, accept_new_host_key, jumps)
    except BaseException:
        for jump in reversed(jumps):
            jump.close()
        raise
    connection = DeviceConnection(address, client, timeout, jumps)
    try:
        yield connection
    finally:
        connection.close()


def open_client(address: DeviceAddress, timeout: float, accept_new: bool,
                jumps: list[paramiko.SSHClient]) -> paramiko.SSHClient:
    """A connected, authenticated client; through ``address.proxy_jump`` when set (each jump
    host is verified the same way and appended to ``jumps``, to be closed after)."""
    sock: Any = None
    if address.proxy_jump is not None:
        jump_address = resolve(address.proxy_jump.split(",")[-1])
        jump = open_client(jump_address, timeout, accept_new, jumps)
        jumps.append(jump)
        transport = jump.get_transport()
        assert transport is not None
        try:
            sock = transport.open_channel("direct-tcpip", (address.host, address.port),
                                          ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.SSHException, OSError) as error:
            raise DeviceError(f"device {address.name}: the jump host {address.proxy_jump} could "
                              f"not reach {address.host}:{address.port}: {error}") from None
    client = paramiko.SSHClient()
    for path in address.known_hosts:
        if Path(path).is_file():
            try:
                client.get_host_keys().load(path)
            except (OSError, ValueError, paramiko.SSHException) as error:
                raise DeviceError(f"cannot read known_hosts file {path}: {error}") from None
    client.set_missing_host_key_policy(HostKeyPolicy(address, accept_new))
    try:
        client.connect(address.host, address.port, username=address.user,
                       key_filename=list(address.identity_files) or None,
                       look_for_keys=not address.identity_files, allow_agent=True,
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                       channel_timeout=timeout, sock=sock)
    except DeviceError:
        client.close()
        raise
    except paramiko.BadHostKeyException as error:
        client.close()
        raise DeviceError(
            f"device {address.name}: the host key of {known_hosts_name(address)} CHANGED: it "
            f"offers {error.key.get_name()} {fingerprint(error.key)}, but known_hosts "
            f"({', '.join(address.known_hosts)}) holds {error.expected_key.get_name()} "
            f"{fingerprint(error.expected_key)}. Someone may be intercepting the connection, or "
            f"the device was reinstalled: check the fingerprint on the device, then remove the "
            f"old key (ssh-keygen -R '{known_hosts_name(address)}')") from None
    except paramiko.AuthenticationException as error:
        client.close()
        raise DeviceError(f"device {address.name}: {address.where} refused the login ({error}): "
                          "give an IdentityFile in ~/.ssh/config or load the key into ssh-agent") from None
    except TimeoutError:
        client.close()
        raise DeviceError(f"device {address.name}: {address.where} did not answer within "
                          f"{timeout:g} s (--device-timeout): is it on and reachable?") from None
    except (paramiko.SSHException, OSError, EOFError) as error:
        transport = client.get_transport()
        silent = transport is not None and not transport.remote_version  # no SSH banner came
        client.close()
        if silent or "banner" in str(error).lower():
            raise DeviceError(f"device {address.name}: {address.where} accepted the connection "
                              f"but did not answer within {timeout:g} s (--device-timeout): is "
                              "an SSH server listening on that port?") from None
        reason = str(error) or type(error).__name__
        raise DeviceError(f"device {address.name}: cannot connect to {address.where}: {reason}") from None
    return client
