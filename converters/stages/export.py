"""Stage ``export``: load the model once, check it, write a SavedModel every mode converts from."""

from __future__ import annotations

from pathlib import Path

from converters import console
from converters.fsutil import read_json, write_json_atomic
from converters.model import load
from converters.stages.base import StageContext

SAVED_MODEL = "export/saved_model"
MODEL_INFO = "export/model.json"


def run(context: StageContext) -> None:
    shape = context.params["input_shape"]
    model = load(context.model_path, unsafe=context.params["unsafe"],
                 input_shape=tuple(shape) if shape else None)
    console.info(f"exporting {context.model_path} (input {model.input_shape}) to a SavedModel")
    model.export(context.write(SAVED_MODEL))
    write_json_atomic(context.write(MODEL_INFO), model.info())


def input_shape(build_dir: Path) -> tuple[int, int, int]:
    height, width, channels = read_json(build_dir / MODEL_INFO)["input_shape"]
    return int(height), int(width), int(channels)
