"""What a bundle's ``run.py`` and its ``device_runner.py`` (the artifact's runtime, from its
target's package) share: the arrays they pass and the error for an input the model cannot take.
Ships in every bundle beside them: standard library and numpy only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from array_files import listed  # ships beside this file

Arrays = dict[str, np.ndarray]
# One sample's inputs (float32 by input name) in, every output (float32, by name) out.
RunOne = Callable[[Arrays], Arrays]


class InputError(Exception):
    """An input file this model cannot take: printed as one line, exit code 2."""


def fed_by_name(sample: Arrays, expected: dict[str, Any]) -> Arrays:
    """``sample`` keyed by the runtime's input names: the same names, or one input each."""
    if set(sample) == set(expected):
        return sample
    if len(sample) == 1 and len(expected) == 1:
        return {next(iter(expected)): next(iter(sample.values()))}
    raise InputError(f"the model's inputs are {listed(expected)}; the bundle lists "
                     f"{listed(sample)}")
