"""What stage ``data`` is asked to do and the files it writes: what planning and the stages
reading its files need, without the libraries that read a dataset (numpy, Pillow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converters.stages.export import ExportParams

CALIBRATION = "data/calibration.npz"
VALIDATION = "data/validation.npz"
VALIDATION_LABELS = "data/validation_labels.npy"
DATASET_INFO = "data/dataset.json"
OUTPUTS = (CALIBRATION, VALIDATION, VALIDATION_LABELS, DATASET_INFO)
IMAGES, ARRAYS = "images", "arrays"  # dataset.json "kind"


@dataclass(frozen=True, kw_only=True)
class DataParams(ExportParams):  # the model is loaded as export loads it, to score preprocessing
    preprocessing: dict[str, Any]  # Preprocessing.as_dict(): a mode, or auto
    calibration_size: int
    validation_size: int
    seed: int
    max_array_mb: int  # what an array dataset's files may declare
    allow_class_mismatch: bool
    labels: list[str] | None  # --labels: class names (None: the class folder names)
    task: str  # --task: which output the labels belong to, when scoring preprocessing
