"""Stage ``tflite``: convert the model to one TFLite mode.

fp32 (no optimisation), fp16 (float16 weights), dynamic (int8 weights, hybrid kernels) and
int8 (full integer, calibrated on the representative split). Strict int8 allows only integer
builtins; a failure names the ops that could not be quantized. The modes ai-edge-quantizer
derives from the fp32 artifact instead are made by :mod:`converters.targets.tflite.quantize`
(see :mod:`converters.targets.tflite.engine_choice`).
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from converters import console
from converters.config import IODType, Quantization
from converters.cpu import usable_cores
from converters.errors import ConversionError
from converters.fsutil import read_json, write_bytes_atomic, write_json_atomic
from converters.inputs.model import Arrays
from converters.stages import data
from converters.stages.base import StageContext
from converters.targets.tflite import (
    calibration_share,
    describe,
    frozen,
    int8_from_fp32,
    litert_calibration,
    record,
)
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite.params import ModeParams

# TensorFlow ops in the converter's MLIR dump: "tf.Erfinv"(%4) ...
TF_OP_PATTERN = re.compile(r'"(tf\.[A-Z][A-Za-z0-9_]*)"')
BATCH_OF_RECURRENT = 1  # the batch a recurrent model's loop is traced at (frozen.serving_function)


def run(context: StageContext) -> None:
    params = ModeParams.of(context)
    mode = Quantization(params.mode)
    console.info(f"converting to TFLite {mode.value}")
    started = time.perf_counter()
    flatbuffer, calibration, recurrence = convert(context, mode)
    seconds = time.perf_counter() - started
    graph = tflite_inspect.parse(flatbuffer)
    if mode is Quantization.INT8 and not params.allow_float_fallback:
        record.require_full_integer(context, graph)
    info = record.artifact_info(context, graph, seconds, record.tf_converter_label())
    info["op_errors"] = record.op_errors(context, flatbuffer)
    info["calibration"] = calibration
    if recurrence is not None:  # traced at a fixed batch although none was asked for
        info |= {"recurrence": recurrence, "batch_size": BATCH_OF_RECURRENT}
    flatbuffer, info["metadata"] = describe.attach(context, flatbuffer, graph)
    write_bytes_atomic(context.write(params.artifact), flatbuffer)
    write_json_atomic(context.write(params.info), info)
    if calibration and calibration["ranges_from"]:
        console.info(f"int8 quantized with the calibrated ranges of {calibration['ranges_from']}")
    console.info(f"TFLite {mode.value}: {len(flatbuffer) / 1024:.1f} KiB in {seconds:.1f} s")


def convert(context: StageContext, mode: Quantization
            ) -> tuple[bytes, dict[str, Any] | None, str | None]:
    """The converted model; for int8, its calibration: the number of samples and the recorded
    ranges it reused (``ranges_from``, None when it calibrated itself); how a recurrent model's
    loop was converted (None: no loop)."""
    params = ModeParams.of(context)
    if mode is not Quantization.INT8:
        serving = _serving_function(context, calibrated=False)
        return _convert_float(context, serving, mode, params.allow_flex), None, serving.recurrence
    calibration = data.load_inputs(context.build_dir, data.CALIBRATION)
    fp32 = _fp32_source(context)
    converting = None if fp32 is not None else _serving_function(context, calibrated=True)
    recurrence = converting.recurrence if converting is not None else None
    convert_int8 = functools.partial(_convert_int8, context, calibration, fp32, converting,
                                     IODType(params.io_dtype), not params.allow_float_fallback)
    calibrated: dict[str, Any] = {
        "samples": data.sample_count(calibration), "ranges_from": None,
        "float_model": params.from_fp32 if fp32 is not None else context.model_path.name}
    if params.ranges_in and not context.read(params.ranges_in).exists():
        console.info(f"calibrating: {params.ranges_in} was not recorded (its stage failed)")
    elif params.ranges_in:
        ranges = read_json(context.read(params.ranges_in))
        try:
            with calibration_share.replaying_ranges(ranges):
                return (convert_int8(progress=False), {**calibrated, "ranges_from": params.ranges_in},
                        recurrence)
        except calibration_share.RangesMismatch as mismatch:
            console.info(f"calibrating again: the ranges in {params.ranges_in} do not fit this "
                         f"graph ({mismatch})")
    with _calibrating(params) as outcome:
        if params.ranges_out:
            with calibration_share.recording_ranges() as recording:
                flatbuffer = convert_int8()
            if recording.ranges is None:
                raise ConversionError(f"TFLite int8 conversion of {context.model_path} did not "
                                      "calibrate: no ranges to share")
            write_json_atomic(context.write(params.ranges_out), recording.ranges)
        else:
            flatbuffer = convert_int8()
    calibrated |= {"calibrated_by": outcome.calibrated_by or litert_calibration.CALIBRATED_BY_TF,
                   "delegate": outcome.delegate, "fallback_reason": outcome.fallback_reason}
    if outcome.fallback_reason:
        console.info(f"calibrated by TF's calibrator: {outcome.fallback_reason}")
    return flatbuffer, calibrated, recurrence


@contextmanager
def _calibrating(params: ModeParams) -> Iterator[litert_calibration.Outcome]:
    """LiteRT computes the calibration ranges (``litert_calibration``) on the stage process's
    threads (not part of the stage key: the ranges are the same on any number), or TF's
    calibrator does (``--quant-engine tflite-converter``)."""
    if not params.litert_calibration:
        yield litert_calibration.Outcome()
        return
    threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS") or usable_cores())  # --threads
    with litert_calibration.calibrating_with_litert(threads) as outcome:
        yield outcome


def _serving_function(context: StageContext, calibrated: bool) -> frozen.ServingFunction:
    """A converter of the model; with ``batch_size`` in the stage's parameters the batch
    dimension is fixed (the Edge TPU needs static shapes, batch 1), else it stays dynamic (a
    recurrent model's is fixed at 1: see :func:`frozen.serving_function`)."""
    params = ModeParams.of(context)
    return frozen.serving_function(params.load_model(context), params.batch_size, calibrated)


def _convert_float(context: StageContext, serving: frozen.ServingFunction, mode: Quantization,
                   allow_flex: bool) -> bytes:
    import tensorflow as tf

    converter = serving.converter
    if mode is Quantization.FP16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode is Quantization.DYNAMIC:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    return _run_converter(lambda: serving.signed(converter.convert()), context, mode.value,
                          allow_flex)


def _convert_int8(context: StageContext, calibration: Arrays, fp32: bytes | None,
                  serving: frozen.ServingFunction | None, io_dtype: IODType, strict: bool,
                  progress: bool = True) -> bytes:
    """The TF converter's int8: quantized from the fp32 artifact ``fp32`` (:mod:`int8_from_fp32`),
    or (None) converted from the model by ``serving``."""
    import tensorflow as tf

    count = data.sample_count(calibration)
    make: Callable[[], bytes]
    # The calibrator takes a sample by signature name when the float graph it runs has a
    # signature (the signed fp32 artifact; TF's SavedModel lowering, whose input order is its
    # own), else as a list in the frozen function's input order (``order``).
    order: tuple[str, ...] | None = None
    if fp32 is not None:  # quantize() takes only the converter's settings: no model to load
        converter = int8_from_fp32.settings_converter()
        make = functools.partial(int8_from_fp32.quantize, converter, fp32)
    else:
        assert serving is not None, "an int8 not made from the fp32 artifact converts the model"
        converter = serving.converter
        order = None if serving.lowered else serving.inputs
        make = lambda: serving.signed(converter.convert())  # noqa: E731

    def representative_dataset() -> Iterator[dict[str, np.ndarray] | list[np.ndarray]]:
        indices = (console.progress(range(count), "calibrating int8", total=count) if progress
                   else range(count))
        for index in indices:
            sample = {name: array[index:index + 1] for name, array in calibration.items()}
            yield sample if order is None else [sample[name] for name in order]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    if strict:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
    if io_dtype is not IODType.FLOAT32:
        converter.inference_input_type = tf.as_dtype(io_dtype.value)
        converter.inference_output_type = tf.as_dtype(io_dtype.value)
    return _run_converter(make, context, "int8", allow_flex=False)


def _fp32_source(context: StageContext) -> bytes | None:
    """The fp32 artifact an int8 is quantized from (None: convert the model)."""
    source = ModeParams.of(context).from_fp32
    if source is None:
        return None
    fp32 = context.read(source).read_bytes()
    if reason := int8_from_fp32.unfit(fp32):
        console.info(f"converting the model for int8: {reason}")
        return None
    return fp32


def _run_converter(convert: Callable[[], bytes], context: StageContext, mode: str,
                   allow_flex: bool) -> bytes:
    try:
        with console.native_noise_filtered():  # the int8 converter prints its settings
            result = convert()
    except calibration_share.RangesMismatch:
        raise
    except Exception as error:  # the converter raises its own ConverterError and others
        raise _conversion_error(context, mode, allow_flex, error) from None
    return result


def _conversion_error(context: StageContext, mode: str, allow_flex: bool,
                      error: Exception) -> ConversionError:
    text = str(error)
    tf_ops = sorted(set(TF_OP_PATTERN.findall(text)))
    if tf_ops and not allow_flex and mode != "int8":
        return ConversionError(
            f"TFLite {mode} conversion of {context.model_path} failed: the model uses TensorFlow "
            f"ops with no TFLite builtin: {', '.join(tf_ops)}. Re-run with --allow-flex to keep "
            "them as TensorFlow (Flex) ops; the device then needs the Flex delegate"
        )
    if tf_ops and mode == "int8":
        return ConversionError(
            f"TFLite {mode} conversion of {context.model_path} failed: the model uses TensorFlow "
            f"ops with no TFLite builtin ({', '.join(tf_ops)}), and {mode} cannot keep them as "
            "Flex ops; replace them in the model"
        )
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower()]
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    detail = "; ".join(lines[:5]) or first_line
    return ConversionError(f"TFLite {mode} conversion of {context.model_path} failed: {detail}")
