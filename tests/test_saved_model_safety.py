"""A SavedModel's graphs are checked before TensorFlow loads or runs any of them: ops that read
or write files, reach the network or run Python are refused without --unsafe (in every
function of the library, not only the serving signature), while Keras exports, lookup tables
and keras.applications architectures pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.errors import ModelError
from converters.inputs.model import load
from converters.inputs.saved_model_safety import allowed, check_saved_model, op_module
from tests.conftest import ROOT, run_invoke, tiny_model
from tests.test_cli import assert_user_error


def save_module(folder: Path, serve: Any, **extra: Any) -> Path:
    import tensorflow as tf

    module = tf.Module()
    module.serve = serve
    for name, value in extra.items():
        setattr(module, name, value)
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve})
    return folder


def spec() -> Any:
    import tensorflow as tf

    return [tf.TensorSpec([None, 4], tf.float32, name="x")]


def writer(marker: Path) -> Any:
    import tensorflow as tf

    @tf.function(input_signature=spec())
    def serve(x: Any) -> dict[str, Any]:
        tf.io.write_file(str(marker), tf.strings.as_string(tf.reduce_sum(x)))
        return {"y": x * 2.0}

    return serve


def test_a_file_writing_serving_function_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "written_by_the_model"
    model = save_module(tmp_path / "writer", writer(marker))
    with pytest.raises(ModelError, match=r"WriteFile in function __inference_serve_\d+.*--unsafe"):
        load(model)
    assert not marker.exists()
    arrays = tmp_path / "x.npz"
    np.savez(arrays, x=np.ones((8, 4), np.float32))
    result = run_invoke("convert", "--model", str(model), "--dataset", str(arrays), "--out",
                        str(tmp_path / "out"), "--target", "tflite", "--quant", "fp32",
                        "--runner", "local", "--validation-size", "4", "--calibration-size", "4")
    assert_user_error(result, f"SavedModel {model} uses TensorFlow ops that can read or write "
                      "files", "WriteFile")
    assert not marker.exists() and not (tmp_path / "out" / "writer" / "tflite").exists()


def test_unsafe_lets_a_trusted_savedmodel_load(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    loaded = load(save_module(tmp_path / "writer", writer(marker)), unsafe=True)
    assert [t.name for t in loaded.inputs] == ["x"]


def test_reading_files_and_python_are_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    @tf.function(input_signature=spec())
    def reads(x: Any) -> dict[str, Any]:
        name = tf.io.read_file("/etc/hostname")
        return {"y": x + tf.cast(tf.strings.length(name), tf.float32)}

    @tf.function(input_signature=spec())
    def python(x: Any) -> dict[str, Any]:
        return {"y": tf.py_function(lambda v: v * 2, [x], tf.float32)}

    with pytest.raises(ModelError, match="ReadFile in function"):
        check_saved_model(save_module(tmp_path / "reads", reads))
    with pytest.raises(ModelError, match="EagerPyFunc in function"):
        check_saved_model(save_module(tmp_path / "python", python))


def test_every_function_is_checked_not_only_the_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    @tf.function(input_signature=spec())
    def clean(x: Any) -> dict[str, Any]:
        return {"y": x * 2.0}

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def dump(path: Any) -> Any:
        tf.raw_ops.SaveV2(prefix=path, tensor_names=["t"], shape_and_slices=[""],
                          tensors=[tf.zeros([2])])
        return path

    with pytest.raises(ModelError, match=r"SaveV2 in function __inference_dump_\d+"):
        check_saved_model(save_module(tmp_path / "extra", clean, dump=dump))


def test_keras_exports_lookup_tables_and_applications_pass(tmp_path: Path) -> None:
    import keras

    exported = tmp_path / "tiny"
    tiny_model().export(str(exported))  # type: ignore[attr-defined]
    check_saved_model(exported)  # its saver functions hold SaveV2/RestoreV2: allowed there
    inputs = keras.Input((1,), dtype="string")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b", "c"])(inputs)
    strings = keras.Model(inputs, lookup)
    strings.export(str(tmp_path / "strings"))
    check_saved_model(tmp_path / "strings")
    keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=3).export(
        str(tmp_path / "mobilenet"))
    check_saved_model(tmp_path / "mobilenet")
    assert load(ROOT / "model" / "sample.h5").format == "h5"


@pytest.mark.parametrize(("op", "in_saver", "expected"), [
    ("Conv2D", False, True), ("ReadVariableOp", False, True), ("StringJoin", False, True),
    ("LookupTableFindV2", False, True), ("Assert", False, True), ("RestoreV2", True, True),
    ("RestoreV2", False, False), ("WriteFile", False, False), ("MatchingFiles", False, False),
    ("PrintV2", False, False), ("PyFunc", False, False), ("TFRecordDatasetV2", False, False),
    ("ImmutableConst", False, False), ("InitializeTableFromTextFileV2", False, False),
    ("RemoteCall", False, False), ("DebugIdentityV2", False, False), ("NotAnOp", False, False),
])
def test_allowlist(op: str, in_saver: bool, expected: bool) -> None:
    assert allowed(op, op_module(op), in_saver) is expected
