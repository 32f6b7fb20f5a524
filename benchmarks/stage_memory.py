"""Peak memory of an ``invoke convert`` build, per stage process, sampled from /proc.

Runs one real ``invoke convert`` command line (local runner) and polls every process in its
tree every --interval seconds: each stage process (``python -m converters run-job NAME.json``)
is named by its job file; the invoke process is ``invoke``. Prints per-stage max RSS and
wall time, the peak of the summed RSS of the whole tree, and the build's wall time. Linux only
(reads /proc); no dependency beyond the standard library (Keras for --mobilenet).

    python benchmarks/stage_memory.py --model M.keras --dataset dataset --quant int8
    python benchmarks/stage_memory.py --mobilenet 224 --dataset dataset --quant fp32,fp16,dynamic,int8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.models import mobilenet  # noqa: E402

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Seen:
    """One process of the build tree: its label, max RSS and when it was first/last seen."""

    label: str
    max_rss_kib: int = 0
    first: float = 0.0
    last: float = 0.0


@dataclass
class StageMemory:
    """RSS of the job process when a stage started, and its peak while the stage ran."""

    name: str
    start_kib: int
    peak_kib: int
    started: float
    ended: float | None = None


@dataclass
class Sampling:
    processes: dict[int, Seen] = field(default_factory=dict)
    peak_total_kib: int = 0
    peak_at: float = 0.0
    peak_labels: list[str] = field(default_factory=list)
    stages: list[StageMemory] = field(default_factory=list)
    log_offset: int = 0


def children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(parent, []).append(int(entry))
    return tree


def descendants(root: int) -> list[int]:
    tree = children_map()
    found, stack = [root], [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_KIB
    except (OSError, ValueError, IndexError):
        return 0


def label(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return "?"
    if "run-job" in argv:
        return "stage " + Path(argv[argv.index("run-job") + 1]).stem
    if any("invoke" in part for part in argv[:3]):
        return "invoke (parent)"
    return Path(argv[0]).name if argv else "?"


def sample_once(root: int, state: Sampling, now: float) -> int:
    """Sample the tree once; return the largest stage process's RSS (KiB)."""
    total = 0
    job = 0
    labels = []
    for pid in descendants(root):
        rss = rss_kib(pid)
        if rss == 0:
            continue
        seen = state.processes.setdefault(pid, Seen("", first=now))
        # read each time: a child caught between fork and exec still shows its parent's command
        seen.label = label(pid)
        seen.max_rss_kib = max(seen.max_rss_kib, rss)
        seen.last = now
        total += rss
        labels.append(f"{seen.label} {rss / 1024:.0f} MiB")
        if seen.label.startswith("stage "):
            job = max(job, rss)
    if total > state.peak_total_kib:
        state.peak_total_kib, state.peak_at, state.peak_labels = total, now, labels
    return job


def follow_stages(state: Sampling, log_path: Path, job_rss_kib: int, now: float) -> None:
    """Attribute the job process's RSS to the stage the build log says is running.

    The stage lines are the build's own: "▶ MODEL: STAGE" when a stage starts and
    "✔ MODEL: STAGE (N s)" when it ends.
    """
    with log_path.open("rb") as log:
        log.seek(state.log_offset)
        chunk = log.read()
    complete = chunk[:chunk.rfind(b"\n") + 1]
    state.log_offset += len(complete)
    for line in complete.decode(errors="replace").splitlines():
        if "▶ " in line:
            stage = line.split("▶ ", 1)[1].split(": ", 1)[-1].strip()
            state.stages.append(StageMemory(stage, job_rss_kib, job_rss_kib, now))
        elif "✔ " in line and state.stages:
            state.stages[-1].ended = now
    if state.stages and state.stages[-1].ended is None:
        state.stages[-1].peak_kib = max(state.stages[-1].peak_kib, job_rss_kib)


def run(command: list[str], interval: float, log_path: Path,
        checkout: Path = ROOT) -> tuple[Sampling, float, int]:
    """Run ``command`` (output to ``log_path``) in ``checkout`` (its own ``converters`` first on
    the path) and sample its process tree until it exits."""
    state = Sampling()
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=checkout, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                        "PYTHONPATH": str(checkout)})
        while process.poll() is None:
            now = time.perf_counter() - started
            job_rss = sample_once(process.pid, state, now)
            follow_stages(state, log_path, job_rss, now)
            time.sleep(interval)
    return state, time.perf_counter() - started, process.returncode


def report(state: Sampling, seconds: float, code: int, title: str) -> str:
    lines = [f"### {title}", "", f"exit {code}, wall {seconds:.1f} s, peak of summed RSS of the "
             f"tree {state.peak_total_kib / 1024:.0f} MiB at {state.peak_at:.1f} s "
             f"({'; '.join(state.peak_labels)})", "",
             "| process | max RSS MiB | seen from s | to s |", "|---|---|---|---|"]
    for seen in sorted(state.processes.values(), key=lambda s: s.first):
        if seen.max_rss_kib < 50 * 1024:
            continue  # shells and short helpers
        lines.append(f"| {seen.label} | {seen.max_rss_kib / 1024:.0f} | {seen.first:.1f} | "
                     f"{seen.last:.1f} |")
    lines += ["", "| stage (in order) | job RSS at start MiB | peak during MiB | growth MiB | s |",
              "|---|---|---|---|---|"]
    for stage in state.stages:
        seconds = (stage.ended if stage.ended is not None else stage.started) - stage.started
        lines.append(f"| {stage.name} | {stage.start_kib / 1024:.0f} | {stage.peak_kib / 1024:.0f} | "
                     f"{(stage.peak_kib - stage.start_kib) / 1024:+.0f} | {seconds:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mobilenet", type=int, help="build MobileNetV2 at this size instead")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--dataset", type=Path, default=ROOT / "dataset")
    parser.add_argument("--quant", default="fp32,fp16,dynamic,int8")
    parser.add_argument("--jobs", type=int, default=1, help="convert --jobs (2: a process per group)")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--extra", default="", help="more convert flags, space separated")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stage-memory-"))
    model = args.model or mobilenet(args.mobilenet, args.alpha, work)
    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert",
               "--model", str(model), "--dataset", str(args.dataset), "--out", str(work / "build"),
               "--quant", args.quant, "--threads", "2", "--runner", "local", "--jobs", str(args.jobs),
               *args.extra.split()]
    log_path = work / "convert.log"
    state, seconds, code = run(command, args.interval, log_path)
    if code != 0:
        print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
    title = f"{model.name} --quant {args.quant} --jobs {args.jobs} {args.extra}".strip()
    print(report(state, seconds, code, title))


if __name__ == "__main__":
    main()
