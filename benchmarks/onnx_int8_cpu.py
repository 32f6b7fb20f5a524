"""ONNX int8 on this CPU: the build's two Q/DQ models against exact integer arithmetic.

The build makes two int8 ONNX models (converters/targets/onnx/quantize.py): ``*_int8.onnx`` for
onnxruntime (uint8 activations, 7-bit weights) and ``*_int8-tensorrt.onnx`` for TensorRT (int8
symmetric activations, 8-bit weights). For each, on the bundled sample and on MobileNetV2 alpha
0.35 96x96 trained --epochs on the sample's shapes, this prints:

* accuracy and top-1 agreement with Keras, in onnxruntime with its default session options
  (fused integer kernels: what users run) and with graph optimizations off (each Q/DQ pair in
  float: the model's reference arithmetic, which TensorRT's int8 kernels also compute);
* every fused integer node (QLinearConv, QGemm) of the default session checked against exact
  integer arithmetic on the real validation activations: how many of its uint8 outputs differ
  by more than one quantization step (rounding), and the largest difference. A node that
  differs is one whose kernel saturated: on x86-64 without VNNI onnxruntime adds each pair of
  uint8 x int8 products into an int16 (VPMADDUBSW). Where no node differs, the default session
  computes the same integers on every CPU (VNNI and Arm kernels accumulate in int32).

The CPU's extensions head the output: run it on another CPU class to compare.

    python benchmarks/onnx_int8_cpu.py [--epochs 15] > benchmarks/onnx_int8_cpu.out.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from converters.cpu import this_cpu  # noqa: E402
from converters.inputs import sample  # noqa: E402
from converters.stages import data  # noqa: E402

VARIANTS = {"int8": "onnxruntime's (uint8 activations, 7-bit weights)",
            "int8-tensorrt": "TensorRT's (int8 symmetric, 8-bit weights)"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mobilenet(folder: Path, epochs: int) -> tuple[Path, Path]:
    """MobileNetV2 alpha 0.35 96x96 trained on the sample's shapes, and a labelled .npz of
    300 held-out images (calibration and validation come from it)."""
    import keras

    keras.utils.set_random_seed(0)
    images, labels = sample.generate(375, seed=11)
    upscaled = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2).astype(np.float32)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                           classes=len(sample.CLASSES))
    for layer in model.layers:  # a few epochs of 0.99 momentum leave the statistics at init
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(upscaled[:1200] / 127.5 - 1.0, labels[:1200], epochs=epochs, batch_size=32,
              verbose=0)
    path, arrays = folder / "mobilenet.keras", folder / "held_out.npz"
    model.save(path)
    np.savez(arrays, **{model.inputs[0].name.split(":")[0]: upscaled[1200:] / 127.5 - 1.0},
             labels=labels[1200:])
    return path, arrays


def build(model: Path, dataset: Path, out: Path, *extra: str) -> Path:
    """The project's build of ``model``: ONNX fp32 and both int8 models, validated."""
    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert",
               "--model", str(model), "--dataset", str(dataset), "--out", str(out),
               "--target", "onnx,tensorrt", "--quant", "fp32,int8", "--runner", "local",
               "--latency-runs", "2", *extra]
    subprocess.run(command, capture_output=True, text=True, check=False)  # no TensorRT: exit 1
    build_dir = out / model.stem
    if not (build_dir / "report.json").exists():
        raise SystemExit(f"the build of {model} wrote no report")
    return build_dir


def session(path: Path, optimized: bool, saved: Path | None = None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = (onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
                                        if saved else
                                        onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                                        if optimized else
                                        onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if saved:
        options.optimized_model_filepath = str(saved)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fused_nodes_check(path: Path, inputs: dict[str, np.ndarray], folder: Path) -> tuple[int, int, int]:
    """(fused nodes, nodes with an output more than one step from exact arithmetic, largest
    difference in steps) of the default session's integer kernels on ``inputs``."""
    import onnx
    from onnx import helper, numpy_helper

    fused = folder / "fused.onnx"
    session(path, True, saved=fused)  # the extended level: fusions, no CPU-layout rewrites
    model = onnx.load(str(fused))
    nodes = [n for n in model.graph.node if n.op_type in ("QLinearConv", "QGemm")]
    wanted = list(dict.fromkeys(name for n in nodes for name in (n.input[0], n.output[0])))
    for name in wanted:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    probe = folder / "probe.onnx"
    onnx.save(model, str(probe))
    # The saved model holds fused kernels already: running it unoptimized runs exactly them.
    values = dict(zip(wanted, session(probe, False).run(wanted, inputs), strict=True))
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    worst, differing = 0, 0
    for node in nodes:
        steps = np.abs(exact_output(node, values[node.input[0]], constants).astype(np.int64)
                       - values[node.output[0]].astype(np.int64)).max()
        worst, differing = max(worst, int(steps)), differing + int(steps > 1)
    return len(nodes), differing, worst


def exact_output(node: Any, x: np.ndarray, constants: dict[str, np.ndarray]) -> np.ndarray:
    """A QLinearConv's or QGemm's uint8 output computed exactly (int64 sums, float64 scales)."""
    from onnx import helper

    get = [constants.get(name) for name in node.input]
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    x_scale, x_zero, w = float(get[1]), int(get[2]), get[3].astype(np.int64)
    w_scale = get[4].astype(np.float64)
    centred = x.astype(np.int64) - x_zero
    if node.op_type == "QGemm":  # inputs: A, a_scale, a_zp, B, b_scale, b_zp, C, y_scale, y_zp
        bias, y_scale, y_zero = get[6], float(get[7]), int(get[8])
        b = w.T if attributes.get("transB") else w
        accumulated = centred.reshape(len(x), -1) @ b
        channel_axis = -1
    else:  # QLinearConv: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias
        y_scale, y_zero, bias = float(get[6]), int(get[7]), get[8] if len(get) > 8 else None
        accumulated = conv(centred, w, attributes)
        channel_axis = 1
    if bias is not None:
        accumulated = accumulated + np.expand_dims(bias.astype(np.int64),
                                                   tuple(range(1, accumulated.ndim - 1)) if
                                                   channel_axis == 1 else 0)
    shape = [1] * accumulated.ndim
    shape[channel_axis] = -1
    real = accumulated * (x_scale * w_scale.reshape(shape) if w_scale.size > 1 else x_scale * w_scale)
    return np.clip(np.rint(real / y_scale) + y_zero, 0, 255)


def conv(x: np.ndarray, w: np.ndarray, attributes: dict[str, Any]) -> np.ndarray:
    """NCHW grouped 2-D convolution in int64 (pads, strides, dilations, groups)."""
    groups = attributes.get("group", 1)
    pads = attributes.get("pads", [0, 0, 0, 0])
    strides = attributes.get("strides", [1, 1])
    dilations = attributes.get("dilations", [1, 1])
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_channels, per_group, kh, kw = w.shape
    span = ((kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))
    windows = windows[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    outputs = []
    for group in range(groups):
        channels = slice(group * per_group, (group + 1) * per_group)
        filters = w[group * (out_channels // groups):(group + 1) * (out_channels // groups)]
        outputs.append(np.einsum("nchwij,ocij->nohw", windows[:, channels], filters))
    return np.concatenate(outputs, axis=1)


def rows(build_dir: Path, folder: Path) -> list[str]:
    report = json.loads((build_dir / "report.json").read_text())
    keras = np.load(build_dir / "reference" / "outputs.npz")
    keras_top1 = next(iter(keras.values())).argmax(-1)
    labels = data.load_labels(build_dir)
    inputs = {name: np.asarray(array, np.float32)
              for name, array in data.load_inputs(build_dir, data.VALIDATION).items()}
    lines = [f"Keras accuracy {report['reference']['accuracy']:.3f}, "
             f"{len(keras_top1)} validation samples.", "",
             "| model | session | accuracy | top-1 agreement with Keras | fused nodes off exact "
             "integers (of) | largest difference (steps) |", "|---|---|---|---|---|---|"]
    for variant, description in VARIANTS.items():
        path = build_dir / "onnx" / f"{build_dir.name}_{variant}.onnx"
        nodes, differing, worst = fused_nodes_check(path, inputs, folder)
        for optimized in (True, False):
            [scores, *_] = session(path, optimized).run(None, inputs)
            top1 = scores.argmax(-1)
            accuracy = f"{(top1 == labels).mean():.3f}" if labels is not None else "-"
            checked = (f"{differing} ({nodes})", str(worst)) if optimized else ("-", "-")
            lines.append(f"| {description} | {'default' if optimized else 'optimizations off'} "
                         f"| {accuracy} | {(top1 == keras_top1).mean():.3f} | {checked[0]} "
                         f"| {checked[1]} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="MobileNetV2 training epochs")
    args = parser.parse_args()
    import onnxruntime

    print(f"## ONNX int8 on {this_cpu().summary()}\n")
    print(f"onnxruntime {onnxruntime.__version__}; `python benchmarks/onnx_int8_cpu.py "
          f"--epochs {args.epochs}`.\n")
    with tempfile.TemporaryDirectory(prefix="onnx-int8-cpu-") as name:
        folder = Path(name)
        log("building the sample")
        cases = [("sample (32x32, 4 classes)",
                  build(ROOT / "model" / "sample.h5", ROOT / "dataset", folder / "out"))]
        log(f"training MobileNetV2 ({args.epochs} epochs)")
        model, arrays = mobilenet(folder, args.epochs)
        cases.append((f"MobileNetV2 0.35 (96x96, 4 classes, {args.epochs} epochs)",
                      build(model, arrays, folder / "out", "--preprocessing", "0..255",
                            "--calibration-size", "100", "--validation-size", "200")))
        for title, build_dir in cases:
            log(f"checking {title}")
            print(f"### {title}\n")
            print("\n".join(rows(build_dir, folder)) + "\n")


if __name__ == "__main__":
    main()
