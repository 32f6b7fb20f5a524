"""The real-client check of the tflite target: each artifact of an image classifier run through
MediaPipe Tasks' ``ImageClassifier`` (the C++ task graph Android, iOS and web apps use) on the
validation images, as an app runs it: MediaPipe reads the image file, resizes it and normalizes
it from the artifact's metadata, and names the top class from the metadata's labels.

Records top-1 agreement with Keras, accuracy against the labels, whether category names came
back, and whether the agreement is within one point of LiteRT's (a normalization in the metadata
that does not match the build's preprocessing shows up there). ``mediapipe`` is optional
(``pip install '.[mediapipe]'``); without it, and for models MediaPipe's classifier cannot take,
the record says why it did not run.

A MediaPipe task graph runs on one core: the images are shared out between as many classifiers
as the validation's threads, side by side (each image's result does not depend on which
classifier ran it).
"""

from __future__ import annotations

import sys
from importlib import metadata as distributions
from pathlib import Path
from typing import Any

import numpy as np

from converters import console, imports
from converters.fsutil import read_json
from converters.stages import data, reference
from converters.stages.base import StageContext
from converters.targets.base import ValidateParams
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite import metadata
from converters.validation.side_by_side import run_side_by_side

NOT_INSTALLED = "not run: pip install '.[mediapipe]'"
SHARED_LIBRARY_MISSING = "cannot open shared object file"
# Agreement further than this from LiteRT's on the same artifact is flagged.
LITERT_TOLERANCE = 0.01
FLOAT_INPUTS = frozenset({"FLOAT32"})


def check(context: StageContext, artifact: Path, litert: dict[str, Any]) -> dict[str, Any]:
    """The validation record's ``mediapipe`` entry for ``artifact`` (``litert``: the LiteRT
    validation's metrics, for comparison)."""
    reason = why_not(context, artifact)
    if reason is not None:
        return {"ran": False, "reason": reason}
    try:
        BaseOptions, vision = _import_tasks()
    except (ImportError, OSError) as error:  # not installed, or a system library it links is missing
        reason = _cannot_start(error) if SHARED_LIBRARY_MISSING in str(error) else NOT_INSTALLED
        return {"ran": False, "reason": reason}
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(artifact)), max_results=1)

    def create() -> Any:
        with console.native_noise_filtered():  # its LiteRT announces the XNNPACK delegate
            return vision.ImageClassifier.create_from_options(options)

    try:
        images, source = _images(context)  # MediaPipe's images load its native library
        classifiers = [create()]
        first = _top(classifiers[0], images[0])
    except (RuntimeError, ValueError) as error:  # MediaPipe refuses the model as it is
        return {"ran": False, "reason": f"MediaPipe refused the model: {_first_line(error)}"}
    except OSError as error:  # its runtime loads system libraries (EGL, GL) when it starts
        return {"ran": False, "reason": _cannot_start(error)}
    try:
        side_by_side = min(ValidateParams.of(context).threads, len(images) - 1)
        classifiers += [create() for _ in range(1, side_by_side)]
        top = [first, *run_side_by_side(classifiers, images[1:], _top,
                                        f"MediaPipe {artifact.name}", len(images) - 1)]
    finally:
        for classifier in classifiers:
            classifier.close()
    return _record(context, top, source, litert)


def _import_tasks() -> tuple[Any, Any]:
    """MediaPipe Tasks' ``BaseOptions`` and ``vision``, without what their import pulls in for
    nothing the check runs:

    * TensorFlow, when installed, for a documentation decorator alone (``mediapipe.tasks.python.
      core.optional_dependencies``, which goes on without it): in a stage process that has not
      loaded TensorFlow (one that only validates) that took 3 s and printed TensorFlow's
      start-up lines, so TensorFlow is refused;
    * matplotlib.pyplot, which ``vision.drawing_utils`` imports at its top for its landmark
      plots (0.26 s of MediaPipe's 0.31 s import on a 2-core EPYC): it gets an empty stand-in,
      and a later ``import matplotlib`` imports the real one.

    A MediaPipe that needs either at its import is imported again as it is."""
    try:
        with imports.refused("tensorflow"), imports.stood_in("matplotlib", "matplotlib.pyplot"):
            from mediapipe.tasks.python import BaseOptions, vision
    except Exception:  # whatever it raised without them: import it with them
        for name in [name for name in sys.modules if name.split(".")[0] == "mediapipe"]:
            del sys.modules[name]
        from mediapipe.tasks.python import BaseOptions, vision
    return BaseOptions, vision


def _top(classifier: Any, image: Any) -> Any:
    return classifier.classify(image).classifications[0].categories[0]


def _cannot_start(error: Exception) -> str:
    return (f"not run: MediaPipe's runtime cannot start on this machine ({_first_line(error)}); "
            "install the system library it names (Debian: libegl1, libgles2, libgl1, libglib2.0-0)")


def why_not(context: StageContext, artifact: Path) -> str | None:
    """Why MediaPipe's ImageClassifier cannot check this artifact, or None."""
    info = read_json(context.read(data.DATASET_INFO))
    if info.get("kind") != data.IMAGES:
        return "not applicable: MediaPipe's ImageClassifier takes images; this build's data are arrays"
    outputs = reference.load_outputs(context.build_dir)
    if len(outputs) != 1 or next(iter(outputs.values())).ndim != 2:
        return "not applicable: MediaPipe's ImageClassifier takes models with one class-score output"
    flatbuffer = artifact.read_bytes()
    tensor = tflite_inspect.parse(flatbuffer).inputs[0]
    if len(tensor.shape) != 4 or tensor.shape[-1] != 3:
        return "not applicable: MediaPipe's ImageClassifier takes RGB image models"
    found = metadata.read(flatbuffer)
    if tensor.type in FLOAT_INPUTS and (found is None or found.normalization is None):
        return "not possible: the artifact has no normalization metadata"
    if tensor.type in FLOAT_INPUTS and found is not None and found.normalization is not None \
            and found.normalization.per_channel:
        return ("not possible: the preprocessing is a per-channel mean/std kept outside the "
                "model (--keep-per-channel-normalization) and MediaPipe accepts one mean/std "
                "value; without that flag it is folded into the model")
    return None


def _images(context: StageContext) -> tuple[list[Any], str]:
    """The validation images as MediaPipe reads them: the dataset's files (MediaPipe decodes and
    resizes them), or the stored pixels at the model's size when the files are not here."""
    import mediapipe as mp

    files = [context.dataset_dir / name
             for name in read_json(context.read(data.DATASET_INFO))["validation"]["files"]]
    if all(path.is_file() for path in files):
        return [mp.Image.create_from_file(str(path)) for path in files], "image files"
    with np.load(context.read(data.VALIDATION), allow_pickle=False) as stored:
        pixels = next(iter(stored.values()))
    return ([mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
             for image in pixels], "stored pixels")


def _record(context: StageContext, top: list[Any], source: str,
            litert: dict[str, Any]) -> dict[str, Any]:
    keras = next(iter(reference.load_outputs(context.build_dir).values())).argmax(axis=1)
    predicted = np.array([category.index for category in top])
    labels = data.load_labels(context.build_dir)
    class_names = read_json(context.read(data.DATASET_INFO))["class_names"]
    agreement = float(np.mean(predicted == keras))
    accuracy = float(np.mean(predicted == labels)) if labels is not None else None
    names = [category.category_name for category in top]
    names_returned = all(names) and bool(class_names) and all(
        name == class_names[index] for name, index in zip(names, predicted, strict=True))
    litert_agreement = litert.get("top1_agreement")
    agrees = litert_agreement is None or abs(agreement - litert_agreement) <= LITERT_TOLERANCE
    summary = (f"top-1 agreement {agreement:.3f}"
               + (f", accuracy {100 * accuracy:.1f} %" if accuracy is not None else "")
               + (", class names returned" if names_returned else ", no class names")
               + ("" if agrees else f"; differs from LiteRT's {litert_agreement:.3f}"))
    return {"ran": True, "runtime": f"mediapipe {distributions.version('mediapipe')} ImageClassifier",
            "samples": len(top), "source": source, "top1_agreement": agreement,
            "accuracy": accuracy, "names_returned": names_returned,
            "litert_top1_agreement": litert_agreement, "agrees_with_litert": agrees,
            "summary": summary}


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
