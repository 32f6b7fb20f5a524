"""What every Invoke task shares: no accidental short flags, user errors as a message and a
non-zero exit, required flags, help for a positional that took ``-h``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoke import Exit, task
from invoke.tasks import Task

from converters import console
from converters.errors import ConfigError, ConverterError, filesystem_error

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tasks.py, invoke.yaml


def cli_task(**options: Any) -> Callable[[Callable[..., None]], Task[Any]]:
    """Invoke's ``@task`` without automatic short flags: ``-h`` is help for every task, and no
    flag gets a one-letter form by accident (``-h`` was ``--threads``, ``--`` a flag)."""
    decorator: Callable[[Callable[..., None]], Task[Any]] = task(auto_shortflags=False, **options)
    return decorator


@contextmanager
def user_errors() -> Iterator[None]:
    """A ConverterError becomes a message and a non-zero exit, without a traceback."""
    try:
        yield
    except ConverterError as error:
        console.error(str(error))
        raise Exit(code=error.exit_code) from None
    except OSError as error:  # disk full, read-only folder: name the file, no traceback
        problem = filesystem_error(error)
        console.error(str(problem))
        raise Exit(code=problem.exit_code) from None
    except KeyboardInterrupt:
        console.error("interrupted")
        raise Exit(code=130) from None


def required(task_name: str, **flags: str) -> None:
    """Refuse an empty required flag. Required flags are not Invoke positionals, because a task
    with a missing positional rejects ``-h`` before it can show its help."""
    for name, value in flags.items():
        if not value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} is required: invoke {task_name} -h shows every flag")


def not_empty(**flags: str) -> None:
    """Refuse a flag given as an empty string (``--dist ""``): it would silently mean the
    default."""
    from converters.commands.settings import refuse_empty

    for name, value in flags.items():
        refuse_empty("--" + name.replace("_", "-"), value)


def show_help(task_name: str) -> None:
    """``invoke --help TASK`` (for a task whose positional argument took ``-h``)."""
    subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), "--help",
                    task_name], check=False)
