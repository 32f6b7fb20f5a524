"""Where a device is: a NAME as the user's OpenSSH client knows it.

A ``Host`` entry of ``~/.ssh/config`` (its HostName, Port, User, IdentityFile, ProxyJump and
UserKnownHostsFile are honoured) or ``[user@]host[:port]``.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from pathlib import Path

from converters.devices import require_paramiko
from converters.errors import ConfigError

DEFAULT_PORT = 22
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
# user@host, host:port, user@host:port, user@[::1]:port
NAME_PATTERN = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]\s]+\]|[^@:\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class DeviceAddress:
    """How to connect to one device."""

    name: str  # as the user wrote it (the report's and the records' name)
    host: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    known_hosts: tuple[str, ...] = ()  # files, the first one is where --accept-new-host-key writes

    @property
    def where(self) -> str:
        """``user@host:port``, as messages name it."""
        return f"{self.user}@{self.host}:{self.port}"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "host": self.host, "port": self.port, "user": self.user}


def ssh_config_path() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


def resolve(name: str) -> DeviceAddress:
    """The address of device ``name``: its ~/.ssh/config entry, with ``user@`` and ``:port``
    given in the name taking precedence (as ``ssh -p``/``ssh user@`` do)."""
    require_paramiko()
    import paramiko

    match = NAME_PATTERN.match(name.strip())
    if match is None:
        raise ConfigError(f"--device '{name}' is neither a Host of {ssh_config_path()} nor "
                          "[user@]host[:port]: give e.g. pi@192.168.1.20:22 or a Host name")
    host = match["host"].strip("[]")
    config = paramiko.SSHConfig()
    path = ssh_config_path()
    if path.is_file():
        try:
            config = paramiko.SSHConfig.from_path(str(path))
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {path}: {error}") from None
    options = config.lookup(host)
    port_text = match["port"] or options.get("port") or str(DEFAULT_PORT)
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{path}: Port '{port_text}' of Host {host} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"--device '{name}': port {port} is not between 1 and 65535")
    known = options.get("userknownhostsfile")
    known_files = tuple(known.split()) if known else DEFAULT_KNOWN_HOSTS
    jump = options.get("proxyjump")
    return DeviceAddress(
        name=name, host=options.get("hostname", host), port=port,
        user=match["user"] or options.get("user") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(p) for p in options.get("identityfile", [])),
        proxy_jump=None if jump in (None, "none") else jump,
        known_hosts=tuple(os.path.expanduser(p) for p in known_files))
