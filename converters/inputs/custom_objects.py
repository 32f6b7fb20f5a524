"""The user's own Keras classes (``--custom-objects FILE.py``): read where the build starts,
imported in every stage process before the model loads.

A file's text travels in the stage's parameters, so it reaches a stage process, a container and
a Ray worker alike without a path that must exist there, and a changed file changes the stage
key. In the stage process it is run as a module named after the file (``layers.py`` →
``layers``): its ``@keras.saving.register_keras_serializable`` classes register themselves, and
a ``custom_objects`` dict it defines is passed to Keras' loader. The file must hold what it
needs itself (it is not imported from its folder, so a sibling module is not importable).
Importing it runs the user's code, which asking for the flag means.
"""

from __future__ import annotations

import functools
import sys
import traceback
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.errors import ConfigError, ModelError

FLAG = "--custom-objects"
DICT_NAME = "custom_objects"  # the optional name → class mapping a file may define


@dataclass(frozen=True)
class CustomObjectsFile:
    """One ``--custom-objects`` file: the path as given (messages name it) and its text."""

    path: str
    source: str

    @property
    def module_name(self) -> str:
        return Path(self.path).stem

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "source": self.source}

    @staticmethod
    def from_dict(data: dict[str, str]) -> CustomObjectsFile:
        return CustomObjectsFile(data["path"], data["source"])


def read(paths: Sequence[str]) -> tuple[CustomObjectsFile, ...]:
    """Read and syntax-check each file (nothing in it runs here); refuse a missing or
    unreadable file, one that is not Python, and two files that would be the same module."""
    files = tuple(_read_one(Path(path)) for path in paths)
    names = [file.module_name for file in files]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ConfigError(f"{FLAG} is given several files named {repeated[0]}.py: each file is "
                          "imported as a module named after it, so rename one of them")
    return files


def _read_one(path: Path) -> CustomObjectsFile:
    if not path.is_file():
        found = "a folder" if path.is_dir() else "nothing"
        raise ConfigError(f"{FLAG} {path}: expected a Python file that defines the model's "
                          f"custom layers, found {found} there")
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise ConfigError(f"{FLAG} {path}: expected a Python file named like a module "
                          "(layers.py, my_layers.py)")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{FLAG} {path} cannot be read as UTF-8 text: {error}") from None
    try:
        compile(source, str(path), "exec")
    except SyntaxError as error:
        raise ConfigError(f"{FLAG} {path} is not valid Python: {error.msg} (line "
                          f"{error.lineno})") from None
    return CustomObjectsFile(str(path), source)


@functools.cache
def imported(files: tuple[CustomObjectsFile, ...]) -> dict[str, Any]:
    """Run each file as its module (once per process) and return the ``custom_objects`` the
    files define, merged in order; registered classes need no entry there."""
    objects: dict[str, Any] = {}
    for file in files:
        module = _run(file)
        defined = getattr(module, DICT_NAME, {})
        if not isinstance(defined, dict) or not all(isinstance(key, str) for key in defined):
            raise ModelError(f"{FLAG} {file.path} defines {DICT_NAME} as "
                             f"{type(defined).__name__}: it must be a dict from the names the "
                             "model file uses to classes or functions")
        objects |= defined
    return objects


def _run(file: CustomObjectsFile) -> types.ModuleType:
    module = types.ModuleType(file.module_name)
    module.__file__ = file.path
    # Registered before it runs, as an import does: dataclasses and pickling look it up there.
    sys.modules[file.module_name] = module
    try:
        exec(compile(file.source, file.path, "exec"), module.__dict__)  # noqa: S102 (asked for)
    except (Exception, SystemExit) as error:  # whatever the user's code raises
        del sys.modules[file.module_name]
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
                 if frame.filename == file.path]
        where = f" (line {lines[-1]})" if lines else ""
        raise ModelError(f"{FLAG} {file.path} failed while being imported{where}: "
                         f"{type(error).__name__}: {str(error)[:300]}. Fix the file: it runs "
                         "before the model loads, in every stage") from None
    return module
