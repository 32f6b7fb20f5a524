"""Real TensorFlow conversions of tiny models through the build API (stage processes and all)."""

import math
import re
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from converters.config import ConvertConfig, DatasetConfig, IODType, QuantEngine, Quantization
from converters.fsutil import read_json
from converters.pipeline import build
from converters.targets.tflite import flatbuffer as tflite_inspect
from tests.conftest import make_config, run_invoke, save_function_model, write_images


def test_four_modes_convert_load_and_report(tiny_h5: Path, tiny_dataset: Path,
                                            tmp_path: Path) -> None:
    build.convert(make_config(tiny_h5, tiny_dataset, tmp_path), ["test"])
    folder = tmp_path / "tiny"
    sizes = {}
    for mode in ("fp32", "fp16", "dynamic", "int8"):
        artifact = folder / "tflite" / f"tiny_{mode}.tflite"
        interpreter = Interpreter(model_path=str(artifact))
        interpreter.allocate_tensors()
        sizes[mode] = artifact.stat().st_size
    assert sizes["fp16"] < sizes["fp32"]
    graph = tflite_inspect.read(folder / "tflite" / "tiny_int8.tflite")
    assert graph.inputs[0].type == "UINT8" and graph.outputs[0].type == "UINT8"
    assert graph.float_ops() == []
    fp16 = tflite_inspect.read(folder / "tflite" / "tiny_fp16.tflite")
    assert any(op.name == "DEQUANTIZE" and op.inputs[0].type == "FLOAT16" for op in fp16.operators)
    report = read_json(folder / "report.json")
    assert set(report) >= {"model", "dataset", "reference", "artifacts"}
    assert set(report["reference"]) >= {"accuracy", "latency_ms"}
    assert [(a["target"], a["variant"]) for a in report["artifacts"]] == [
        ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "dynamic"), ("tflite", "int8")]
    for artifact in report["artifacts"]:
        assert set(artifact) >= {"target", "variant", "path", "sha256", "size_bytes",
                                 "latency_ms", "metrics", "float_ops"}
        assert set(artifact["metrics"]) == {"max_abs_error", "mean_abs_error",
                                            "cosine_similarity", "top1_agreement", "accuracy"}
        assert (folder / artifact["path"]).is_file()
        assert artifact["metrics"]["cosine_similarity"] > 0.99
    fp32 = report["artifacts"][0]
    assert fp32["metrics"]["max_abs_error"] < 1e-5 and fp32["metrics"]["top1_agreement"] == 1.0
    assert (folder / "report.md").read_text().count("| tflite ") == 4
    assert "data:image/png;base64," in (folder / "report.html").read_text()
    for mode in ("fp32", "fp16", "dynamic", "int8"):
        _assert_side_by_side_predicts_as_one(folder / "tflite" / f"tiny_{mode}.tflite")


def _assert_side_by_side_predicts_as_one(artifact: Path) -> None:
    """Three threads: three single-threaded interpreters share out the samples, running at the
    same time, and every sample gets the outputs one interpreter gives it, in order."""
    import threading

    from converters.validation import compare
    from converters.validation.compare import TFLiteRuntime

    one, three = TFLiteRuntime(artifact, threads=1), TFLiteRuntime(artifact, threads=3)
    [tensor] = one.input_tensors
    samples = np.random.default_rng(0).random((40, *tensor.shape), np.float32)
    expected = one.predict_named({tensor.name: samples})
    assert len({float(v) for v in next(iter(expected.values())).ravel()}) > 40  # they differ
    assert one.side_by_side(40) == [one.interpreter]
    interpreters = three.side_by_side(40)
    assert len({id(i) for i in interpreters}) == 3 and three.interpreter not in interpreters
    assert three.side_by_side(1) == [three.interpreter]

    many = TFLiteRuntime(artifact, threads=8)
    assert len(many.side_by_side(40)) == 4  # a sample per core gains little past a few
    # Memory for two: each counts the artifact twice and every tensor of the loaded interpreter
    tensors = sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
                  for d in many.interpreter.get_tensor_details())
    each = 2 * artifact.stat().st_size + tensors
    with mock.patch.object(compare, "available_memory", return_value=2 * 2 * each), \
            mock.patch.object(many, "_load", wraps=many._load) as load:
        assert len(many.side_by_side(40)) == 2
    assert [c.args for c in load.call_args_list] == [(4,), (4,)]  # the 8 threads shared out
    with mock.patch.object(compare, "available_memory", return_value=each):
        assert many.side_by_side(40) == [many.interpreter]

    used: set[int] = set()
    running, most = [0], [0]
    lock = threading.Lock()
    invoke = three.invoke_raw

    def recorded(one_sample: Any, interpreter: Any = None) -> Any:
        with lock:
            used.add(id(interpreter))
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.005)  # busy long enough for the other interpreters to take samples
        try:
            return invoke(one_sample, interpreter)
        finally:
            with lock:
                running[0] -= 1

    three.invoke_raw = recorded  # type: ignore[method-assign]
    got = three.predict_named({tensor.name: samples})
    assert used == {id(i) for i in interpreters} and most[0] >= 2
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[name], expected[name]) for name in expected), artifact.name


@pytest.mark.parametrize("io_dtype,expected", [(IODType.INT8, "INT8"),
                                               (IODType.FLOAT32, "FLOAT32")])
def test_int8_io_dtype_choice(tiny_h5: Path, tiny_dataset: Path, tmp_path: Path,
                              io_dtype: IODType, expected: str) -> None:
    config = make_config(tiny_h5, tiny_dataset, tmp_path, quantizations=(Quantization.INT8,),
                         io_dtype=io_dtype)
    build.convert(config, ["test"])
    graph = tflite_inspect.read(tmp_path / "tiny" / "tflite" / "tiny_int8.tflite")
    assert graph.inputs[0].type == expected and graph.outputs[0].type == expected
    # Only integer ops compute: QUANTIZE/DEQUANTIZE at float32 edges are type conversions.
    assert graph.float_ops() == []
    core = [op for op in graph.operators if op.name not in ("QUANTIZE", "DEQUANTIZE")]
    assert all(t.type in ("INT8", "INT32", "UINT8") for op in core for t in op.inputs + op.outputs)


def test_strict_int8_names_unquantizable_ops_and_fallback_keeps_them_float(
        tiny_dataset: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    model = save_function_model(tmp_path / "sine", tf.math.sin)
    strict = make_config(model, tiny_dataset, tmp_path / "strict",
                         quantizations=(Quantization.FP32, Quantization.INT8))
    result = build.convert(strict, ["test"])  # type: ignore[arg-type]
    # The failed variant is reported as failed; the one that converted is still validated.
    [problem] = result.problems
    assert re.search(r"sine: tflite-int8 failed: .*cannot be quantized to int8: SIN \(1\)\. "
                     r"Re-run with --allow-float-fallback", problem)
    assert not (tmp_path / "strict" / "sine" / "tflite" / "sine_int8.tflite").exists()
    report = read_json(tmp_path / "strict" / "sine" / "report.json")
    assert [(a["variant"], a["failed"]) for a in report["artifacts"]] == [("fp32", None)]
    # int8 failed; the automatic int8-mixed behind it did not run
    by_variant = {entry["variant"]: entry for entry in report["not_built"]}
    failed, behind = by_variant.pop("int8"), by_variant.pop("int8-mixed")
    assert failed["failed"] and not by_variant
    assert "not run: stage tflite-int8 failed" in behind["reason"]
    assert failed["reason"].startswith("tflite-int8 failed: ") and "SIN (1)" in failed["reason"]
    assert "| tflite int8 | tflite/sine_int8.tflite | - | failed |" in (
        tmp_path / "strict" / "sine" / "report.md").read_text()
    again = build.convert(strict, ["test"])  # type: ignore[arg-type]
    assert again.ran["sine"] == ["tflite-int8", "validate-tflite-int8", "tflite-int8-mixed",
                                 "validate-tflite-int8-mixed", "report"]
    mixed = make_config(model, tiny_dataset, tmp_path / "mixed",
                        quantizations=(Quantization.INT8,), allow_float_fallback=True)
    build.convert(mixed, ["test"])
    report = read_json(tmp_path / "mixed" / "sine" / "report.json")
    assert report["artifacts"][0]["float_ops"] == [{"op": "SIN", "count": 1}]
    assert report["artifacts"][0]["metrics"]["cosine_similarity"] > 0.99


def test_tensorflow_only_op_needs_allow_flex(tiny_dataset: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    model = save_function_model(tmp_path / "erfinv",
                                lambda x: tf.math.erfinv(tf.clip_by_value(x, -0.9, 0.9)))
    config = make_config(model, tiny_dataset, tmp_path / "out", quantizations=(Quantization.FP32,))
    result = build.convert(config, ["test"])  # type: ignore[arg-type]
    [problem] = result.problems
    assert re.search(r"erfinv: tflite-fp32 failed: .*no TFLite builtin: tf\.Erfinv\. Re-run with "
                     r"--allow-flex", problem)


def test_constant_model_metrics_have_known_values(tiny_dataset: Path, tmp_path: Path) -> None:
    """Zero kernel, bias favouring class 1: every artifact must predict class 1 everywhere."""
    import keras

    inputs = keras.Input((16, 16, 3))
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant([0.0, 2.0, 0.0]))(flat)
    path = tmp_path / "constant.keras"
    keras.Model(inputs, outputs).save(path)
    build.convert(make_config(path, tiny_dataset, tmp_path / "out",
                              quantizations=(Quantization.FP32, Quantization.INT8)), ["test"])
    folder = tmp_path / "out" / "constant"
    validation_files = read_json(folder / "data" / "dataset.json")["validation"]["files"]
    expected_accuracy = np.mean([name.startswith("b/") for name in validation_files])
    report = read_json(folder / "report.json")
    assert report["reference"]["accuracy"] == pytest.approx(expected_accuracy)
    for artifact in report["artifacts"]:
        metrics = artifact["metrics"]
        assert metrics["accuracy"] == pytest.approx(expected_accuracy)
        assert metrics["top1_agreement"] == 1.0
        assert metrics["cosine_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert report["artifacts"][0]["metrics"]["max_abs_error"] < 1e-6


def _engines(report: dict[str, Any]) -> dict[str, str]:
    return {a["variant"]: a["engine"].split(" ")[0] for a in report["artifacts"]}


def test_default_build_records_engines_and_per_op_errors(tiny_h5: Path, tiny_dataset: Path,
                                                         tmp_path: Path) -> None:
    """fp16 and dynamic come from the fp32 artifact (ai-edge-quantizer); fp32 and the uint8-I/O
    int8 from the TF converter; every quantized artifact lists the ops adding the most error."""
    build.convert(make_config(tiny_h5, tiny_dataset, tmp_path), ["test"])
    folder = tmp_path / "tiny"
    report = read_json(folder / "report.json")
    assert _engines(report) == {"fp32": "tf.lite.TFLiteConverter", "fp16": "ai-edge-quantizer",
                                "dynamic": "ai-edge-quantizer", "int8": "tf.lite.TFLiteConverter"}
    assert all(a["engine"].split(" ")[1][0].isdigit() for a in report["artifacts"])  # a version
    fp32_ops = tflite_inspect.read(folder / "tflite" / "tiny_fp32.tflite").operators
    layers = read_json(folder / "export" / "model.json")["layers"]  # Keras numbers them per process
    assert len(layers) == 4  # input, Conv2D, Flatten, Dense
    for artifact in report["artifacts"]:
        info = read_json((folder / artifact["path"]).with_suffix(".json"))
        assert info["engine"] == artifact["engine"]
        if artifact["variant"] == "fp32":
            assert artifact["op_errors"] is None
            continue
        rows = artifact["op_errors"]
        assert 1 <= len(rows) <= 10, artifact["variant"]
        for row in rows:
            assert set(row) == {"op", "index", "tensor", "layer", "metric", "value", "output_nmse"}
            assert row["layer"] is None or row["layer"] in layers  # the model's own layer names
            assert row["op"] == fp32_ops[row["index"]].name and row["metric"] == "added_nmse"
            assert math.isfinite(row["value"]) and row["value"] > 0
            assert row["output_nmse"] >= row["value"] - 1e-12
        assert [r["value"] for r in rows] == sorted((r["value"] for r in rows), reverse=True)
        assert sum(r["layer"] is not None for r in rows) >= 0.8 * len(rows), rows
    # The int8 was quantized from the fp32 artifact with ranges LiteRT computed
    calibration = read_json(folder / "tflite" / "tiny_int8.json")["calibration"]
    assert calibration == {"samples": calibration["samples"], "ranges_from": None,
                           "float_model": "tflite/tiny_fp32.tflite", "calibrated_by": "litert",
                           "delegate": "XNNPACK", "fallback_reason": None}
    assert calibration["samples"] > 0
    errors = {a["variant"]: max(r["value"] for r in a["op_errors"])
              for a in report["artifacts"] if a["op_errors"]}
    assert errors["fp16"] < errors["int8"]  # float16 weights hurt far less than int8
    page = (folder / "report.html").read_text()
    assert page.count('<table class="op-errors">') == 3 and "made by ai-edge-quantizer" in page
    assert "## Where quantization hurts" in (folder / "report.md").read_text()


@pytest.mark.parametrize("engine", [QuantEngine.AI_EDGE_QUANTIZER, QuantEngine.TFLITE_CONVERTER])
def test_both_engines_build_valid_byte_identical_artifacts(tiny_h5: Path, tiny_dataset: Path,
                                                           tmp_path: Path,
                                                           engine: QuantEngine) -> None:
    """Every quantized mode from ai-edge-quantizer, or every mode converted: the artifacts
    validate (LiteRT, against Keras), and two separate builds give the same bytes."""
    modes = (Quantization.FP16, Quantization.DYNAMIC, Quantization.INT8)
    reports = []
    for run in ("first", "second"):
        build.convert(make_config(tiny_h5, tiny_dataset, tmp_path / run, quantizations=modes,
                                  io_dtype=IODType.FLOAT32, allow_float_fallback=True,
                                  quant_engine=engine), ["test"])
        reports.append(read_json(tmp_path / run / "tiny" / "report.json"))
    expected = "ai-edge-quantizer" if engine is QuantEngine.AI_EDGE_QUANTIZER else \
        "tf.lite.TFLiteConverter"
    assert _engines(reports[0]) == dict.fromkeys(("fp16", "dynamic", "int8"), expected)
    for first, second in zip(*(r["artifacts"] for r in reports), strict=True):
        assert first["failed"] is None and first["metrics"]["cosine_similarity"] > 0.95
        assert first["metrics"]["top1_agreement"] == 1.0
        assert first["sha256"] == second["sha256"], first["path"]
    fp32 = tmp_path / "first" / "tiny" / "tflite" / "tiny_fp32.tflite"
    assert fp32.read_bytes() == (tmp_path / "second" / "tiny" / "tflite" / fp32.name).read_bytes()
    if engine is QuantEngine.TFLITE_CONVERTER:  # the converter's own calibrator, as TF alone
        calibration = read_json(fp32.parent / "tiny_int8.json")["calibration"]
        assert calibration["calibrated_by"] == "tf.lite calibrator"


def _outlier_image_model(path: Path, size: int, classes: int) -> Path:
    """A classifier of write_images' mean-colour classes whose ``wide`` layer has one outlier
    channel (benchmarks/outlier_model.py's pattern): plain int8 rounds its other channels away."""
    import keras

    from benchmarks import outlier_model

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, classes, 600)
    images = np.clip(40 + 80 * labels[:, None, None, None] + rng.normal(0, 20, (600, size, size, 3)),
                     0, 255).astype(np.float32) / 255.0
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    x = keras.layers.Dense(8, name="wide")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=15, batch_size=32, verbose=0)
    outlier_model.inject_outlier(model)
    model.save(path)
    return path


@pytest.mark.parametrize("asked", [(Quantization.INT8, Quantization.INT8_MIXED),
                                   (Quantization.INT8,)], ids=["asked", "automatic"])
def test_int8_mixed_keeps_the_outlier_layer_float_and_meets_the_bound(
        tmp_path: Path, asked: tuple[Quantization, ...]) -> None:
    """--quant int8-mixed, or plain --quant int8 whose drop is over the bound: the search runs."""
    write_images(tmp_path / "images", {"a": 30, "b": 30, "c": 30}, size=8)
    model = _outlier_image_model(tmp_path / "outlier.keras", size=8, classes=3)
    config = ConvertConfig(models=(model,), out=tmp_path / "out", threads=1, latency_runs=3,
                           dataset=DatasetConfig(tmp_path / "images", calibration_size=30,
                                                 validation_size=60),
                           quantizations=asked,
                           io_dtype=IODType.FLOAT32, allow_float_fallback=True,
                           max_accuracy_drop=0.02)
    assert not build.convert(config, ["test"]).problems
    report = read_json(tmp_path / "out" / "outlier" / "report.json")
    int8, mixed = report["artifacts"]
    assert report["reference"]["accuracy"] >= 0.95
    assert int8["accuracy_drop"] > 0.2  # plain int8 loses far more than the bound
    assert mixed["accuracy_drop"] <= 0.02 and mixed["engine"].startswith("ai-edge-quantizer")
    search = mixed["mixed_precision"]
    assert search["within_bound"] and search["score_basis"] == "accuracy"
    assert search["accuracy_recovered"] > 0.2
    if Quantization.INT8_MIXED not in asked:  # judged against the int8 the report shows
        assert search["int8_score"] == pytest.approx(int8["metrics"]["accuracy"])
    assert 0.0 <= search["search_start_score"] < search["score"]
    assert search["score"] == pytest.approx(mixed["metrics"]["accuracy"])
    kept = {row["tensor"] for row in search["kept_float"]}
    fp32_ops = sum(read_json(tmp_path / "out" / "outlier" / "tflite" / "outlier_fp32.json")
                   ["op_counts"].values())
    assert any("wide" in tensor for tensor in kept) and 0 < len(kept) < fp32_ops  # mixed
    # The search measures its candidates before the model metadata (name, normalization,
    # labels: a few hundred bytes here) is added to the chosen one.
    metadata_bytes = mixed["size_bytes"] - (search["int8_size_bytes"] + search["size_cost_bytes"])
    assert 0 < metadata_bytes < 1024
    assert math.isfinite(search["latency_cost_ms"])
    assert "Accuracy-aware int8 kept" in (tmp_path / "out" / "outlier" / "report.md").read_text()
    assert {op["op"] for op in mixed["float_ops"]} >= {"FULLY_CONNECTED"}


def test_a_search_no_better_than_the_shown_int8_is_not_an_artifact() -> None:
    from converters.targets.tflite.quantize import no_better_than_int8

    worse = no_better_than_int8(0.646, 3, 0.75, "accuracy")
    assert worse is not None and "64.6 %" in worse and "75.0 %" in worse
    assert "plain int8 stands" in worse
    assert no_better_than_int8(0.75, 3, 0.75, "accuracy") is not None  # a tie is no better
    assert no_better_than_int8(0.80, 3, 0.75, "accuracy") is None
    assert no_better_than_int8(0.50, 3, None, "accuracy") is None  # --quant int8-mixed


def test_automatic_int8_mixed_is_not_needed_within_the_bound(tiny_h5: Path, tiny_dataset: Path,
                                                             tmp_path: Path) -> None:
    """Plain int8 within --max-accuracy-drop: the automatic int8-mixed stage is "not needed"
    (no artifact, said in the report, exit zero) and stays fresh on the next build."""
    config = make_config(tiny_h5, tiny_dataset, tmp_path, quantizations=(Quantization.INT8,),
                         max_accuracy_drop=0.5)
    first = build.convert(config, ["test"])
    report = read_json(tmp_path / "tiny" / "report.json")
    assert not first.problems and [a["variant"] for a in report["artifacts"]] == ["int8"]
    (needless,) = report["not_needed"]
    assert report["not_built"] == [] and needless["variant"] == "int8-mixed"
    assert "plain int8 is within --max-accuracy-drop" in needless["reason"]
    assert not (tmp_path / "tiny" / "tflite" / "tiny_int8-mixed.tflite").exists()
    assert "not needed" in (tmp_path / "tiny" / "report.md").read_text()
    second = build.convert(config, ["test"])
    assert second.ran["tiny"] == [] and not second.problems
    result = run_invoke("verify", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    shown = run_invoke("report", "--out", str(tmp_path))
    assert "not needed: tflite int8-mixed: plain int8 is within" in shown.stdout + shown.stderr


def test_edgetpu_int8_reports_per_op_sensitivity_and_stays_integer(tiny_h5: Path,
                                                                    tiny_dataset: Path,
                                                                    tmp_path: Path) -> None:
    """With the tflite target beside it, the Edge TPU's batch-1 int8 (TF converter, fully
    integer) lists its ops' error against the fp32 artifact."""
    build.convert(make_config(tiny_h5, tiny_dataset, tmp_path, targets=("tflite", "edgetpu"),
                              quantizations=(Quantization.FP32,)), ["test"])
    report = read_json(tmp_path / "tiny" / "report.json")
    edgetpu = next(a for a in report["artifacts"] if a["target"] == "edgetpu")
    assert edgetpu["engine"].startswith("tf.lite.TFLiteConverter") and edgetpu["float_ops"] == []
    fp32_ops = tflite_inspect.read(tmp_path / "tiny" / "tflite" / "tiny_fp32.tflite").operators
    assert edgetpu["op_errors"] and all(fp32_ops[row["index"]].name == row["op"]
                                        for row in edgetpu["op_errors"])


def test_side_by_side_stops_at_the_first_error_without_running_the_rest() -> None:
    """An error (or Ctrl-C) in one item is raised once the items already running finish: the
    queued ones never start (a validation of a slow model stops at once)."""
    from converters.validation.side_by_side import run_side_by_side

    ran: list[int] = []

    def run(worker: str, item: int) -> int:
        ran.append(item)
        time.sleep(0.02)  # the 200 items would take 2 s on the two workers
        if item == 3:
            raise ValueError(f"sample {item} failed")
        return item

    assert run_side_by_side(["a", "b"], range(10), lambda w, i: i * 2, "test", 10) == [
        i * 2 for i in range(10)]
    with pytest.raises(ValueError, match="sample 3 failed"):
        run_side_by_side(["a", "b"], range(200), run, "test", 200)
    assert 3 in ran and len(ran) < 60  # a margin for a loaded machine's scheduling
