"""What a model path holds (an .h5 or .keras file, or a SavedModel folder), checked without
loading it: what a build checks before any stage runs, without importing TensorFlow or numpy."""

from __future__ import annotations

from pathlib import Path

from converters.config import MODEL_SUFFIXES
from converters.errors import ModelError


def check_model_path(path: Path) -> str:
    """Validate the path without loading anything; return the model format."""
    if not path.exists():
        raise ModelError(
            f"model {path} does not exist: pass --model with a .h5 or .keras file or a "
            "SavedModel directory"
        )
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(
                f"model {path} is a folder but not a SavedModel (no saved_model.pb in it): pass a "
                ".h5 or .keras file or a SavedModel directory"
            )
        return "saved_model"
    if not path.is_file():  # a FIFO or a device: loading it would block or never end
        raise ModelError(f"model {path} is not a regular file: pass a .h5 or .keras file or a "
                         "SavedModel directory")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(
            f"model {path} has the unsupported extension '{path.suffix}': expected .h5, .hdf5, "
            ".keras or a SavedModel directory"
        )
    return "keras" if path.suffix.lower() == ".keras" else "h5"
