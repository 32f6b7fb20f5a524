"""Stage ``tflite-quantize``: derive a quantized TFLite mode from the fp32 artifact with
ai-edge-quantizer (no TensorFlow, no second conversion).

fp16 (float16 weights), dynamic (int8 weights, the TF converter's 1024-element rule), int8
(static, calibrated on the calibration split, float32 or int8 I/O) and int8-mixed: the
accuracy-aware search of :func:`quantizer_engine.accuracy_aware_int8`, which keeps the ops that
add the most error in float, one group at a time, until the drop on the validation split is
within ``--max-accuracy-drop``; its info JSON says which ops stayed float, the accuracy
recovered and what it cost in size and latency against plain int8. Planned automatically
behind plain int8 (``over_bound_of``), the search runs only when plain int8's validated drop is
over the bound; otherwise the stage is not needed (StageNotNeeded) and writes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from converters import console
from converters.config import Quantization
from converters.errors import ConversionError
from converters.fsutil import read_json, write_bytes_atomic, write_json_atomic
from converters.inputs.array_files import listed
from converters.stages import data, export, reference
from converters.stages.base import StageContext, StageNotNeeded
from converters.targets.tflite import describe, quantizer_engine, record
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite.int8_from_fp32 import LOOP_OP
from converters.targets.tflite.params import MixedParams, QuantizeParams
from converters.validation.drops import accuracy_drop
from converters.validation.latency import median_latency_ms

SEARCH_BASES = ("accuracy", "top1_agreement")  # what accuracy_aware_int8 scores
# The automatic search keeps at most this many ops, or this share of the ops, in float
AUTOMATIC_FLOAT_OPS = 8
AUTOMATIC_FLOAT_SHARE = 0.1
CALIBRATED = (Quantization.INT8, Quantization.INT8_MIXED)  # the modes the quantizer calibrates


def run(context: StageContext) -> None:
    params = QuantizeParams.of(context)
    mode = Quantization(params.mode)
    needless = _why_mixed_is_not_needed(context) if mode is Quantization.INT8_MIXED else None
    if needless:
        raise StageNotNeeded(needless)
    console.info(f"quantizing TFLite {mode.value} from {params.source} with ai-edge-quantizer")
    fp32 = context.read(params.source).read_bytes()
    if mode in CALIBRATED and _has_loop(fp32):
        raise ConversionError(f"ai-edge-quantizer cannot calibrate {params.source}: it runs a "
                              f"loop (recurrent layers, a {LOOP_OP}). Use --quant int8 (the TF "
                              "converter unrolls the loop for int8)")
    with console.native_noise_filtered():  # LiteRT announces its XNNPACK delegate
        model, mixed = _quantized(context, params, mode, fp32)
    graph = tflite_inspect.parse(model.flatbuffer)
    if mode is Quantization.INT8 and not params.allow_float_fallback:
        record.require_full_integer(context, graph)
    info = record.artifact_info(context, graph, model.seconds, record.quantizer_label())
    info["op_errors"] = record.op_errors(context, model.flatbuffer)
    if mixed is not None:
        info["mixed_precision"] = mixed
    flatbuffer, info["metadata"] = describe.attach(context, model.flatbuffer, graph)
    write_bytes_atomic(context.write(params.artifact), flatbuffer)
    write_json_atomic(context.write(params.info), info)
    console.info(f"TFLite {mode.value}: {model.size / 1024:.1f} KiB in {model.seconds:.1f} s")


def _quantized(context: StageContext, params: QuantizeParams, mode: Quantization, fp32: bytes
               ) -> tuple[quantizer_engine.QuantizedModel, dict[str, Any] | None]:
    """The artifact of ``mode`` made by the quantizer from ``fp32``, and the record of the
    accuracy-aware search when ``mode`` is int8-mixed."""
    if mode is Quantization.FP16:
        return quantizer_engine.quantize_fp16(fp32), None
    if mode is Quantization.DYNAMIC:
        return quantizer_engine.quantize_dynamic(fp32), None
    if mode is Quantization.INT8:
        calibration = data.load_split(context.build_dir, data.CALIBRATION,
                                      "int8 by ai-edge-quantizer")
        return quantizer_engine.quantize_int8(fp32, calibration, io_type=params.io_type,
                                              threads=params.threads), None
    return _mixed(context, fp32)


def _why_mixed_is_not_needed(context: StageContext) -> str | None:
    """For an automatic int8-mixed: why this build does not need the search (plain int8 is
    within the bound, or its drop is not a classification score the search can improve)."""
    params = MixedParams.of(context)
    if params.over_bound_of is None:
        return None  # --quant int8-mixed: always made
    inputs = [tensor.name for tensor in export.model_inputs(context.build_dir)]
    if len(inputs) != 1:
        return (f"the accuracy-aware search handles models with one input; this model has "
                f"{len(inputs)} ({listed(inputs)}): plain int8 stands")
    record = read_json(context.read(params.over_bound_of))
    drop, basis = accuracy_drop(record, read_json(context.read(reference.SUMMARY)))
    if drop is None:
        return None  # plain int8 failed validation: the search may give a usable model
    if basis not in SEARCH_BASES:
        return (f"plain int8's drop is measured on {basis}; the accuracy-aware search scores "
                "one classification output (use --quant int8-mixed with labels to force it)")
    if drop <= params.max_accuracy_drop + 1e-12:
        return (f"plain int8 is within --max-accuracy-drop ({basis} drop {drop:.4f} <= "
                f"{params.max_accuracy_drop})")
    if _has_loop(context.read(params.source).read_bytes()):
        return (f"the fp32 model runs a loop (recurrent layers, a {LOOP_OP}), which "
                "ai-edge-quantizer's search cannot calibrate")
    console.info(f"int8-mixed: plain int8's {basis} drop {drop:.4f} is over --max-accuracy-drop "
                 f"{params.max_accuracy_drop}: searching for ops to keep in float")
    return None


def _has_loop(fp32: bytes) -> bool:
    return any(op.name == LOOP_OP for op in tflite_inspect.parse(fp32).operators)


def _mixed(context: StageContext, fp32: bytes) -> tuple[quantizer_engine.QuantizedModel, dict[str, Any]]:
    """The accuracy-aware search on the validation split, and what report.json says of it."""
    params = MixedParams.of(context)
    calibration = data.load_split(context.build_dir, data.CALIBRATION, "--quant int8-mixed")
    validation = data.load_split(context.build_dir, data.VALIDATION, "--quant int8-mixed")
    labels = data.load_labels(context.build_dir)
    keras_outputs = (None if labels is not None else
                     reference.load_single_output(context.build_dir, "--quant int8-mixed"))
    # The automatic search has a budget (each step re-measures every op): at most 8 ops or a
    # tenth of the ops in float; --quant int8-mixed searches until the bound holds.
    budget = (None if params.over_bound_of is None else
              max(AUTOMATIC_FLOAT_OPS,
                  math.ceil(AUTOMATIC_FLOAT_SHARE * len(quantizer_engine.list_ops(fp32)))))
    result = quantizer_engine.accuracy_aware_int8(
        fp32, calibration, validation, labels=labels, reference=keras_outputs,
        max_drop=params.max_accuracy_drop, max_float_ops=budget, threads=params.threads)
    if not result.within_bound:
        console.warn(f"int8-mixed: the drop is {result.drop:.4f} with {len(result.kept_float)} "
                     f"ops in float, still over --max-accuracy-drop {result.max_drop}")
    basis = "accuracy" if labels is not None else "top1_agreement"
    shown = _shown_int8_score(context, basis)
    if worse := no_better_than_int8(result.score, len(result.kept_float), shown, basis):
        raise StageNotNeeded(worse)
    image = validation[:1]
    int8_ms = _latency_ms(result.int8_model.flatbuffer, image, params)
    mixed_ms = _latency_ms(result.model.flatbuffer, image, params)
    int8_score = result.int8_score if shown is None else shown
    summary = {
        "score_basis": basis,
        "max_accuracy_drop": result.max_drop,
        "within_bound": result.within_bound,
        "fp32_score": result.fp32_score,
        # plain int8's score as the report shows it (the automatic search's baseline), and the
        # score of ai-edge-quantizer's own int8, where the search started
        "int8_score": int8_score,
        "search_start_score": result.int8_score,
        "score": result.score,
        "accuracy_recovered": result.score - int8_score,
        "kept_float": [record.op_error_row(error) for error in result.kept_float],
        "int8_size_bytes": result.int8_size,
        "size_cost_bytes": result.model.size - result.int8_size,
        "int8_latency_ms": int8_ms,
        "latency_cost_ms": round(mixed_ms - int8_ms, 4),
        "steps": [{"float_ops": len(step.kept_float), "score": step.score,
                   "size_bytes": step.size} for step in result.steps],
    }
    return result.model, summary


def no_better_than_int8(score: float, float_ops: int, shown: float | None,
                        basis: str) -> str | None:
    """Why the search's best is not an artifact: it scores no better than the plain int8 the
    report shows (``shown``; None: no such int8 to compare with)."""
    if shown is None or score > shown:
        return None
    return (f"the accuracy-aware search's best ({basis} {100 * score:.1f} % with {float_ops} "
            f"ops in float) is no better than plain int8's ({100 * shown:.1f} %): plain int8 "
            "stands")


def _shown_int8_score(context: StageContext, basis: str) -> float | None:
    """Plain int8's validated score on ``basis``, as the report shows it (whichever engine made
    it), for an automatic int8-mixed; None for --quant int8-mixed or when int8 has none."""
    over_bound_of = MixedParams.of(context).over_bound_of
    if over_bound_of is None:
        return None
    found = read_json(context.read(over_bound_of)).get("metrics", {}).get(basis)
    return None if found is None else float(found)


def _latency_ms(flatbuffer: bytes, image: np.ndarray, params: QuantizeParams) -> float:
    """Median single-image latency (the validation stage's method, threads and runs)."""
    interpreter = quantizer_engine.litert_interpreter(flatbuffer, params.threads)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], quantizer_engine.to_input(image, detail))
    return round(median_latency_ms(interpreter.invoke, params.latency_runs), 4)
