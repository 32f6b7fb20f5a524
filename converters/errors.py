"""One exception tree for everything the converter reports to a user.

A :class:`ConverterError` is a user-facing failure: the command line prints its message and
exits non-zero without a traceback. Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


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


class LockError(ConverterError):
    """Another build holds the build directory."""


class VerifyError(ConverterError):
    """A file no longer matches the manifest."""


def error_class(name: str) -> type[ConverterError]:
    """The ConverterError subclass called ``name`` (errors cross process boundaries by name)."""
    found = globals().get(name)
    if isinstance(found, type) and issubclass(found, ConverterError):
        return found
    return ConverterError
