"""Are this checkout's artifacts byte for byte an earlier commit's? Speed work must not change
what users get: the same models, images and flags built by both, every ``.tflite`` and
``.onnx`` file compared by SHA-256. Each side builds twice: a file that differed between the
earlier commit's own two builds had no single "before" to keep (marked so, not counted as a
change); one that differs between this checkout's two builds is a failure.

Models: the bundled sample, and keras.applications MobileNetV2 alpha 0.35 at 96x96 and
EfficientNetB0 at 64x64 (weights=None, seeded, 4 classes, saved once and given to both);
targets tflite (the four default modes, with int8-mixed when the build adds it) and onnx.

    python benchmarks/artifacts_unchanged.py --before <ref> [--keep DIR] \
        > benchmarks/artifacts_unchanged.out.md

The earlier commit runs from a temporary ``git worktree`` with this interpreter. Exits non-zero
when a file differs or is missing on one side.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import checkouts  # noqa: E402
from benchmarks.models import efficientnet_64, mobilenet_96  # noqa: E402

ROOT = checkouts.ROOT
ARTIFACTS = (".tflite", ".onnx")


def build(checkout: Path, models: list[Path], out: Path) -> dict[str, str]:
    """SHA-256 of every artifact one ``invoke convert`` run from ``checkout`` writes."""
    checkouts.convert_from(checkout, models, out, "--target", "tflite,onnx")
    return {path.relative_to(out).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(out.rglob("*")) if path.suffix in ARTIFACTS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git ref of the earlier commit")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy the builds of this checkout here when they differ, to diff them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        sample = work / "sample.h5"
        shutil.copy(ROOT / "model" / "sample.h5", sample)
        built = [sample, mobilenet_96(work), efficientnet_64(work)]
        with checkouts.earlier_commit(args.before, work / "earlier") as earlier:
            before = build(earlier, built, work / "before")
            again = build(earlier, built, work / "before-again")
        now = build(ROOT, built, work / "now")
        now_again = build(ROOT, built, work / "now-again")
        if args.keep is not None and now != now_again:
            for side in ("now", "now-again"):
                shutil.copytree(work / side, args.keep / side, dirs_exist_ok=True)
            print(f"this checkout's two builds differ: both kept in {args.keep}", file=sys.stderr)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    print(f"## Artifacts of {head} against {args.before}\n")
    print(f"{platform.machine()}, {os.cpu_count()} cores; `invoke convert --target tflite,onnx`, "
          "local runner, the bundled dataset.\n")
    print("| artifact | same bytes as the earlier commit |")
    print("|---|---|")
    differ = unsettled = 0
    for name in sorted(before.keys() | now.keys()):
        if name in before and name in now and before[name] != again.get(name):
            unsettled += 1
            state = "differed between the earlier commit's two builds"
        else:
            same = before.get(name) is not None and before.get(name) == now.get(name)
            differ += not same
            state = ("yes" if same else "missing now" if name not in now
                     else "new" if name not in before else "NO")
        if name in now and now[name] != now_again.get(name):
            differ += 1
            state += "; DIFFERS between this checkout's two builds"
        elif name in now:
            state += "; the same in this checkout's two builds"
        print(f"| {name} | {state} |")
    print(f"\n{len(before.keys() & now.keys())} artifacts built by both: {differ} differ or exist "
          f"on one side only or between this checkout's builds; {unsettled} differed between the "
          "earlier commit's own builds.")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
