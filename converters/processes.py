"""Child processes the build starts (stage processes, docker and tool commands): run one while
streaming its output, and stop every one of them on Ctrl-C or when the build dies."""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import subprocess
import sys
import threading

LOG_TAIL_LINES = 20
PR_SET_PDEATHSIG = 1
# Processes started by run_streaming and still running, so that a Ctrl-C in the main thread can
# stop those that worker threads are waiting for.
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def run_streaming(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run ``argv``, copying its output live; return (exit code, last lines of output).

    On Ctrl-C the child gets SIGINT, then SIGTERM, so no stage process outlives the build.
    """
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True, preexec_fn=_die_with_parent)
    assert process.stdout is not None
    with _running_lock:
        _running.add(process)
    partial = b""
    try:
        while chunk := process.stdout.read1(65536):  # type: ignore[attr-defined]
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            partial += chunk
            *lines, partial = partial.split(b"\n")
            tail.extend(line.decode(errors="replace").rstrip("\r") for line in lines)
        if partial:
            tail.append(partial.decode(errors="replace"))
        return process.wait(), list(tail)
    except KeyboardInterrupt:
        _stop(process)
        raise
    finally:
        if process.poll() is None:
            _stop(process)
        with _running_lock:
            _running.discard(process)


def stop_running_processes() -> None:
    """Stop every stage process still running (on Ctrl-C while worker threads wait for them)."""
    with _running_lock:
        processes = list(_running)
    for process in processes:
        _stop(process)


def _die_with_parent() -> None:
    """Linux: the stage process gets SIGKILL when the build process dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux/glibc: Ctrl-C handling in run_streaming still applies
        pass


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGINT, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
