"""The TF converter's int8 made from the fp32 artifact, without converting the model again.

A TF converter int8 conversion is: the model converted to a float flatbuffer (the same
conversion as fp32), then calibration and the quantizer on that flatbuffer. The float
flatbuffer the quantizer gets is the fp32 artifact without its ``CONVERSION_METADATA`` entry
(the converter adds that at the very end), so :func:`quantize` hands the fp32 artifact to the
converter's own post-conversion step (``_optimize_tflite_model``: calibration, quantizer, I/O
types, buffer de-duplication) and its own metadata step: the result is what
``converter.convert()`` makes, with the fp32 artifact's signature
(tests/test_litert_calibration.py compares their content on several models).

These are the TF converter's private methods; TensorFlow is pinned (constraints.txt) and the
equality tests fail if they move. :func:`unfit` names the fp32 artifacts this does not
apply to (quantization-aware models, Flex ops, no conversion metadata), which are converted.
"""

from __future__ import annotations

from typing import Any

from converters.targets.tflite.metadata import METADATA_NAME

CONVERSION_METADATA = b"CONVERSION_METADATA"
MODEL_METADATA = METADATA_NAME.encode()  # the model metadata the build adds (labels, normalization)
# Ops in a float conversion that mean the model was quantization-aware or is not float.
NOT_FLOAT_OPS = ("QUANTIZE", "DEQUANTIZE", "FAKE_QUANT", "DELEGATE", "CUSTOM")
LOOP_OP = "WHILE"  # a recurrent layer's loop: TF's calibrator crashes the process on it


def unfit(fp32: bytes) -> str | None:
    """Why the fp32 artifact cannot stand in for the converter's float flatbuffer, or None."""
    from converters.targets.tflite import flatbuffer as tflite_inspect

    graph = tflite_inspect.parse(fp32)
    if others := sorted({op.name for op in graph.operators if op.name in NOT_FLOAT_OPS
                         or op.name.startswith("Flex")}):
        return f"the fp32 model has {', '.join(others)} ops"
    if any(op.name == LOOP_OP for op in graph.operators):
        return ("the fp32 model runs a loop (recurrent layers), which TF's calibrator cannot run: "
                "the int8 model is converted with the loop unrolled")
    model, entry = _with_metadata(fp32)
    if entry is None:
        return "the fp32 model has no conversion metadata"
    if entry.buffer != len(model.buffers) - 1:
        return "the fp32 model's conversion metadata is not its last buffer"
    return None


def _with_metadata(fp32: bytes) -> tuple[Any, Any]:
    """The fp32 artifact as TF's object model, without the model metadata the build added
    after converting (converters/targets/tflite/metadata.py: its buffer comes last, after the
    conversion metadata), and its conversion metadata entry."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(fp32)
    for added in [e for e in model.metadata or () if e.name == MODEL_METADATA]:
        model.metadata.remove(added)
        if added.buffer == len(model.buffers) - 1:
            model.buffers.pop()
    entry = next((e for e in model.metadata or () if e.name == CONVERSION_METADATA), None)
    return model, entry


def _float_flatbuffer(fp32: bytes) -> tuple[bytes, int]:
    """The fp32 artifact without its conversion metadata, and the model type recorded there."""
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as metadata_fb
    from tensorflow.lite.tools import flatbuffer_utils

    model, entry = _with_metadata(fp32)
    recorded = metadata_fb.ConversionMetadataT.InitFromObj(
        metadata_fb.ConversionMetadata.GetRootAs(bytes(model.buffers[entry.buffer].data), 0))
    model.metadata = [e for e in model.metadata if e is not entry]
    model.buffers = model.buffers[:entry.buffer]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), recorded.environment.modelType


def settings_converter() -> Any:
    """A TF converter with no model: what :func:`quantize` needs is its settings only."""
    from tensorflow.lite.python import lite

    return lite.TFLiteFrozenGraphConverterV2([], None)


def quantize(converter: Any, fp32: bytes) -> bytes:
    """What ``converter.convert()`` makes (an int8 configuration: optimizations, representative
    dataset, ops, I/O types) when its float conversion is ``fp32`` (check :func:`unfit`)."""
    from tensorflow.lite.python import lite

    float_model, model_type = _float_flatbuffer(fp32)
    mode = lite.QuantizationMode(
        converter.optimizations, converter.target_spec, converter.representative_dataset, None,
        converter._experimental_disable_per_channel,
        converter.experimental_new_dynamic_range_quantizer, converter._experimental_low_bit_qat,
        converter._experimental_full_integer_quantization_bias_type,
        converter._experimental_variable_quantization, converter._experimental_strict_qdq)
    converter._validate_inference_input_output_types(mode)
    arguments = {**converter._get_base_converter_args(), **mode.converter_flags()}
    debug_options = lite._build_conversion_flags(**arguments).debug_options
    converter._metadata.environment.modelType = model_type

    def optimize(self: Any) -> bytes:
        return self._optimize_tflite_model(float_model, mode, debug_options,
                                           quant_io=self.experimental_new_quantizer)

    result: bytes = converter._convert_and_export_metrics(optimize)
    return result
