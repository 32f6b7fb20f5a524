"""One exception tree for everything the converter reports to a user.

A :class:`ConverterError` is a user-facing failure: the command line prints its message and
exits non-zero without a traceback. Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re


class ConverterError(Exception):
    """A failure the user can act on. ``str(error)`` is the full message."""

    exit_code = 2


class ConfigError(ConverterError):
    """A flag, invoke.yaml value or combination of them is invalid."""


class ModelError(ConverterError):
    """The model file is missing, unreadable or not convertible as given."""


class DatasetError(ConverterError):
    """The dataset folder is missing or holds no usable image."""


class ConversionError(ConverterError):
    """A converter rejected the model (unsupported or unquantizable ops)."""


class ValidationError(ConverterError):
    """An artifact could not be run on the validation split."""


class ToolMissingError(ConverterError):
    """A tool or package a stage needs is not installed here."""


class BuildError(ConverterError):
    """A stage process failed; the message carries its command, exit code and log tail."""


class EngineUnavailable(ToolMissingError):
    """No docker CLI, or the Docker engine does not answer."""


class ImageBuildError(ConverterError):
    """An image could not be built; the message says why and what to do."""


class BundleError(ConverterError):
    """A bundle cannot be built, or an archive is not a trustworthy bundle."""


class DeviceError(ConverterError):
    """A device cannot be reached, refuses the connection or its host key, or cannot run an
    artifact."""


class LockError(ConverterError):
    """Another build holds the build directory."""


class VerifyError(ConverterError):
    """A file no longer matches the manifest."""


class CorruptFileError(ConverterError, ValueError):
    """A file the tool wrote (a stamp, the manifest, a report) is truncated or malformed.

    Also a ValueError, so code that treats an unreadable stamp as "stale" keeps doing so."""


class FileSystemError(ConverterError):
    """Reading or writing a file failed: disk full, read-only, no permission, missing folder."""


FILESYSTEM_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or pass another --out/--dist",
    errno.EDQUOT: "the disk quota is exhausted: free some space or pass another --out/--dist",
    errno.EROFS: "the file system is read-only: pass a writable --out/--dist",
    errno.EACCES: "permission denied: pass a folder you can write to",
    errno.EPERM: "operation not permitted: pass a folder you can write to",
    errno.ENAMETOOLONG: "the file name is too long",
}


def filesystem_error(error: OSError) -> FileSystemError:
    """A user-facing error for an OSError, naming the file and what to do."""
    where = error.filename if error.filename is not None else "a file"
    if error.filename2 is not None:
        where = f"{where} → {error.filename2}"
    hint = FILESYSTEM_HINTS.get(error.errno or 0, error.strerror or str(error))
    return FileSystemError(f"cannot read or write {where}: {hint} ({error.strerror or error})")


def wrapped_filesystem_error(error: Exception) -> FileSystemError | None:
    """The same for a library's own exception that wraps a file-system failure (TensorFlow
    raises ResourceExhaustedError for a full disk); None when ``error`` is something else."""
    text = str(error).strip()
    for code in FILESYSTEM_HINTS:
        if os.strerror(code) in text:
            detail = text.splitlines()[0][:400] if text else type(error).__name__
            return FileSystemError(f"cannot write: {FILESYSTEM_HINTS[code]} ({detail})")
    return None


def shown(value: object, quoted: bool = False, limit: int = 40) -> str:
    """A user's value as a message quotes it: cut to ``limit`` characters (a flag may hold any
    text, a number 400 digits), with ``quoted`` as its repr."""
    text = repr(value) if quoted else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def runtime_message(error: Exception) -> str:
    """A runtime's error text for a message: without a trailing period, and with a phrase of
    several words the runtime repeated back to back said once (LiteRT writes "failed to create
    XNNPACK runtime" once per attempt, all in one line)."""
    return re.sub(r"\b([A-Za-z]+(?: [A-Za-z]+)+)\1+", r"\1", str(error).strip()).rstrip(".")


def xnnpack_refusal(error: Exception) -> str | None:
    """What to tell a user when LiteRT's default CPU kernels (XNNPACK) refused to prepare a
    model as it first ran, or None for any other runtime error."""
    text = runtime_message(error)
    if "XNNPACK" not in text or "failed to prepare" not in text:
        return None
    return (f"{text}. A layer that outputs only zeros on the calibration samples can cause "
            "this: check the model's activations")


def error_class(name: str) -> type[ConverterError]:
    """The ConverterError subclass called ``name`` (errors cross process boundaries by name)."""
    found = globals().get(name)
    if isinstance(found, type) and issubclass(found, ConverterError):
        return found
    return ConverterError
