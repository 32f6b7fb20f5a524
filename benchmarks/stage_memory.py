"""Peak memory of an ``invoke convert`` build, per stage process, sampled from /proc.

Runs one real ``invoke convert`` command line (local runner) and polls every process in its
tree every --interval seconds: each stage process (``python -m converters run-job NAME.json``)
is named by its job file; the invoke process is ``invoke``. Prints per-stage max RSS and
wall time, the peak of the summed RSS of the whole tree, and the build's wall time. Linux only
(reads /proc); no dependency beyond the standard library.

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
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Seen:
    """One process of the build tree: its label, max RSS and when it was first/last seen."""

    label: str
    max_rss_kib: int = 0
    first: float = 0.0
    last: float = 0.0


@dataclass
class Sampling:
    processes: dict[int, Seen] = field(default_factory=dict)
    peak_total_kib: int = 0
    peak_at: float = 0.0
    peak_labels: list[str] = field(default_factory=list)


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


def sample_once(root: int, state: Sampling, now: float) -> None:
    total = 0
    labels = []
    for pid in descendants(root):
        rss = rss_kib(pid)
        if rss == 0:
            continue
        seen = state.processes.setdefault(pid, Seen(label(pid), first=now))
        seen.max_rss_kib = max(seen.max_rss_kib, rss)
        seen.last = now
        total += rss
        labels.append(f"{seen.label} {rss / 1024:.0f} MiB")
    if total > state.peak_total_kib:
        state.peak_total_kib, state.peak_at, state.peak_labels = total, now, labels


def run(command: list[str], interval: float) -> tuple[Sampling, float, int]:
    state = Sampling()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    while process.poll() is None:
        sample_once(process.pid, state, time.perf_counter() - started)
        time.sleep(interval)
    return state, time.perf_counter() - started, process.returncode


def mobilenet(size: int, alpha: float, folder: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None)
    path = folder / f"mobilenetv2_{size}_{alpha}.keras"
    model.save(path)
    return path


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
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mobilenet", type=int, help="build MobileNetV2 at this size instead")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--dataset", type=Path, default=ROOT / "dataset")
    parser.add_argument("--quant", default="fp32,fp16,dynamic,int8")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--extra", default="", help="more convert flags, space separated")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stage-memory-"))
    model = args.model or mobilenet(args.mobilenet, args.alpha, work)
    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert",
               "--model", str(model), "--dataset", str(args.dataset), "--out", str(work / "build"),
               "--quant", args.quant, "--threads", "2", "--runner", "local", "--jobs", "1",
               *args.extra.split()]
    state, seconds, code = run(command, args.interval)
    print(report(state, seconds, code, f"{model.name} --quant {args.quant} {args.extra}".strip()))


if __name__ == "__main__":
    main()
