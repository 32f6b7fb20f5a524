"""Which Keras layer produced a TFLite tensor, from the tensor's name: per-op error in the terms
of the model a user wrote (report.json ``op_errors[].layer``).

TensorFlow names an op by the name scopes it was traced in, and Keras opens one scope per layer
(the model's, then each layer's: ``sample_shapes_1/conv2d_1/Relu``). Tracing the model again in
the same graph makes every scope unique with a suffix (``_1``), which the model's own scope
shows. A converter fuses ops and joins their names with ``;``, the op whose output it is first.
The model's outputs are ``Identity``, ``Identity_1``... in the model's output order. A tensor the
converter made itself (``tfl.quantize``) or the graph's input names no layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNIQUE_SUFFIX = re.compile(r"_\d+$")
_OUTPUT = re.compile(r"^(?:Identity|StatefulPartitionedCall)(?:_(\d+))?(?::\d+)?$")


def layer_of(tensor: str, model_name: str | None, layers: Sequence[str],
             outputs: Sequence[str]) -> str | None:
    """The name of the layer in ``layers`` that produced ``tensor``, or None when no layer did
    (or the model has no Keras layers, as a plain SavedModel)."""
    known = set(layers)
    if not known:
        return None
    for name in tensor.split(";"):
        parts = name.split(":")[0].split("/")
        output = _OUTPUT.match(parts[0]) if len(parts) == 1 else None
        if output is not None:
            index = int(output.group(1) or 0)
            if index < len(outputs) and outputs[index] in known:
                return outputs[index]
            continue
        suffix = _scope_suffix(parts[0], model_name)
        scopes = parts[1:-1] if suffix is not None else parts[:-1]
        for scope in reversed(scopes):  # the innermost scope is the layer (nested models)
            if (found := _layer_named(scope, suffix or "", known)) is not None:
                return found
    return None


def _scope_suffix(scope: str, model_name: str | None) -> str | None:
    """The suffix tracing added to the model's own scope ('' for none), or None when the name
    does not start with the model's scope."""
    if model_name is None or not scope.startswith(model_name):
        return None
    rest = scope[len(model_name):]
    return rest if rest == "" or _UNIQUE_SUFFIX.fullmatch(rest) else None


def _layer_named(scope: str, suffix: str, known: set[str]) -> str | None:
    if suffix and scope.endswith(suffix) and scope[:-len(suffix)] in known:
        return scope[:-len(suffix)]
    if scope in known:
        return scope
    stripped = _UNIQUE_SUFFIX.sub("", scope)
    return stripped if stripped in known else None
