"""Stage ``export``: load the model, check it, record its inputs and outputs (``model.json``).

Stage ``saved-model`` (planned by the targets that convert from one: onnx) writes the model as a
SavedModel. TFLite conversions freeze the loaded model's serving function in their own process
instead (:mod:`converters.targets.tflite.convert`): writing a SavedModel traces the model and
TF's saver functions again, and the converter reads it back (MobileNetV2 224x224: 4.6 s + 3.0 s
against 1.4 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters import console
from converters.errors import ModelError
from converters.fsutil import read_json, write_json_atomic
from converters.inputs.array_files import listed
from converters.inputs.custom_objects import CustomObjectsFile
from converters.inputs.host_memory import available_memory, check_fits
from converters.inputs.tensor_info import TensorInfo, tensors
from converters.stages.base import StageContext, StageParams

if TYPE_CHECKING:  # loading needs TensorFlow: imported by the stages that load the model
    from converters.inputs.model import LoadedModel

SAVED_MODEL = "export/saved_model"
MODEL_INFO = "export/model.json"


@dataclass(frozen=True, kw_only=True)
class ExportParams(StageParams):
    unsafe: bool  # --unsafe: allow Lambda layers' code to be loaded
    input_shape: list[int] | None  # --input-shape: per-sample shape for a model without one
    # An array dataset's per-sample shapes by array name: the sizes of inputs declared without
    # one (when --input-shape is not given); [] for image folders
    data_shapes: list[tuple[str, list[int]]]
    # --custom-objects: each file's path and text (the text travels with the job, into the key)
    custom_objects: list[dict[str, str]]
    # A per-channel --mean/--std folded into the model (its first input then takes pixels):
    # {"mean": [...], "std": [...]}; None: the model as it is
    fold_normalization: dict[str, list[float]] | None = None

    def load_model(self, context: StageContext) -> LoadedModel:
        """The stage's model, loaded as every stage loads it (once per stage process)."""
        from converters.inputs.normalization_fold import folded

        model = self.unfolded_model(context)
        if self.fold_normalization is None:
            return model
        return folded(model, *self.normalization_values())

    def unfolded_model(self, context: StageContext) -> LoadedModel:
        """The model file's model, without a folded normalization."""
        from converters.inputs.model import load

        shape = self.input_shape
        return load(context.model_path, unsafe=self.unsafe,
                    input_shape=tuple(shape) if shape else None,
                    data_shapes=tuple((name, tuple(sizes)) for name, sizes in self.data_shapes),
                    custom_objects=tuple(CustomObjectsFile.from_dict(file)
                                         for file in self.custom_objects))

    def normalization_values(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        assert self.fold_normalization is not None
        return (tuple(self.fold_normalization["mean"]), tuple(self.fold_normalization["std"]))


def run(context: StageContext) -> None:
    params = ExportParams.of(context)
    model = params.load_model(context)
    shapes = listed(f"{tensor.name} {tensor.shape}" for tensor in model.inputs)
    console.info(f"tracing {context.model_path} (input {shapes})")
    if model.shapes_from_data:
        names = listed(f"'{name}'" for name in model.shapes_from_data)
        console.info(f"input {names}: no static size in the model, the size of the dataset's "
                     f"samples is used ({context.dataset_dir})")
    model.trace()  # a model that cannot run in a graph fails here, before the dataset is read
    info = model.info()
    if params.fold_normalization is not None:
        info["folded_normalization"] = fold_record(context, params, model)
    check_fits(str(context.model_path), info["sample_bytes"], info["largest_activation_bytes"],
               samples=1, available=available_memory())
    write_json_atomic(context.write(MODEL_INFO), info)


def fold_record(context: StageContext, params: ExportParams, model: LoadedModel) -> dict[str, Any]:
    """Check the folded model against the model on normalized inputs, and say so."""
    from converters.inputs.normalization_fold import check

    mean, std = params.normalization_values()
    if not model.inputs[0].is_image or model.inputs[0].shape[-1] not in (len(mean), len(std)):
        raise ModelError(f"--mean/--std give {len(mean)} values per channel but model "
                         f"{context.model_path}'s first input is {list(model.inputs[0].shape)}: "
                         "per-channel normalization applies to an image input")
    record = check(params.unfolded_model(context), model, mean, std)
    console.info(f"per-channel normalization folded into the model (mean {record['mean']}, std "
                 f"{record['std']}): its artifacts take pixels 0..255; folded vs unfolded max "
                 f"|difference| {record['max_abs_difference']:.2g}")
    return record


def write_saved_model(context: StageContext) -> None:
    """Stage ``saved-model``: the model as a SavedModel with a ``serving_default`` signature."""
    model = ExportParams.of(context).load_model(context)
    console.info(f"exporting {context.model_path} to a SavedModel")
    model.export(context.write(SAVED_MODEL))


def model_inputs(build_dir: Path) -> tuple[TensorInfo, ...]:
    """The exported model's inputs, in signature order."""
    return tensors(read_json(build_dir / MODEL_INFO), "inputs")


def model_outputs(build_dir: Path) -> tuple[TensorInfo, ...]:
    """The exported model's outputs, in signature order."""
    return tensors(read_json(build_dir / MODEL_INFO), "outputs")


def input_shape(build_dir: Path) -> tuple[int, int, int]:
    """Height, width and channels of a model with one image input (what takes an image file)."""
    inputs = model_inputs(build_dir)
    if len(inputs) != 1 or not inputs[0].is_image:
        shapes = listed(f"{tensor.name} {tensor.shape}" for tensor in inputs)
        raise ModelError(f"this step takes an image and needs a model with one image input "
                         f"(height × width × 1, 3 or 4 channels); the model has {shapes}")
    height, width, channels = (int(size) for size in inputs[0].shape)  # type: ignore[arg-type]
    return height, width, channels
