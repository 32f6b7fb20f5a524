"""The fp32 TFLite conversion two ways, side by side on keras.applications architectures.

* frozen: what the build does (converters/targets/tflite/frozen.py): the loaded model's serving
  function frozen in-process and converted, the ``serving_default`` signature added;
* SavedModel: what the build did until session 7 (``model.export`` of the loaded model, then
  ``TFLiteConverter.from_saved_model``).

Per model (weights=None, 96x96, 7 classes): seconds each way, whether the operators, the
signature and the outputs on one random image are the same. Both start from the loaded model
with its serving function traced, as in a build's stage process (the data stage's predictions
trace it first); the SavedModel column includes ``model.export``, which traces its own
signature and saver functions.

    python benchmarks/frozen_vs_saved_model.py > benchmarks/frozen_vs_saved_model.out.md
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from converters.inputs.model import LoadedModel, load  # noqa: E402
from converters.targets.tflite import frozen  # noqa: E402

ARCHITECTURES = ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50", "DenseNet121",
                 "ConvNeXtTiny")


def _ops(flatbuffer: bytes) -> Counter[str]:
    from ai_edge_litert.interpreter import Interpreter

    return Counter(op["op_name"] for op in Interpreter(model_content=flatbuffer)._get_ops_details())


def _signatures(flatbuffer: bytes) -> dict[str, object]:
    from ai_edge_litert.interpreter import Interpreter

    return dict(Interpreter(model_content=flatbuffer).get_signature_list())


def _outputs(flatbuffer: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    return {name: np.asarray(value) for name, value in runner(**feeds).items()}


def _timed(convert: object) -> tuple[bytes, float]:
    started = time.perf_counter()
    result: bytes = convert()  # type: ignore[operator]
    return result, time.perf_counter() - started


def compare(name: str, model: LoadedModel, workdir: Path) -> str:
    import tensorflow as tf

    model.predict({model.inputs[0].name: np.zeros((1, 96, 96, 3), np.float32)})  # traced
    serving = frozen.serving_function(model, None)
    ours, ours_s = _timed(lambda: serving.signed(serving.converter.convert()))

    def through_saved_model() -> bytes:
        model.export(workdir / name)
        return tf.lite.TFLiteConverter.from_saved_model(str(workdir / name)).convert()

    theirs, theirs_s = _timed(through_saved_model)
    feeds = {model.inputs[0].name: np.random.default_rng(0).random((1, 96, 96, 3), np.float32) * 255}
    difference = max(float(np.abs(a - b).max()) for a, b in
                     zip(_outputs(ours, feeds).values(), _outputs(theirs, feeds).values(), strict=True))
    return (f"| {name} | {sum(_ops(ours).values())} | {ours_s:.1f} | {theirs_s:.1f} "
            f"| {ours_s / theirs_s:.2f}x | {_ops(ours) == _ops(theirs)} "
            f"| {_signatures(ours) == _signatures(theirs)} | {difference:.1e} |")


def main() -> None:
    import keras
    import tensorflow as tf

    print("| model (96x96) | ops | frozen s | SavedModel s | ratio | same ops | same signature "
          "| max abs output diff |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        for name in ARCHITECTURES:
            path = workdir / f"{name}.keras"
            getattr(keras.applications, name)(input_shape=(96, 96, 3), weights=None,
                                              classes=7).save(path)
            print(compare(name, load(path), workdir), flush=True)
    print(f"\nTF {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
