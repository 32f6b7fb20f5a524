from pathlib import Path

import numpy as np
import pytest

from converters.errors import ModelError
from converters.inputs import model


def test_missing_wrong_extension_and_non_savedmodel_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        model.check_model_path(tmp_path / "nope.h5")
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"unsupported extension '\.pt': expected \.h5, \.hdf5, \.keras"):
        model.check_model_path(tmp_path / "weights.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelError, match="not a SavedModel"):
        model.check_model_path(tmp_path / "folder")


@pytest.mark.parametrize("name", ["broken.h5", "broken.keras"])
def test_corrupt_file_is_named(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"definitely not a model" * 10)
    with pytest.raises(ModelError, match=f"cannot load model {path}"):
        model.load(path)


def test_no_static_size_needs_input_shape(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))
    path = tmp_path / "dynamic.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelError, match=r"has no static size \(None, None, None, 3\): pass "
                                         r"--input-shape"):
        model.load(path)
    loaded = model.load(path, input_shape=(20, 24, 3))
    assert loaded.input_shape == (20, 24, 3)
    with pytest.raises(ModelError, match="conflicts with model"):
        model.load(path, input_shape=(20, 24, 1))
    loaded.export(tmp_path / "exported")
    assert (tmp_path / "exported" / "saved_model.pb").exists()


@pytest.mark.parametrize("name", ["sequential.keras", "sequential.h5"])
def test_a_sequential_model_is_named_by_its_last_layer(tmp_path: Path, name: str) -> None:
    """A Sequential model has no output_names (Keras 3): its last layer names the output."""
    import keras

    sequential = keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(),
                                   keras.layers.Dense(3, name="scores")])
    sequential.build((None, 8, 8, 3))
    sequential.save(tmp_path / name)
    loaded = model.load(tmp_path / name)
    assert [(t.name, t.shape) for t in loaded.outputs] == [("scores", (3,))]
    assert loaded.input_shape == (8, 8, 3)
    outputs = loaded.predict({loaded.inputs[0].name: np.ones((2, 8, 8, 3), np.float32)})
    np.testing.assert_allclose(outputs["scores"], sequential.predict(np.ones((2, 8, 8, 3)), verbose=0),
                               atol=1e-5)


def test_several_inputs_and_outputs_are_named_by_their_layers(tmp_path: Path) -> None:
    """Signature names are the input and output layers' names, never keras_tensor_N."""
    import keras

    image, extra = keras.Input((4, 4, 3), name="image"), keras.Input((2,), name="extra")
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
    classes = keras.layers.Dense(2, name="classes")(merged)
    boxes = keras.layers.Reshape((1, 4), name="boxes")(keras.layers.Dense(4)(merged))
    path = tmp_path / "two.keras"
    keras.Model([image, extra], [classes, boxes]).save(path)
    loaded = model.load(path)
    assert [t.name for t in loaded.inputs] == ["image", "extra"]
    assert [(t.name, t.shape) for t in loaded.outputs] == [("classes", (2,)), ("boxes", (1, 4))]
    results = loaded.predict({"image": np.ones((3, 4, 4, 3), np.float32),
                              "extra": np.ones((3, 2), np.float32)})
    assert results["classes"].shape == (3, 2) and results["boxes"].shape == (3, 1, 4)
    with pytest.raises(ModelError, match="--input-shape applies to a model with one input"):
        model.load(path, input_shape=(4, 4, 3))


def test_lambda_layer_needs_unsafe(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((4, 4, 3))
    doubled = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(doubled))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelError, match="needs unsafe deserialisation.*re-run with --unsafe"):
        model.load(path)
    loaded = model.load(path, unsafe=True)
    [name] = [tensor.name for tensor in loaded.inputs]
    [output] = loaded.predict({name: np.ones((1, 4, 4, 3), np.float32)}).values()
    assert output.shape == (1, 2)


def test_savedmodel_directory_loads(tmp_path: Path) -> None:
    import tensorflow as tf

    from tests.conftest import save_function_model

    path = save_function_model(tmp_path / "saved", tf.math.sin)
    loaded = model.load(path)
    assert loaded.format == "saved_model" and loaded.input_shape == (8, 8, 3)
    images = np.full((2, 8, 8, 3), 0.5, np.float32)
    [name] = [tensor.name for tensor in loaded.inputs]
    [output] = loaded.predict({name: images}).values()
    np.testing.assert_allclose(output, np.sin(0.5) * np.ones((2, 3)), rtol=1e-6)


def test_a_keras_hdf5_file_named_hdf5_converts(tmp_path: Path, tiny_dataset: Path) -> None:
    """Keras 2 wrote HDF5 files as .hdf5 as often as .h5: same format, same treatment."""
    from tests.conftest import quick_flags, run_invoke, tiny_model

    path = tmp_path / "legacy.hdf5"
    tiny_model().save(tmp_path / "legacy.h5")  # type: ignore[attr-defined]
    (tmp_path / "legacy.h5").rename(path)
    result = run_invoke("convert", "--model", str(path), *quick_flags(tiny_dataset, tmp_path / "out"),
                        "--quant", "fp32")
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "out" / "legacy" / "report.json").read_text()
    assert '"format": "h5"' in report
