"""The compiled Edge TPU model keeps the int8 model's metadata: tried on models compiled by
Coral's own edgetpu_compiler (shared/edgetpu-truth; skipped saying so without it)."""


import numpy as np
import pytest

from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite import metadata
from tests.test_edgetpu_truth import MISSING, TRUTH

MODELS = TRUTH / "models"


def _structure(model: bytes) -> tuple[list[object], list[object], list[bytes]]:
    """Operators (with their custom options: the Edge TPU's compiled program), tensors and
    buffer contents of every subgraph; the model's metadata entries left out."""
    unpacked = tflite_inspect.schema_module().ModelT.InitFromPackedBuf(bytearray(model), 0)
    operators = [(op.opcodeIndex, list(op.inputs), list(op.outputs),
                  None if op.customOptions is None else np.asarray(op.customOptions).tobytes())
                 for subgraph in unpacked.subgraphs for op in subgraph.operators]
    tensors = [(t.name, None if t.shape is None else list(t.shape), t.type, t.buffer)
               for subgraph in unpacked.subgraphs for t in subgraph.tensors]
    named = {entry.buffer for entry in unpacked.metadata or []}
    buffers = [b"" if b.data is None else np.asarray(b.data, np.uint8).tobytes()
               for index, b in enumerate(unpacked.buffers) if index not in named]
    return operators, tensors, buffers


def _with_metadata(model: bytes, classes: int) -> bytes:
    graph = tflite_inspect.parse(model)
    description = metadata.Description(
        name="bird", version="0123456789abcdef", description="test", author="test",
        image_input=metadata.ImageInput("RGB", None),
        labels=tuple(f"species {index}" for index in range(classes)), labelled_outputs=(0,))
    return metadata.populate(model, metadata.metadata_buffer(description, graph),
                             metadata.associated_files(description))


@pytest.fixture
def pair() -> tuple[bytes, bytes]:
    if not MODELS.is_dir():
        pytest.skip(MISSING)
    return ((MODELS / "mobilenet_v2_inat_bird.tflite").read_bytes(),
            (MODELS / "mobilenet_v2_inat_bird_edgetpu.tflite").read_bytes())


def test_metadata_is_carried_into_a_compiled_model_unchanged(pair: tuple[bytes, bytes]) -> None:
    source, compiled = pair
    assert metadata.read(source) is None and metadata.read(compiled) is None
    classes = tflite_inspect.parse(compiled).outputs[0].shape[-1]
    described = _with_metadata(source, classes)
    carried = metadata.carried(described, compiled)
    assert carried is not None
    found = metadata.read(carried)
    assert found is not None and found.name == "bird" and len(found.labels) == classes > 900
    assert found.labels == metadata.read(described).labels  # type: ignore[union-attr]
    # The compiled program (the edgetpu-custom-op's options), tensors and weights are untouched.
    assert _structure(carried) == _structure(compiled)
    assert any(op[3] and len(op[3]) > 100_000 for op in _structure(carried)[0])
    assert metadata.carried(described, carried) is None  # it has metadata now: nothing to do
    assert metadata.carried(source, compiled) is None  # nothing to carry


def test_coral_compiler_output_kept_the_metadata_it_was_given() -> None:
    """A pair Coral compiled: the source's metadata is in the compiled model as it was."""
    if not MODELS.is_dir():
        pytest.skip(MISSING)
    source = (MODELS / "mobilenet_v1_050_160.tflite").read_bytes()
    compiled = (MODELS / "mobilenet_v1_050_160_edgetpu.tflite").read_bytes()
    assert metadata.read(source) == metadata.read(compiled)
    assert len(metadata.read(compiled).labels) == 1001  # type: ignore[union-attr]
    assert metadata.carried(source, compiled) is None
