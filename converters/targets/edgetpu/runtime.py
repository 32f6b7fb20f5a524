"""Running Edge TPU artifacts: a compiled ``*_edgetpu.tflite`` through the Edge TPU delegate, and
an ``--edgetpu-split`` pair (head on the Edge TPU, tail on the CPU) from its ``*_split.json``."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.errors import ConfigError, ToolMissingError

if TYPE_CHECKING:
    from converters.validation.runtime import Runtime

EDGETPU_SUFFIX = "_edgetpu.tflite"
EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
                     "Windows": "edgetpu.dll"}


def open_runtime(artifact: Path, threads: int, device: str | None) -> Runtime:
    """LiteRT with the Edge TPU delegate, or the split pair for a ``*_split.json``."""
    from converters.validation.compare import TFLiteRuntime

    if artifact.suffix == ".json":
        from converters.targets.edgetpu.split import Pipeline, head_to_run, read_record

        record = read_record(artifact)
        head = head_to_run(artifact, record)
        return Pipeline(head, artifact.parent / record["tail"], threads,
                        edgetpu_delegates(head, device), record.get("signature"))
    return TFLiteRuntime(artifact, threads=threads, delegates=edgetpu_delegates(artifact, device))


def edgetpu_delegates(artifact: Path, device: str | None) -> list[Any] | None:
    """The Edge TPU delegate for a compiled ``*_edgetpu.tflite``; None for other artifacts."""
    if not artifact.name.endswith(EDGETPU_SUFFIX):
        if device:
            raise ConfigError(f"--device applies to *{EDGETPU_SUFFIX} artifacts, not {artifact.name}")
        return None
    from ai_edge_litert.interpreter import load_delegate

    library = EDGETPU_LIBRARIES.get(platform.system(), EDGETPU_LIBRARIES["Linux"])
    try:
        # Load the library first: LiteRT's Delegate fails noisily at exit when it cannot.
        ctypes.CDLL(library)
        return [load_delegate(library, {"device": device} if device else {})]
    except (ValueError, OSError, RuntimeError) as error:
        where = f" for device '{device}'" if device else ""
        raise ToolMissingError(
            f"the Edge TPU runtime {library} could not be loaded{where} ({error}): install "
            "libedgetpu (libedgetpu1-std, or libedgetpu1-max for maximum frequency, from Coral's "
            "apt repository) and plug in the Edge TPU (--device usb|pci|usb:N); to run on the "
            f"CPU instead use the uncompiled {artifact.name.replace(EDGETPU_SUFFIX, '.tflite')}"
        ) from None
