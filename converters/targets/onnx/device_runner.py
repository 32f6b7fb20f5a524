"""An .onnx model in onnxruntime on the device: one sample in, every output out by name.

Ships in a bundle as ``device_runner.py`` beside ``run.py``: standard library, numpy and the
runtime in the bundle's ``requirements.txt`` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner_support import Arrays, RunOne, fed_by_name  # ships beside this file


def make_runner(bundle: dict[str, Any], artifact: Path, device: str | None,
                threads: int | None = None) -> RunOne:
    """onnxruntime on the CPU (``device`` is not used) with ``threads`` intra-op threads (None:
    its default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(artifact), options,
                                           providers=["CPUExecutionProvider"])
    sources = {value.name: value for value in session.get_inputs()}
    dtypes = {name: {"tensor(float)": "float32", "tensor(double)": "float64"}.get(
        value.type, value.type.removeprefix("tensor(").removesuffix(")"))
        for name, value in sources.items()}
    names = [value.name for value in session.get_outputs()]

    def run(sample: Arrays) -> Arrays:
        feeds = {name: values.astype(dtypes[name])
                 for name, values in fed_by_name(sample, sources).items()}
        return dict(zip(names, session.run(names, feeds), strict=True))

    return run
