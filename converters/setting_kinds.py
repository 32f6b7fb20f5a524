"""What a setting is and how its value is read: the kinds (text, whole number, fraction,
switch, paths, jobs), the :class:`Setting` row and the parsers that check a value's kind and
range. The table of settings itself is converters/commands/settings.py (the core's rows) and each
target's package (its own rows, collected through the registry).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from converters.errors import ConfigError, shown

# Value kinds: how a flag's text (or an invoke.yaml value) becomes a Python value.
TEXT, WHOLE, FRACTION, SWITCH, PATHS = "text", "whole", "fraction", "switch", "paths"
JOBS = "jobs"  # "auto" (converters/jobs.py's rule on this machine) or a whole number


@dataclass(frozen=True)
class Setting:
    name: str  # invoke.yaml key; the flag is --name-with-dashes
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()  # documented choices (a comma list may combine them)
    targets: tuple[str, ...] = ()  # the targets it applies to; () for every target
    flag: bool = True  # False: invoke.yaml only (models, model_dir)
    minimum: float | None = None  # WHOLE/FRACTION: smallest accepted value
    maximum: float | None = None
    repeatable: bool = False  # the flag may be given several times (PATHS always may)

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self, with_default: bool = True) -> str:
        """The flag's help: where it applies, the text, and its default."""
        scope = f"{'/'.join(self.targets)}: " if self.targets else ""
        shown = with_default and self.default not in (None, "", False, ())
        choices = f"; choices: {', '.join(self.choices)}" if self.choices else ""
        return f"{scope}{self.help}{choices}" + (f" (default {self.default})" if shown else "")



def parse(setting: Setting, value: Any) -> Any:
    """``value`` (a flag's text or an invoke.yaml value) as the setting's kind, in its range."""
    if value is None:
        return None
    parsed = PARSERS[setting.kind](setting, value)
    if setting.kind in (WHOLE, FRACTION) and parsed is not None:
        low, high = setting.minimum, setting.maximum
        if (low is not None and parsed < low) or (high is not None and parsed > high):
            bounds = (f"between {_bound(low)} and {_bound(high)}"
                      if low is not None and high is not None
                      else f"at least {_bound(low)}" if low is not None
                      else f"at most {_bound(high)}")
            raise ConfigError(f"{setting.flag_name} must be {bounds}, got {shown(value)}")
    return parsed


def _bound(limit: float | None) -> str:
    """A range's end as written: ``4294967295``, ``0.5`` (not ``4.29497e+09``)."""
    return str(int(limit)) if limit is not None and float(limit).is_integer() else f"{limit:g}"


def _whole(setting: Setting, value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise _not_a(setting, value, "a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _not_a(setting, value, "a whole number") from None


def _fraction(setting: Setting, value: Any) -> float:
    if isinstance(value, bool):
        raise _not_a(setting, value, "a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _not_a(setting, value, "a number") from None
    if not math.isfinite(number):  # NaN passes every range comparison
        raise _not_a(setting, value, "a finite number")
    return number


def _switch(setting: Setting, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _not_a(setting, value, "true or false")
    return value


def _paths(setting: Setting, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value  # `models: a.h5` is one model
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise _not_a(setting, value, "a list of paths")
    if not all(item.strip() for item in items):  # "" would name the current folder
        raise _not_a(setting, value, "a list of non-empty paths")
    return tuple(items)


def _text(setting: Setting, value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool | dict):
        raise _not_a(setting, value, "text")
    return str(value)


def _jobs(setting: Setting, value: Any) -> int:
    from converters.jobs import parse_jobs

    if isinstance(value, bool):
        raise _not_a(setting, value, "auto or a whole number")
    return parse_jobs(str(value))


PARSERS: dict[str, Callable[[Setting, Any], Any]] = {
    TEXT: _text, WHOLE: _whole, FRACTION: _fraction, SWITCH: _switch, PATHS: _paths, JOBS: _jobs,
}


def _not_a(setting: Setting, value: Any, what: str) -> ConfigError:
    where = f"{setting.flag_name} (invoke.yaml: {setting.name})" if setting.flag else \
        f"invoke.yaml's {setting.name}"
    return ConfigError(f"{where} must be {what}, got {shown(value, quoted=True)}")
