"""TFLite metadata: what it says, that it leaves the model's tensors alone, and that every
artifact the tflite target writes carries it (real conversions of a tiny model)."""

from pathlib import Path

import numpy as np
import pytest

from converters.config import Quantization
from converters.fsutil import read_json
from converters.pipeline import build
from converters.targets.tflite import describe, metadata, quantizer_engine
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.validation import metrics
from converters.validation.compare import TFLiteRuntime
from tests.conftest import make_config, tiny_model

ALL_MODES = ("fp32", "fp16", "dynamic", "int8", "int8-mixed")


@pytest.mark.parametrize("preprocessing,mean,std", [
    ({"mode": "0..1", "mean": None, "std": None}, (0.0,), (255.0,)),
    ({"mode": "-1..1", "mean": None, "std": None}, (127.5,), (127.5,)),
    ({"mode": "0..255", "mean": None, "std": None}, (0.0,), (1.0,)),
    ({"mode": "mean-std", "mean": [128, 128, 128], "std": [64, 64, 64]}, (128.0,), (64.0,)),
    ({"mode": "mean-std", "mean": [124, 116, 104], "std": [58, 57, 57]},
     (124.0, 116.0, 104.0), (58.0, 57.0, 57.0)),
])
def test_normalization_reproduces_the_preprocessing(preprocessing: dict[str, object],
                                                    mean: tuple[float, ...],
                                                    std: tuple[float, ...]) -> None:
    from converters.config import Preprocessing
    from converters.inputs.dataset import preprocess

    found = describe.normalization(preprocessing)
    assert found == metadata.Normalization(mean, std)
    assert found.per_channel == (len(mean) > 1)
    pixels = np.arange(0, 256, 17, dtype=np.uint8).reshape(1, 1, -1, 1).repeat(3, axis=-1)
    expected = preprocess(pixels, Preprocessing.from_dict(preprocessing))
    by_metadata = (pixels.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    np.testing.assert_allclose(by_metadata, expected, rtol=1e-6, atol=1e-6)


def _tensor_bytes(model: bytes) -> list[bytes]:
    """Every tensor's constant bytes (buffers stored after the flatbuffer included)."""
    schema = tflite_inspect.schema_module()
    unpacked = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    found = []
    for subgraph in unpacked.subgraphs:
        for tensor in subgraph.tensors:
            buffer = unpacked.buffers[tensor.buffer]
            if buffer.offset > 1:
                found.append(model[buffer.offset:buffer.offset + buffer.size])
            else:
                found.append(b"" if buffer.data is None else bytes(buffer.data))
    return found


def _layout(graph: tflite_inspect.TFLiteGraph) -> list[object]:
    """Operators with their tensors (options are schema objects that compare by identity)."""
    return [graph.inputs, graph.outputs,
            *((op.name, op.inputs, op.outputs) for op in graph.operators)]


def test_metadata_leaves_tensors_and_validation_unchanged(tmp_path: Path) -> None:
    import tensorflow as tf

    # Weights of 256 KiB and more: ai-edge-quantizer stores them after the flatbuffer
    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_model(size=64, classes=10))
    fp32 = converter.convert()
    fp16 = quantizer_engine.quantize_fp16(fp32).flatbuffer
    described = metadata.Description(
        "tiny", "0123", "a test", "tests",
        metadata.ImageInput("RGB", metadata.Normalization((0.0,), (255.0,))), tuple("abcdefghij"), (0,))
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0, 1, (12, 64, 64, 3)).astype(np.float32)
    for plain in (fp32, fp16):
        graph = tflite_inspect.parse(plain)
        written = metadata.populate(plain, metadata.metadata_buffer(described, graph),
                                    metadata.associated_files(described))
        assert _tensor_bytes(written) == _tensor_bytes(plain)
        assert _layout(tflite_inspect.parse(written)) == _layout(graph)
        outputs = []
        for index, model in enumerate((plain, written)):
            path = tmp_path / f"model_{index}.tflite"
            path.write_bytes(model)
            outputs.append(TFLiteRuntime(path, threads=1).predict_named({"input": inputs}))
        [before], [after] = outputs[0].values(), outputs[1].values()
        assert np.array_equal(before, after)
        assert metrics.summary({"o": metrics.compare_output(
            before, after, metrics.OutputTask("classification"), None)})["max_abs_error"] == 0.0
        found = metadata.read(written)
        assert found is not None and found.labels == tuple("abcdefghij")
        assert found.normalization == metadata.Normalization((0.0,), (255.0,))
        assert metadata.read(plain) is None
    # buffers ai-edge-quantizer stores after the flatbuffer moved with it
    schema = tflite_inspect.schema_module()
    assert any(buffer.offset > 1 for buffer in schema.ModelT.InitFromPackedBuf(
        bytearray(fp16), 0).buffers)


def test_every_tflite_artifact_carries_its_metadata(tiny_h5: Path, tiny_dataset: Path,
                                                    tmp_path: Path) -> None:
    modes = tuple(Quantization(mode) for mode in ALL_MODES)
    build.convert(make_config(tiny_h5, tiny_dataset, tmp_path, quantizations=modes,
                              targets=("tflite",)), ["test"])
    folder = tmp_path / "tiny"
    preprocessing = read_json(folder / "data" / "dataset.json")["preprocessing"]
    expected = describe.normalization(preprocessing)
    for mode in ALL_MODES:
        artifact = folder / "tflite" / f"tiny_{mode}.tflite"
        found = metadata.read(artifact.read_bytes())
        assert found is not None, mode
        assert found.labels == ("a", "b", "c")
        assert found.name == "tiny" and "tiny.h5" in found.description and mode in found.description
        integer_input = tflite_inspect.read(artifact).inputs[0].type == "UINT8"
        assert found.normalization == (None if integer_input else expected), mode
        info = read_json(artifact.with_suffix(".json"))["metadata"]
        assert info["version"] == found.version and len(found.version) == 16
        assert info["labels"] == 3 and not info["per_channel"]
