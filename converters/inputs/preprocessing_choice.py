"""``--preprocessing auto``: which pixel scaling a model expects, and a check of an explicit one.

Two pieces of evidence, in this order of strength:
1. Keras accuracy under each candidate scaling on a small seeded subset of labelled calibration
   images (the candidate that classifies best is what the model was trained with);
2. the model's own leading ``Rescaling`` / ``Normalization`` layer: the candidate whose range
   that layer maps to a unit-sized range (a layer that divides by 255 expects 0..255 pixels).
Without either, ``0..1`` is assumed and the report says so. An explicit ``--preprocessing``
always wins, with a warning when another candidate scores clearly better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from converters.config import Preprocessing, PreprocessingMode

# Pixel ranges of the candidates (mean-std joins them when --mean/--std are given).
RANGES = {PreprocessingMode.UNIT: (0.0, 1.0), PreprocessingMode.SIGNED: (-1.0, 1.0),
          PreprocessingMode.RAW: (0.0, 255.0)}
SUBSET = 64  # labelled calibration images scored per candidate
# Accuracies closer than this are a tie (the layer, then the default order decides), and an
# explicit choice this much worse than the best gets a warning; with few images, more is noise
# (one standard error of an accuracy on n images is at most 0.5 / sqrt(n)).
TIE = 0.02
CLEARLY_BETTER = 0.10


def margin(floor: float, images: int) -> float:
    """``floor``, or the noise of an accuracy measured on ``images`` images when that is larger."""
    return max(floor, 1.0 / math.sqrt(max(images, 1)))


@dataclass(frozen=True)
class Choice:
    """The preprocessing used, why, and the evidence (report.json ``dataset.preprocessing_choice``)."""

    preprocessing: Preprocessing
    requested: str
    reason: str
    scores: dict[str, float] | None
    layer_suggests: str | None
    warning: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "chosen": self.preprocessing.mode.value,
                "reason": self.reason, "scores": self.scores, "layer_suggests": self.layer_suggests,
                "warning": self.warning}


def candidates(requested: Preprocessing) -> list[Preprocessing]:
    """The scalings worth scoring: the three ranges, and mean-std when its values are given."""
    found = [Preprocessing(mode) for mode in RANGES]
    if requested.mean is not None and requested.std is not None:
        found.append(Preprocessing(PreprocessingMode.MEAN_STD, requested.mean, requested.std))
    return found


def layer_preference(layer: dict[str, Any] | None) -> PreprocessingMode | None:
    """The candidate whose range the model's leading affine layer maps to a span nearest 2."""
    if layer is None or not layer.get("scale"):
        return None

    def distance(mode: PreprocessingMode) -> float:
        low, high = RANGES[mode]
        return abs(math.log((high - low) * abs(layer["scale"]) / 2.0))

    return min(RANGES, key=distance)


def choose(requested: Preprocessing, layer: dict[str, Any] | None,
           scores: dict[str, float] | None, scored_images: int) -> Choice:
    """Decide (auto) or check (explicit) the preprocessing from the evidence."""
    suggested = layer_preference(layer)
    layer_note = (f"the model's first layer {layer['kind']} '{layer['layer']}' (x * {layer['scale']:.4g}"
                  f" + {layer['offset']:.4g}) expects {suggested.value} pixels"
                  if layer and suggested else None)
    options = {option.mode.value: option for option in candidates(requested)}
    evidence = (f"Keras accuracy on {scored_images} labelled calibration images: "
                + ", ".join(f"{mode} {100 * value:.0f} %" for mode, value in (scores or {}).items()))
    if requested.mode is not PreprocessingMode.AUTO:
        return Choice(requested, requested.mode.value, "given with --preprocessing", scores,
                      suggested.value if suggested else None,
                      _explicit_warning(requested, scores, evidence, scored_images))
    if scores:
        best = max(scores.values())
        tied = [mode for mode, value in scores.items()
                if best - value <= margin(TIE, scored_images)]
        mode = suggested.value if suggested and suggested.value in tied else tied[0]
        reason = evidence + (f"; {layer_note}" if layer_note else "")
        return Choice(options[mode], "auto", reason, scores, suggested.value if suggested else None,
                      None)
    if suggested is not None and layer_note is not None:
        return Choice(options[suggested.value], "auto", layer_note, None, suggested.value, None)
    return Choice(Preprocessing(PreprocessingMode.UNIT), "auto",
                  "no labelled images and no Rescaling/Normalization layer at the model's input: "
                  "assumed 0..1; pass --preprocessing if the model was trained otherwise",
                  None, None, None)


def _explicit_warning(requested: Preprocessing, scores: dict[str, float] | None,
                      evidence: str, scored_images: int) -> str | None:
    if not scores or requested.mode.value not in scores:
        return None
    best_mode = max(scores, key=lambda mode: scores[mode])
    if scores[best_mode] - scores[requested.mode.value] < margin(CLEARLY_BETTER, scored_images):
        return None
    return (f"--preprocessing {requested.mode.value} looks wrong for this model: {evidence}. "
            f"Use --preprocessing {best_mode} (or auto) unless you know better")
