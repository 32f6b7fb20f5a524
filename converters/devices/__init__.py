"""Reaching a target device over SSH, probing what it offers, and running artifacts there."""

from __future__ import annotations

import importlib.util

from converters.errors import ToolMissingError


def require_paramiko() -> None:
    """Refuse early, with the install command, when the SSH library is missing."""
    if importlib.util.find_spec("paramiko") is None:
        raise ToolMissingError("reaching a device (--device, invoke device-check) needs Paramiko, "
                               "which is not installed: pip install -c constraints.txt -e '.[device]'")
