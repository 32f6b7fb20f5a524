"""Stage entry point: ``python -m converters run-job JOB.json [JOB.json ...]``.

The local runner starts it as a child process (with every job of a one-at-a-time build, so
TensorFlow is imported once); the docker runner starts it inside a stage's image, one job at a
time. Both run exactly this code.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

USAGE = "usage: python -m converters run-job JOB.json [JOB.json ...]"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "run-job":
        print(USAGE, file=sys.stderr)
        return 2
    # Ctrl-C (the parent build forwards SIGINT) ends a stage process at once, even inside a
    # long TensorFlow call, and without a traceback: the executor's staging folder means an
    # interrupted stage leaves no artifact. (In a container, docker run --init makes this
    # process not PID 1, which would ignore a signal's default action.)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Quieten TensorFlow's C++ logging before anything imports it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    try:
        from converters.pipeline.executor import run_job_files

        return run_job_files([Path(arg) for arg in argv[1:]])
    except KeyboardInterrupt:  # the parent build reports the interruption
        return 130


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown: with TensorFlow, LiteRT and MediaPipe
    loaded it took 1.1 s on a 2-core x86-64 machine (finalizing their modules and threads), once
    every job had already written its outputs, stamps or error file. What the libraries
    registered to run at exit still runs (TensorFlow's autograph removes its generated files
    from the temporary folder; logging flushes its handlers), and output is flushed."""
    atexit._run_exitfuncs()  # the handlers Python's own exit runs first (CPython's function)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
