"""``TimeDistributed`` layers run over all time steps at once.

Keras 3's ``TimeDistributed`` calls its inner layer once per time step in a Python loop when the
time axis is static, so a traced model holds one copy of the inner layer's ops per step: a
``TimeDistributed(Dense)`` over 188 steps becomes 188 MatMuls, and the ONNX int8 model (a
quantize/dequantize pair per copy) is three times the fp32 file. The inner layer treats every
sample on its own, so it can take the batch and time axes merged into one, as Keras 2 did:
reshape ``(batch, time, ...)`` to ``(batch × time, ...)``, call it once, reshape back. The
same weights, the same arithmetic per sample, one copy of the ops. A layer given a mask that
its inner layer reads keeps the per-step loop.
"""

from __future__ import annotations

import types
from typing import Any


def merge_time_steps(model: Any) -> tuple[str, ...]:
    """Make every ``TimeDistributed`` layer of ``model`` (nested models' included) call its inner
    layer once over the merged batch and time axes; the names of the layers changed."""
    import keras

    changed = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.TimeDistributed):
            layer.call = types.MethodType(_merged_call(layer.call), layer)
            changed.append(layer.name)
    return tuple(changed)


def _merged_call(per_step: Any) -> Any:
    def call(self: Any, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        from keras import ops

        inner = self.layer
        if (mask is not None and inner._call_has_mask_arg) or None in inputs.shape[2:]:
            return per_step(inputs, training=training, mask=mask)
        shape = ops.shape(inputs)
        merged = ops.reshape(inputs, (-1, *inputs.shape[2:]))
        kwargs = {"training": training} if inner._call_has_training_arg else {}
        outputs = inner.call(merged, **kwargs)
        return ops.reshape(outputs, (shape[0], shape[1], *outputs.shape[1:]))

    return call
