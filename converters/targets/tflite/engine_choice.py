"""Which engine makes each TFLite mode: the TF converter or ai-edge-quantizer.

ai-edge-quantizer derives a mode from the one fp32 ``.tflite`` in a fraction of a conversion;
benchmarks/quantizer_engines.out.md compares both engines mode by mode (accuracy, size,
latency, LiteRT loading, byte determinism). ``auto`` uses the quantizer where that comparison
shows it is at least as good, and the TF converter where only it can make the artifact:

* fp32 is the TF converter's conversion (every other mode's source);
* fp16 and dynamic: the quantizer (same accuracy and size, same LiteRT kernels), unless Flex
  ops are allowed (the quantizer has no rules for TensorFlow ops) or the batch is fixed;
* int8: the TF converter. The quantizer's int8 keeps the accuracy but agrees less with Keras
  (MobileNetV2 0.35: top-1 agreement 0.815 against 0.84, max |diff| 0.68 against 0.47; the
  sample: 0.147 against 0.058), it cannot make uint8 I/O (Coral) and it keeps ops without an
  int8 rule in float (a strict build must be fully integer). ``--quant-engine
  ai-edge-quantizer`` still makes it (float32 or int8 I/O); the Edge TPU's batch-1 int8
  always comes from the TF converter;
* int8-mixed: only the quantizer quantizes per op.

The TF converter's int8 is itself made faster: LiteRT computes its calibration ranges
(:mod:`litert_calibration`; ``--quant-engine tflite-converter`` keeps TF's own calibrator), and
the tflite target's int8 is quantized from the fp32 artifact (:mod:`int8_from_fp32`: the same
model as a second conversion, with either calibrator).
"""

from __future__ import annotations

from dataclasses import dataclass

from converters.config import IODType, QuantEngine, Quantization
from converters.errors import ConfigError

TF_CONVERTER = "tf.lite.TFLiteConverter"
QUANTIZER = "ai-edge-quantizer"  # the engine's name in report.json (with its version)


@dataclass(frozen=True)
class ModeRequest:
    """What decides the engine of one mode."""

    mode: Quantization
    io_dtype: IODType
    allow_float_fallback: bool
    allow_flex: bool
    fixed_batch: bool  # the Edge TPU's batch-1 model


def engine_for(request: ModeRequest, choice: QuantEngine) -> str:
    """The engine (``TF_CONVERTER`` or ``QUANTIZER``) that makes ``request.mode``."""
    mode = request.mode
    if mode is Quantization.FP32:
        return TF_CONVERTER
    if mode is Quantization.INT8_MIXED:
        if choice is QuantEngine.TFLITE_CONVERTER or request.fixed_batch:
            raise ConfigError("--quant int8-mixed is made by ai-edge-quantizer (per-op "
                              "quantization): use --quant-engine auto or ai-edge-quantizer")
        return QUANTIZER
    if choice is QuantEngine.TFLITE_CONVERTER or request.fixed_batch:
        return TF_CONVERTER
    reason = quantizer_cannot(request)
    if choice is QuantEngine.AI_EDGE_QUANTIZER:
        if reason:
            raise ConfigError(f"--quant-engine ai-edge-quantizer cannot make {mode.value}: "
                              f"{reason}; use --quant-engine auto (the TF converter makes it)")
        return QUANTIZER
    return TF_CONVERTER if reason or mode is Quantization.INT8 else QUANTIZER


def quantizer_cannot(request: ModeRequest) -> str | None:
    """Why ai-edge-quantizer cannot make this mode, or None."""
    if request.allow_flex and request.mode in (Quantization.FP16, Quantization.DYNAMIC):
        return "with --allow-flex the fp32 model may hold TensorFlow (Flex) ops it has no rule for"
    if request.mode is Quantization.INT8 and request.io_dtype is IODType.UINT8:
        return "it makes float32 or int8 model I/O, not uint8 (--io-dtype)"
    return None
