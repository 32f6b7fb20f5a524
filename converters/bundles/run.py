#!/usr/bin/env python3
"""Run this bundle's model: ``python run.py IMAGE|INPUTS.npz|INPUT.npy [--top-k 5] [--device usb]``.

``python run.py samples.npz --benchmark OUT [--runs 30] [--warmup 3] [--threads N]`` measures
instead: every sample once (their outputs go to ``OUT/outputs.npz``, one array per output name,
samples on the first axis), then the first sample ``--warmup`` times untimed and ``--runs`` times
timed (``OUT/latency.json``: median and p10-p90 in ms).

An image goes through the build's own preprocessing (a model with one image input); arrays are
used as given: a ``.npz`` file holds one array per input name (one sample, or samples on the
first axis), a ``.npy`` file the input of a one-input model. Every output is printed: a summary
line (shape, min, mean, max) and, for class scores, the top classes.

Shipped in every deployment bundle as ``run.py`` beside ``imaging.py`` (the build's own image
pipeline), ``array_files.py`` (the build's own bounded array reading), ``device_runner.py`` (the
artifact's runtime, from its target's package), ``runner_support.py`` and ``bundle.json``
(inputs, quantization, preprocessing, class names). Needs only the runtime in
``requirements.txt``.
"""

from __future__ import annotations

import argparse
import json
import platform
import stat
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the bundle: verify.py finds nothing extra

from array_files import (  # noqa: E402  (ships beside this file)
    DEFAULT_MAX_ARRAY_MB,
    ArrayFileError,
    Budget,
    check_values,
    listed,
    load,
)
from device_runner import make_runner  # noqa: E402  (the artifact's runtime, ships beside this file)
from imaging import normalize, read_pixels  # noqa: E402  (ships beside this file)
from runner_support import Arrays, InputError, RunOne  # noqa: E402  (ships beside this file)

ARRAY_SUFFIXES = (".npz", ".npy")
DEFAULT_PREPROCESSING = {"mode": "0..1", "mean": None, "std": None}  # as invoke infer


def whole_number(low: int, high: int, meaning: str) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (``meaning``: what it counts)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more ({meaning}), got {value}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high} ({meaning}), got {value}")
        return value

    return parse


def load_pixels(image: Path, shape: list[int]) -> np.ndarray:
    """The image as the model's input pixels (InputError when it cannot be read)."""
    height, width, channels = shape
    try:
        regular = stat.S_ISREG(image.stat().st_mode)
    except OSError as error:
        raise InputError(f"cannot read image {image}: {error.strerror or error}") from None
    if not regular:
        raise InputError(f"{image} is not a regular file: pass an image file")
    with warnings.catch_warnings():
        # Over Image.MAX_IMAGE_PIXELS Pillow only warns (and errors past twice that): refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return read_pixels(image, height, width, channels)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise InputError(f"{image} is too large to read safely: {error}") from None
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read image {image}: {error}") from None


def image_inputs(image: Path, bundle: dict[str, Any]) -> Arrays:
    """The image, preprocessed as the build validated it, for a model with one image input."""
    model = bundle["model"]
    if model["input_shape"] is None:
        inputs = listed(f"'{t['name']}' {shape_text(t['shape'])}" for t in model["inputs"])
        raise InputError(f"this model does not take one image (its inputs: {inputs}): give a "
                         ".npz file with one array per input name (or a .npy file for a "
                         "one-input model)")
    pixels = load_pixels(image, model["input_shape"])
    preprocessing = bundle["preprocessing"] or DEFAULT_PREPROCESSING
    values = normalize(pixels[None], preprocessing["mode"], preprocessing["mean"],
                       preprocessing["std"]).astype(np.float32)
    return {model["inputs"][0]["name"]: values}


def fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """``shape`` is ``expected``, where a None (null) size takes any."""
    return len(shape) == len(expected) and all(
        size is None or size == found for found, size in zip(shape, expected, strict=True))


def array_inputs(path: Path, inputs: list[dict[str, Any]],
                 max_array_mb: int = DEFAULT_MAX_ARRAY_MB) -> Arrays:
    """One array per input (samples on the first axis) from a .npz file (one array per input
    name, each one sample or a first axis of samples) or a .npy file (a one-input model),
    whose arrays may declare at most ``max_array_mb`` (checked on their headers first)."""
    try:
        found = load(path, Budget(max_array_mb, "--max-array-mb N"), skip=("labels",))
    except ArrayFileError as error:
        raise InputError(str(error)) from None
    if set(found) == {""}:  # a .npy: the input of a one-input model
        if len(inputs) != 1:
            raise InputError(f"{path} holds one array; the model has {len(inputs)} inputs "
                             f"({listed(t['name'] for t in inputs)}): give a .npz file with "
                             "one array per input name")
        found = {inputs[0]["name"]: found[""]}
    batch = {}
    for tensor in inputs:
        name, shape = tensor["name"], tuple(tensor["shape"])
        expected = (f"{shape_text(shape)} for one sample or {shape_text(('N', *shape))} for N "
                    "samples")
        key = next(iter(found)) if name not in found and len(inputs) == len(found) == 1 else name
        if key not in found:
            raise InputError(f"{path} has no array '{name}' for the model input '{name}' "
                             f"(expected shape {expected}); arrays found: "
                             f"{listed(sorted(found))}")
        array = found[key]
        if fits(array.shape, shape):
            array = array[None]  # one sample
        if array.ndim == 0 or not fits(array.shape[1:], shape):
            raise InputError(f"array '{key}' in {path} has shape {array.shape}; the model input "
                             f"'{name}' expects {expected}")
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise InputError(f"array '{key}' in {path} holds {array.dtype} values; the model "
                             f"input '{name}' takes numbers ({tensor['dtype']})")
        try:
            check_values(array, tensor["dtype"], f"array '{key}' in {path}")
        except ArrayFileError as error:
            raise InputError(str(error)) from None
        batch[name] = array.astype(tensor["dtype"])
    counts = {name: len(array) for name, array in batch.items()}
    if len(set(counts.values())) > 1 or 0 in counts.values():
        raise InputError(f"{path}: every input needs the same number of samples, at least one "
                         f"({listed(f'{n}: {c}' for n, c in counts.items())})")
    return batch


def shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ("," if len(shape) == 1 else "") + ")"


def benchmark(run: RunOne, inputs: Arrays, folder: Path, runs: int, warmup: int,
              threads: int | None) -> dict[str, Any]:
    """Every sample once (outputs to ``folder/outputs.npz``), then the first one ``warmup``
    times untimed and ``runs`` times timed (``folder/latency.json``); returns the latter."""
    count = len(next(iter(inputs.values())))
    samples = [run({name: array[i:i + 1] for name, array in inputs.items()}) for i in range(count)]
    first = {name: array[:1] for name, array in inputs.items()}
    for _ in range(warmup):
        run(first)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(first)
        times.append((time.perf_counter() - start) * 1000.0)
    p10, p90 = np.percentile(times, [10, 90])
    latency = {"latency_ms": float(statistics.median(times)),
               "latency_spread_ms": [float(p10), float(p90)], "runs": runs, "warmup": warmup,
               "threads": threads, "samples": count, "python": platform.python_version(),
               "machine": platform.machine()}
    folder.mkdir(parents=True, exist_ok=True)
    stacked = {name: np.concatenate([s[name] for s in samples]) for name in samples[0]}
    np.savez(folder / "outputs.npz", **stacked)  # type: ignore[arg-type]
    (folder / "latency.json").write_text(json.dumps(latency, indent=2) + "\n")
    return latency


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="an image, or a .npz file (one array per input name: one sample or "
                             "samples on the first axis) or a .npy file (a one-input model)")
    parser.add_argument("--top-k", type=whole_number(1, 1 << 20, "how many classes to print"),
                        default=5, help="classes to print (default 5)")
    parser.add_argument("--device", help="Edge TPU: usb, pci, usb:0, ...")
    parser.add_argument("--max-array-mb", type=whole_number(1, 1 << 20, "MiB of arrays"),
                        default=DEFAULT_MAX_ARRAY_MB,
                        help="the most MiB a .npz/.npy file's arrays may declare (default "
                             f"{DEFAULT_MAX_ARRAY_MB}; checked before they are read)")
    parser.add_argument("--benchmark", type=Path, metavar="OUT",
                        help="measure instead of printing: outputs to OUT/outputs.npz, latency "
                             "to OUT/latency.json")
    parser.add_argument("--runs", type=whole_number(1, 100_000, "timed runs"), default=30,
                        help="--benchmark: timed runs of the first sample (default 30)")
    parser.add_argument("--warmup", type=whole_number(0, 100_000, "untimed runs"), default=3,
                        help="--benchmark: untimed runs first (default 3)")
    parser.add_argument("--threads", type=whole_number(1, 1024, "interpreter threads"),
                        help="interpreter threads (default: the runtime's)")
    args = parser.parse_args(argv)
    bundle = json.loads((HERE / "bundle.json").read_text())
    try:
        if args.input.suffix.lower() in ARRAY_SUFFIXES:
            inputs = array_inputs(args.input, bundle["model"]["inputs"], args.max_array_mb)
        else:
            inputs = image_inputs(args.input, bundle)
        run = make_runner(bundle, HERE / bundle["artifact"], args.device, args.threads)
        if args.benchmark is not None:
            latency = benchmark(run, inputs, args.benchmark, args.runs, args.warmup, args.threads)
            print(f"{latency['samples']} samples; median {latency['latency_ms']:.3f} ms "
                  f"(p10-p90 {latency['latency_spread_ms'][0]:.3f}-"
                  f"{latency['latency_spread_ms'][1]:.3f}) over {args.runs} runs; "
                  f"written to {args.benchmark}")
            return 0
        count = len(next(iter(inputs.values())))
        samples = [run({name: array[i:i + 1] for name, array in inputs.items()})
                   for i in range(count)]
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    classes = min((values.size for values in samples[0].values() if values.ndim == 2),
                  default=args.top_k)
    if args.top_k > classes:
        print(f"note: --top-k {args.top_k} is more than the model's {classes} classes: "
              f"printing all {classes}", file=sys.stderr)
    for index, outputs in enumerate(samples):
        indent = ""
        if count > 1:
            print(f"sample {index}:")
            indent = "  "
        for line in output_lines(outputs, bundle["class_names"], args.top_k):
            print(indent + line)
    return 0


def output_lines(outputs: Arrays, names: list[str], count: int) -> list[str]:
    """One sample's outputs. One vector per sample reads as class scores: its top classes.
    Other outputs (and every output of a model with several) get a one-line summary."""
    several = len(outputs) > 1
    lines = []
    for name, values in outputs.items():
        if several or values.ndim != 2:
            lines.append(f"{name}: shape {list(values.shape[1:])}, min {values.min():.4f}, "
                         f"mean {values.mean():.4f}, max {values.max():.4f}")
        if values.ndim == 2:
            scores = values.reshape(-1)
            lines += [f"{'  ' if several else ''}"
                      f"{names[i] if i < len(names) else str(i)}\t{scores[i]:.4f}"
                      for i in np.argsort(-scores, kind="stable")[:count]]
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
