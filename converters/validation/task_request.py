"""``--task``: what each model output is validated as, as the user asks for it (checked when the
configuration is read, before any model is loaded)."""

from __future__ import annotations

from converters.errors import ConfigError

TASKS = ("auto", "classification", "detection", "segmentation", "regression", "embedding")


def parse_task_request(text: str) -> tuple[str, dict[str, str]]:
    """``--task``: one task for every output (``auto``, ``classification``, ...) and/or
    ``NAME=TASK`` per output, comma-separated (a repeated flag is joined with commas): the task
    of the outputs not named, and the named ones'."""
    default, named = "auto", {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, task = item.rpartition("=")
        if task not in TASKS:
            raise ConfigError(f"unknown --task '{task}' in '{item}': expected one of "
                              f"{', '.join(TASKS)}, or NAME=TASK for one output")
        if name:
            named[name] = task
        else:
            default = task
    return default, named
