"""TFLite model metadata in the format MediaPipe Tasks and the TFLite Support library read.

The metadata is a flatbuffer of the schema in :mod:`vendor.metadata_schema_py_generated`
(file identifier ``M001``), stored in a buffer of the model that a ``TFLITE_METADATA`` entry of
``Model.metadata`` names; associated files (the labels) follow the model as an uncompressed
zip archive, which flatbuffer readers ignore and metadata readers open. This is how TFLite
Support's and MediaPipe's ``MetadataPopulator`` pack it. Only the model's metadata list and
buffer list change: every tensor, operator and weight buffer is packed again as it was.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np

from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite.vendor import metadata_schema_py_generated as schema

METADATA_NAME = "TFLITE_METADATA"
MODEL_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
# The fields written here are all in metadata schema 1.0.0 (the schema's history lists later
# additions: tokenizers, tensor groups, audio, custom metadata).
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
VERSION_DIGITS = 16  # hex digits of the sha256 a model's metadata version is
# The TFLite schema declares Buffer.data force_align 16; the generated object API packs byte
# vectors at their element alignment (1).
BUFFER_ALIGNMENT = 16
COLOR_SPACES = {1: "GRAYSCALE", 3: "RGB"}  # image channels → ColorSpaceType
# A mask's content dimensions (height and width of batch × height × width × classes), as
# MediaPipe's SegmentationMaskMd writes them
SEGMENTATION_CONTENT_DIMS = (1, 2)

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say


@dataclass(frozen=True)
class Normalization:
    """``(pixel - mean) / std`` on pixels 0..255: one value, or one per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def per_channel(self) -> bool:
        return len(set(self.mean)) > 1 or len(set(self.std)) > 1

    def single(self) -> Normalization:
        """One value for every channel (MediaPipe accepts no other form), when that is exact."""
        return self if self.per_channel else Normalization(self.mean[:1], self.std[:1])


@dataclass(frozen=True)
class ImageInput:
    """What an image input takes: its colour space and, for a float input, its normalization."""

    color_space: str  # a ColorSpaceType name: RGB or GRAYSCALE
    normalization: Normalization | None  # None: the input takes pixels (integer input)


@dataclass(frozen=True)
class Description:
    """Everything the metadata of one artifact says."""

    name: str
    version: str
    description: str
    author: str
    image_input: ImageInput | None  # None: the first input is not an image
    labels: tuple[str, ...]
    labelled_outputs: tuple[int, ...]  # positions of the outputs that are class scores
    # positions of the outputs that are class maps (batch × height × width × classes): written
    # as MediaPipe's ImageSegmenter reads a segmentation mask
    segmentation_outputs: tuple[int, ...] = ()


def metadata_buffer(description: Description, graph: tflite_inspect.TFLiteGraph) -> bytes:
    """The metadata flatbuffer: one entry per input and output of the main subgraph."""
    inputs = [_input_metadata(tensor, description.image_input if position == 0 else None)
              for position, tensor in enumerate(graph.inputs)]
    outputs = [_output_metadata(tensor, description.labels
                                if position in description.labelled_outputs else (),
                                position in description.segmentation_outputs)
               for position, tensor in enumerate(graph.outputs)]
    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata = inputs
    subgraph.outputTensorMetadata = outputs
    model = schema.ModelMetadataT()
    model.name = description.name
    model.version = description.version
    model.description = description.description
    model.author = description.author
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    return _packed_metadata(model)


def _packed_metadata(model: Any) -> bytes:
    """A ``ModelMetadataT`` as the metadata flatbuffer (file identifier ``M001``)."""
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def content_version(flatbuffer: bytes) -> str:
    """The version metadata gives a model: the start of the sha256 of its bytes (before any
    metadata is added)."""
    return hashlib.sha256(flatbuffer).hexdigest()[:VERSION_DIGITS]


def _input_metadata(tensor: tflite_inspect.TensorInfo, image: ImageInput | None) -> Any:
    metadata = schema.TensorMetadataT()
    metadata.name = tensor.name
    if image is None:
        return metadata
    metadata.description = "Input image"
    properties = schema.ImagePropertiesT()
    properties.colorSpace = getattr(schema.ColorSpaceType, image.color_space)
    content = schema.ContentT()
    content.contentPropertiesType = schema.ContentProperties.ImageProperties
    content.contentProperties = properties
    metadata.content = content
    if image.normalization is not None:
        options = schema.NormalizationOptionsT()
        options.mean = list(image.normalization.mean)
        options.std = list(image.normalization.std)
        unit = schema.ProcessUnitT()
        unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
        unit.options = options
        metadata.processUnits = [unit]
    return metadata


def _output_metadata(tensor: tflite_inspect.TensorInfo, labels: tuple[str, ...],
                     segmentation: bool) -> Any:
    metadata = schema.TensorMetadataT()
    metadata.name = tensor.name
    if segmentation:  # as MediaPipe's image segmenter writer describes a mask
        metadata.description = "Masks over the labels, one per class, for every pixel"
        properties = schema.ImagePropertiesT()
        properties.colorSpace = schema.ColorSpaceType.GRAYSCALE
        content = schema.ContentT()
        content.contentPropertiesType = schema.ContentProperties.ImageProperties
        content.contentProperties = properties
        content.range = schema.ValueRangeT()
        content.range.min, content.range.max = SEGMENTATION_CONTENT_DIMS
        metadata.content = content
    if not labels:
        return metadata
    if not segmentation:
        metadata.description = "Probabilities of the labels respectively"
        content = schema.ContentT()
        content.contentPropertiesType = schema.ContentProperties.FeatureProperties
        content.contentProperties = schema.FeaturePropertiesT()
        metadata.content = content
    labels_file = schema.AssociatedFileT()
    labels_file.name = LABELS_FILE
    labels_file.description = "Labels for categories that the model can recognize"
    labels_file.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
    metadata.associatedFiles = [labels_file]
    return metadata


def associated_files(description: Description) -> dict[str, bytes]:
    """The files the metadata names, by name: the labels, one per line."""
    if not description.labels or not description.labelled_outputs:
        return {}
    return {LABELS_FILE: "".join(f"{label}\n" for label in description.labels).encode()}


def populate(model: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` with ``metadata`` as its TFLITE_METADATA entry (replacing one it has) and
    ``files`` appended as an uncompressed zip (any archive it had is dropped)."""
    tflite = tflite_inspect.schema_module()
    unpacked = tflite.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buffer = tflite.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    unpacked.buffers = list(unpacked.buffers or [])
    unpacked.metadata = list(unpacked.metadata or [])
    existing = next((entry for entry in unpacked.metadata
                     if _text(entry.name) == METADATA_NAME), None)
    if existing is not None:
        unpacked.buffers[existing.buffer] = buffer
    else:
        unpacked.buffers.append(buffer)
        entry = tflite.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(unpacked.buffers) - 1
        unpacked.metadata.append(entry)
    packed = _pack_with_external_buffers(model, unpacked, len(metadata))
    if not files:
        return packed
    archive = io.BytesIO()
    archive.write(packed)
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as zipped:
        for name, content in sorted(files.items()):
            # A fixed time stamp and mode: the same model gives the same bytes in any build.
            member = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            member.external_attr = 0o644 << 16
            zipped.writestr(member, content)
    return archive.getvalue()


def _pack_with_external_buffers(model: bytes, unpacked: Any, extra: int) -> bytes:
    """Pack ``unpacked``; buffers stored after the flatbuffer (``offset``/``size``, as
    ai-edge-quantizer writes them) move with it: their bytes follow the new flatbuffer in the
    same layout, on the same 16-byte alignment, their offsets shifted by the same amount."""
    external = [buffer for buffer in unpacked.buffers if buffer.offset > 1]

    def pack() -> bytes:
        builder = _AlignedBuilder(len(model) + extra + 1024)
        builder.Finish(unpacked.Pack(builder), MODEL_IDENTIFIER)
        return bytes(builder.Output())

    packed = pack()
    if not external:
        return packed
    start = min(buffer.offset for buffer in external)
    end = max(buffer.offset + buffer.size for buffer in external)
    # Offsets are fixed-width fields: shifting them does not change the flatbuffer's length.
    shifted_start = len(packed) + (start - len(packed)) % BUFFER_ALIGNMENT  # same alignment
    for buffer in external:
        buffer.offset += shifted_start - start
    packed = pack()
    return packed + bytes(shifted_start - len(packed)) + model[start:end]


class _AlignedBuilder(flatbuffers.Builder):
    """A builder that places byte vectors (the model's buffers) on 16-byte boundaries, as the
    TFLite schema asks and the TF converter writes them."""

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (flatbuffers' name)
        if x.dtype != np.uint8 or x.ndim != 1:
            return int(super().CreateNumpyVector(x))
        self.StartVector(1, x.size, BUFFER_ALIGNMENT)
        payload = x.tobytes()
        start = int(self.Head()) - len(payload)
        self.head = start
        self.Bytes[start:start + len(payload)] = payload
        self.vectorNumElems = x.size
        return int(self.EndVector())


@dataclass(frozen=True)
class Found:
    """The metadata an artifact carries (:func:`read`)."""

    name: str
    version: str
    description: str
    normalization: Normalization | None
    labels: tuple[str, ...]


def read(model: bytes) -> Found | None:
    """The metadata of a .tflite file's bytes, or None when it has none."""
    tflite = tflite_inspect.schema_module()
    root = tflite.Model.GetRootAs(model, 0)
    for index in range(root.MetadataLength()):
        entry = root.Metadata(index)
        if _text(entry.Name()) != METADATA_NAME:
            continue
        data = root.Buffers(entry.Buffer()).DataAsNumpy()
        found = schema.ModelMetadataT.InitFromPackedBuf(bytearray(data.tobytes()), 0)
        return Found(_text(found.name), _text(found.version), _text(found.description),
                     _normalization(found), _labels(model, found))
    return None


def packed(model: bytes) -> tuple[bytes, dict[str, bytes]] | None:
    """The metadata flatbuffer and associated files of a .tflite file's bytes, as
    :func:`populate` takes them; None when it has no metadata."""
    tflite = tflite_inspect.schema_module()
    root = tflite.Model.GetRootAs(model, 0)
    for index in range(root.MetadataLength()):
        entry = root.Metadata(index)
        if _text(entry.Name()) == METADATA_NAME:
            buffer = root.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                with zipfile.ZipFile(io.BytesIO(model)) as archive:
                    files = {name: archive.read(name) for name in archive.namelist()}
            except zipfile.BadZipFile:
                files = {}
            return buffer.tobytes(), files
    return None


def is_metadata_entry(entry: Any) -> bool:
    """Whether an entry of a model's ``metadata`` list (object API) is its TFLite metadata."""
    return _text(entry.name) == METADATA_NAME


def carried(source: bytes, compiled: bytes) -> bytes | None:
    """``compiled`` (a compiler's output of ``source``) with the metadata of ``source`` when the
    compiler dropped it; None when there is nothing to carry (it kept it, or there was none)."""
    found = packed(source)
    if found is None or read(compiled) is not None:
        return None
    return populate(compiled, *found)


def for_part(model: bytes, part: bytes, role: str) -> bytes:
    """``part`` (a piece of ``model``'s main subgraph, e.g. the head or tail of a split) with the
    metadata of ``model`` as it applies to the piece: each input or output the piece shares with
    the model keeps its tensor metadata (an image input's normalization, an output's labels),
    the others get their name only; the version is the piece's own content hash. ``part``
    unchanged when ``model`` has no metadata."""
    found = packed(model)
    if found is None:
        return part
    buffer, files = found
    described = schema.ModelMetadataT.InitFromPackedBuf(bytearray(buffer), 0)
    whole, piece = tflite_inspect.parse(model), tflite_inspect.parse(part)
    subgraph = described.subgraphMetadata[0]
    # (another writer's metadata may describe fewer tensors than the model has)
    shared = {tensor.index: entry for tensor, entry in
              [*zip(whole.inputs, subgraph.inputTensorMetadata or [], strict=False),
               *zip(whole.outputs, subgraph.outputTensorMetadata or [], strict=False)]}

    def entry(tensor: tflite_inspect.TensorInfo) -> Any:
        if tensor.index in shared:
            return shared[tensor.index]
        plain = schema.TensorMetadataT()
        plain.name = tensor.name
        return plain

    kept = schema.SubGraphMetadataT()
    kept.inputTensorMetadata = [entry(tensor) for tensor in piece.inputs]
    kept.outputTensorMetadata = [entry(tensor) for tensor in piece.outputs]
    described.subgraphMetadata = [kept]
    described.version = content_version(part)
    described.description = f"{_text(described.description)}; the {role} of a split of it"
    named = {_text(file.name) for tensor in [*kept.inputTensorMetadata, *kept.outputTensorMetadata]
             for file in tensor.associatedFiles or []}
    return populate(part, _packed_metadata(described),
                    {name: data for name, data in files.items() if name in named})


def _normalization(found: Any) -> Normalization | None:
    for tensor in found.subgraphMetadata[0].inputTensorMetadata or []:
        for unit in tensor.processUnits or []:
            if unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions:
                return Normalization(tuple(float(v) for v in unit.options.mean),
                                     tuple(float(v) for v in unit.options.std))
    return None


def _labels(model: bytes, found: Any) -> tuple[str, ...]:
    """The first TENSOR_AXIS_LABELS file of an output, read from the appended archive."""
    names = [file.name for tensor in found.subgraphMetadata[0].outputTensorMetadata or []
             for file in tensor.associatedFiles or []
             if file.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS]
    if not names:
        return ()
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            text = archive.read(_text(names[0])).decode()
    except (zipfile.BadZipFile, KeyError):
        return ()
    return tuple(line for line in text.splitlines() if line)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
