"""The full default build against four independent TFLiteConverter runs: wall time and peak
memory, side by side.

For MobileNetV2 96x96 alpha 0.35 and 224x224 alpha 1.0 (keras.applications, weights=None,
saved as .keras), on the bundled images (--allow-class-mismatch: 4 folders, 1000 outputs):

* build: ``invoke convert`` with the defaults (fp32, fp16, dynamic, int8 with uint8 I/O, every
  artifact validated, report; ``-j auto``, local runner, 2 threads): a real command line,
  process start included;
* four independent TFLiteConverter runs: one fresh Python process that loads the .keras file and runs four
  ``tf.lite.TFLiteConverter.from_keras_model`` conversions (fp32, fp16, dynamic, int8 with uint8
  I/O) with the same 100 calibration images the build calibrates with, no validation.

Both are sampled from /proc every 50 ms (benchmarks/stage_memory.py): the peak of the summed RSS
of the process tree, and the build's per-stage times from its own stage lines. The four
independent runs first, alternating for ``--rounds`` rounds (the machine's speed drifts by 10-20 % between
runs: the medians and every round's ratio are printed). With ``--before REF`` the same build
from an earlier commit (a temporary git worktree) joins the alternation, so a change's effect
shows as a ratio measured in the same run.

    python benchmarks/default_vs_converter_runs.py [--rounds 3] [--before REF] \
        > benchmarks/default_vs_converter_runs.out.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import checkouts, stage_memory  # noqa: E402
from benchmarks.models import mobilenet  # noqa: E402

ROOT = stage_memory.ROOT
MODELS = ((96, 0.35), (224, 1.0))


def baseline_runs(model_path: Path, dataset_dir: Path, out: Path) -> None:
    """Four from_keras_model conversions with the build's calibration images (0..1 scaled)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from converters.inputs import dataset

    model = keras.models.load_model(model_path, compile=False)
    shape = tuple(int(v) for v in model.input_shape[1:])
    chosen = dataset.split(dataset.discover(dataset_dir).entries, 100, 200, 0)
    pixels = dataset.load_images(chosen.calibration, shape, "calibration")[0]  # type: ignore[arg-type]
    images = pixels.astype(np.float32) / 255.0
    out.mkdir(parents=True, exist_ok=True)
    for mode in ("fp32", "fp16", "dynamic", "int8"):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode != "fp32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            converter.representative_dataset = lambda: ([image[None]] for image in images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        (out / f"{mode}.tflite").write_bytes(converter.convert())


def build_command(checkout: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "invoke", "--search-root", str(checkout), "convert",
            "--model", str(model), "--dataset", str(ROOT / "dataset"), "--out", str(out),
            "--threads", "2", "--runner", "local", "--allow-class-mismatch"]


def measure(size: int, alpha: float, work: Path, interval: float, rounds: int,
            before: Path | None) -> str:
    """``rounds`` alternating runs (independent runs, the build from ``before`` when given, then
    the build) of one model; medians and each round's ratio, so the machine's drift between
    runs shows."""
    model = mobilenet(size, alpha, work)
    runs: dict[str, tuple[list[str], Path]] = {
        "independent": ([sys.executable, __file__, "--independent-runs", str(model),
                         str(work / "baseline")], ROOT)}
    if before is not None:
        runs["before"] = (build_command(before, model, work / f"before-{size}"), before)
    runs["build"] = (build_command(ROOT, model, work / f"build-{size}"), ROOT)
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}  # wall s, MiB
    last: stage_memory.Sampling | None = None
    for _ in range(rounds):
        for name, (command, checkout) in runs.items():
            shutil.rmtree(work / f"{name}-{size}", ignore_errors=True)  # a full build every round
            log = work / f"{name}-{size}.log"
            sampled, seconds, code = stage_memory.run(command, interval, log, checkout)
            if code:
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise SystemExit(f"the {name} run failed: exit {code}")
            measured[name].append((seconds, sampled.peak_total_kib / 1024))
            last = sampled if name == "build" else last
    assert last is not None
    medians = {name: [statistics.median(v[i] for v in values) for i in (0, 1)]
               for name, values in measured.items()}
    baseline_s, baseline_mib = medians["independent"]
    build_s, build_mib = medians["build"]
    ratios = ", ".join(f"{b[0] / s[0]:.2f}x ({b[0]:.1f} / {s[0]:.1f} s)"
                       for s, b in zip(measured["independent"], measured["build"], strict=True))
    stages = ", ".join(f"{s.name} {((s.ended or s.started) - s.started):.1f}" for s in last.stages)
    lines = [
        f"### MobileNetV2 {size}x{size} alpha {alpha}", "",
        f"| median of {rounds} alternating runs | independent runs | default build | build / independent |",
        "|---|---|---|---|",
        f"| wall s (process start included) | {baseline_s:.1f} | {build_s:.1f} "
        f"| {build_s / baseline_s:.2f}x |",
        f"| peak summed RSS MiB | {baseline_mib:.0f} | {build_mib:.0f} | {build_mib / baseline_mib:.2f}x |",
        "", f"Each round, build / independent: {ratios}.", ""]
    if before is not None:
        before_s, before_mib = medians["before"]
        rounds_before = ", ".join(
            f"{b[0] / e[0]:.2f}x time, {b[1] / e[1]:.2f}x memory"
            for e, b in zip(measured["before"], measured["build"], strict=True))
        lines += [f"The same build from the earlier commit: {before_s:.1f} s, peak {before_mib:.0f} "
                  f"MiB ({before_s / baseline_s:.2f}x / {before_mib / baseline_mib:.2f}x the "
                  f"independent runs); this build against it, each round: {rounds_before}.", ""]
    return "\n".join([
        *lines,
        f"Build stages (last round), s: {stages}.", "",
        f"Build peak (last round) at {last.peak_at:.1f} s: {'; '.join(last.peak_labels)}.", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--independent-runs", nargs=2, type=Path, metavar=("MODEL", "OUT"),
                        help="(internal) run four independent conversions in this process")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per model")
    parser.add_argument("--before", metavar="REF",
                        help="also build from this earlier commit (a git ref), alternated")
    args = parser.parse_args()
    if args.independent_runs:
        baseline_runs(args.independent_runs[0], ROOT / "dataset", args.independent_runs[1])
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="default-vs-independent-") as folder, \
            contextlib.ExitStack() as stack:
        before = (stack.enter_context(checkouts.earlier_commit(args.before, Path(folder) / "before"))
                  if args.before else None)
        sections = [measure(size, alpha, Path(folder), args.interval, args.rounds, before)
                    for size, alpha in MODELS]
    print("## Full default build vs four independent TFLiteConverter runs\n")
    print("\n".join(sections))


if __name__ == "__main__":
    main()
