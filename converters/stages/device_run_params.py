"""What a ``device-run`` stage (one artifact measured on one device over SSH) is asked to do and
the record it writes: what planning needs, without Paramiko, the bundle code or numpy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from converters.stages.base import StageParams

DEVICE_RECORD = "devices/{device}/{target}_{variant}.json"


def device_slug(name: str) -> str:
    """A device name as a folder and stage name (``pi@10.0.0.2:22`` → ``pi_10.0.0.2_22``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "device"


@dataclass(frozen=True, kw_only=True)
class DeviceRunParams(StageParams):
    device: str  # the name as the user gave it
    # What the device was when probed for this build (DeviceFacts.identity): a different host
    # key, machine, system or Python is a different key. None when it could not be probed.
    identity: dict[str, Any] | None
    unavailable: str | None  # why the probe failed
    target: str
    variant: str
    artifact: str  # relative to the build folder
    validation_record: str  # the host validation of the same artifact
    output: str
    threads: int
    runs: int
    timeout: int
    cache_folder: str
