"""Which engine makes each TFLite mode: the TF converter or ai-edge-quantizer.

ai-edge-quantizer derives a mode from the one fp32 ``.tflite`` in a fraction of a conversion;
benchmarks/quantizer_engines.out.md compares both engines mode by mode (accuracy, size,
latency, LiteRT loading, byte determinism). ``auto`` uses the quantizer where that comparison
shows it is at least as good, and the TF converter where only it can make the artifact:

* fp32 is the TF converter's conversion (every other mode's source);
* fp16 and dynamic: the quantizer (same accuracy and size, same LiteRT kernels), unless Flex
  ops are allowed (the quantizer has no rules for TensorFlow ops) or the batch is fixed;
* int8: the quantizer only with float32 I/O and ``--allow-float-fallback``: it cannot make
  uint8 I/O (Coral), and it keeps ops without an int8 rule in float (a strict build must be
  fully integer); the Edge TPU's batch-1 int8 always comes from the TF converter;
* int8-mixed: only the quantizer quantizes per op.
"""

from __future__ import annotations

from dataclasses import dataclass

from converters.config import IODType, QuantEngine, Quantization
from converters.errors import ConfigError

TF_CONVERTER = "tf.lite.TFLiteConverter"
QUANTIZER = "ai-edge-quantizer"


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
    return TF_CONVERTER if reason or not _quantizer_as_good(request) else QUANTIZER


def quantizer_cannot(request: ModeRequest) -> str | None:
    """Why ai-edge-quantizer cannot make this mode, or None."""
    if request.allow_flex and request.mode in (Quantization.FP16, Quantization.DYNAMIC):
        return "with --allow-flex the fp32 model may hold TensorFlow (Flex) ops it has no rule for"
    if request.mode is Quantization.INT8 and request.io_dtype is IODType.UINT8:
        return "it makes float32 or int8 model I/O, not uint8 (--io-dtype)"
    return None


def _quantizer_as_good(request: ModeRequest) -> bool:
    """auto: int8 from the quantizer only when the model may keep float ops and has float I/O."""
    if request.mode is Quantization.INT8:
        return request.allow_float_fallback and request.io_dtype is IODType.FLOAT32
    return True
