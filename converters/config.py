"""Frozen configuration: str Enums and dataclasses validated at construction.

Values come from a flag, then invoke.yaml, then the defaults here; tasks.py does the merging
and hands plain values to :func:`build_config`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from converters.cpu import usable_cores
from converters.defaults import MAX_ARRAY_MB
from converters.errors import ConfigError, shown
from converters.inputs.custom_objects import CustomObjectsFile
from converters.inputs.tensor_info import IMAGE_CHANNELS


class Quantization(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT8_MIXED = "int8-mixed"  # int8 with the most sensitive ops kept float (accuracy-aware)


# The modes a build makes unless told otherwise (int8-mixed is asked for by name).
DEFAULT_QUANTIZATIONS = (Quantization.FP32, Quantization.FP16, Quantization.DYNAMIC,
                         Quantization.INT8)


class QuantEngine(str, Enum):
    """Who makes the quantized TFLite modes (see converters/targets/tflite/engine_choice.py)."""

    AUTO = "auto"
    TFLITE_CONVERTER = "tflite-converter"
    AI_EDGE_QUANTIZER = "ai-edge-quantizer"


class IODType(str, Enum):
    UINT8 = "uint8"
    INT8 = "int8"
    FLOAT32 = "float32"


class Runner(str, Enum):
    LOCAL = "local"
    DOCKER = "docker"
    AUTO = "auto"


class Executor(str, Enum):
    LOCAL = "local"  # jobs run as processes on this machine
    RAY = "ray"  # jobs run as tasks on a Ray cluster


class PreprocessingMode(str, Enum):
    AUTO = "auto"  # chosen per model: its input layers, then Keras accuracy on labelled images
    UNIT = "0..1"
    SIGNED = "-1..1"
    RAW = "0..255"
    MEAN_STD = "mean-std"


# Keras 2 and 3 write HDF5 as .h5 or .hdf5 (the same format); .keras is the zip format.
MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")
# A sample's size for --input-shape: 2^28 values is 1 GiB of float32 per sample.
MAX_SAMPLE_VALUES = 1 << 28
# tf2onnx 1.17 writes opsets up to 18; onnxruntime's Q/DQ per-channel needs 13 or newer.

E = TypeVar("E", bound=Enum)
S = TypeVar("S")  # a target's configuration section


def parse_enum_list(enum: type[E], value: str | Sequence[str], what: str) -> tuple[E, ...]:
    """Parse ``"a,b"`` (or a list) into enum members, in the order given, without repeats."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [item.strip() for item in items if item.strip()]
    if "all" in names:
        return tuple(enum)
    allowed = ", ".join(member.value for member in enum)
    parsed: list[E] = []
    for name in names:
        try:
            member = enum(name)
        except ValueError:
            raise ConfigError(f"unknown {what} '{name}': expected one of {allowed} (or 'all')") from None
        if member not in parsed:
            parsed.append(member)
    if not parsed:
        raise ConfigError(f"no {what} given: expected one or more of {allowed}")
    return tuple(parsed)


def parse_enum(enum: type[E], value: str, what: str) -> E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ConfigError(f"unknown {what} '{value}': expected one of {allowed}") from None


def parse_floats(value: str | Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(float(item) for item in items)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be comma-separated numbers, got "
                          f"'{shown(value, limit=60)}'") from None


def parse_input_shape(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"224,224,3"`` or ``"224x224x3"`` (without the batch dimension; any number of sizes
    for a non-image input, e.g. ``"16000,1"``)."""
    if value is None or value == "":
        return None
    items = value.replace("x", ",").split(",") if isinstance(value, str) else list(value)
    try:
        shape = tuple(int(item) for item in items)
    except ValueError:
        raise ConfigError(
            f"--input-shape must look like 224,224,3 (height, width, channels), got '{value}'"
        ) from None
    if not shape or min(shape) < 1:
        raise ConfigError(
            f"--input-shape must be positive sizes without the batch (height, width, channels "
            f"for an image), got '{value}'"
        )
    if math.prod(shape) > MAX_SAMPLE_VALUES:
        raise ConfigError(f"--input-shape '{shown(value)}' is over the {MAX_SAMPLE_VALUES} values "
                          "(1 GiB of float32) a sample may have: give the model's real input size")
    return shape


@dataclass(frozen=True)
class Preprocessing:
    """How pixel values 0..255 become model inputs."""

    mode: PreprocessingMode = PreprocessingMode.AUTO
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name, values in (("--mean", self.mean), ("--std", self.std)):
            if values is not None and not all(math.isfinite(value) for value in values):
                raise ConfigError(f"{name} must be finite numbers (no nan or inf), got "
                                  f"{','.join(map(str, values[:8]))}")
            if values is not None and len(values) not in IMAGE_CHANNELS:
                raise ConfigError(f"{name} must give one value per image channel (1, 3 or 4 "
                                  f"values), got {len(values)}")
        if self.mode is PreprocessingMode.MEAN_STD:
            if self.mean is None or self.std is None:
                raise ConfigError("preprocessing 'mean-std' needs --mean and --std (one value per channel)")
            if len(self.mean) != len(self.std):
                raise ConfigError(f"--mean has {len(self.mean)} values but --std has {len(self.std)}")
            if any(value == 0 for value in self.std):
                raise ConfigError("--std values must be non-zero")
        elif self.mode is PreprocessingMode.AUTO:
            if (self.mean is None) != (self.std is None):
                raise ConfigError("--mean and --std go together (with auto, mean-std is then one "
                                  "of the candidates)")
            if self.std is not None and any(value == 0 for value in self.std):
                raise ConfigError("--std values must be non-zero")
        elif self.mean is not None or self.std is not None:
            raise ConfigError(
                f"--mean/--std only apply to preprocessing 'mean-std' or 'auto', not "
                f"'{self.mode.value}'"
            )

    def check_channels(self, channels: int) -> None:
        """Refuse --mean/--std whose count is not the model's ``channels``."""
        if self.mean is not None and len(self.mean) != channels:
            raise ConfigError(f"--mean/--std give {len(self.mean)} values but the model has "
                              f"{channels} input channels: give one value per channel")

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode.value, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Preprocessing:
        mean = data.get("mean")
        std = data.get("std")
        return cls(
            mode=PreprocessingMode(str(data["mode"])),
            mean=tuple(float(v) for v in mean) if isinstance(mean, list | tuple) else None,
            std=tuple(float(v) for v in std) if isinstance(std, list | tuple) else None,
        )


@dataclass(frozen=True)
class DatasetConfig:
    path: Path
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    calibration_size: int = 100
    validation_size: int = 200
    seed: int = 0
    max_array_mb: int = MAX_ARRAY_MB  # what an array dataset's files may declare
    labels: tuple[str, ...] = ()  # --labels: class names (empty: the class folder names)

    def __post_init__(self) -> None:
        if self.calibration_size < 1:
            raise ConfigError(f"--calibration-size must be at least 1, got {self.calibration_size}")
        if self.validation_size < 1:
            raise ConfigError(f"--validation-size must be at least 1, got {self.validation_size}")


@dataclass(frozen=True)
class ConvertConfig:
    """Everything one ``invoke convert`` needs, validated."""

    models: tuple[Path, ...]
    dataset: DatasetConfig
    targets: tuple[str, ...] = ("tflite",)  # names in the target registry
    quantizations: tuple[Quantization, ...] = DEFAULT_QUANTIZATIONS
    quant_engine: QuantEngine = QuantEngine.AUTO
    io_dtype: IODType = IODType.UINT8
    allow_flex: bool = False
    allow_float_fallback: bool = False
    unsafe: bool = False
    custom_objects: tuple[CustomObjectsFile, ...] = ()  # the user's layer classes, read
    allow_class_mismatch: bool = False  # a labelled dataset whose class count differs from the model's
    input_shape: tuple[int, ...] | None = None
    out: Path = Path("build")
    runner: Runner = Runner.LOCAL
    volume: str | None = None  # docker runner: a named volume instead of a bind mount
    # Each target's own section (its package's settings), by target name: see section().
    sections: Mapping[str, Any] = field(default_factory=dict)
    threads: int = field(default_factory=usable_cores)
    latency_runs: int = 30
    max_accuracy_drop: float = 0.01
    # the bound on regression outputs beside class outputs (metrics.regression_error)
    max_relative_error: float = 0.05
    task: str = "auto"  # how outputs are validated: a task for all and/or NAME=TASK, comma list
    force: bool = False
    jobs: int = 1
    executor: Executor = Executor.LOCAL
    ray_address: str | None = None  # --executor ray: the cluster to join (else $RAY_ADDRESS)
    cache_dir: Path | None = None  # the shared stage cache (converters/pipeline/shared_cache.py)
    cache_sign_key: Path | None = None  # signs the entries this build stores
    cache_public_key: Path | None = None  # restore only entries signed by its private key
    # A per-channel --mean/--std stays outside the model (else it is folded into it)
    keep_per_channel_normalization: bool = False
    devices: tuple[str, ...] = ()  # SSH devices every artifact is also measured on
    # Interpreter threads on a device: --threads when given, else (None) each device's CPU count.
    device_threads: int | None = None
    device_timeout: int = 120  # seconds: to answer, and per command on a device
    device_cache: str = ".cache/tensor-edge-converter"  # on each device
    accept_new_host_key: bool = False
    recommend_on: str | None = None  # a device whose latency picks the fastest artifact

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no model given: pass --model PATH or put a .h5/.keras file in model/")
        stems = [model_stem(path) for path in self.models]
        repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
        if repeated:
            raise ConfigError(
                f"several models share the name {', '.join(repeated)}: their outputs would collide "
                f"in {self.out}/<name>/; rename one of them"
            )
        if self.volume and self.runner is Runner.LOCAL:
            raise ConfigError(f"--volume {self.volume} applies to the docker runner, but --runner is "
                              "local: drop --volume, or use --runner docker (or auto)")
        if self.ray_address and self.executor is not Executor.RAY:
            raise ConfigError(f"--ray-address {self.ray_address} applies to --executor ray: add "
                              "--executor ray, or drop --ray-address")
        for flag, key in (("--cache-sign-key", self.cache_sign_key),
                          ("--cache-public-key", self.cache_public_key)):
            if key is not None and self.cache_dir is None:
                raise ConfigError(f"{flag} {key} applies to a shared cache: add --cache-dir DIR "
                                  f"(or cache_dir in invoke.yaml), or drop {flag}")
        if self.recommend_on is not None and self.recommend_on not in self.devices:
            raise ConfigError(f"--recommend-on {self.recommend_on} names no device of this build "
                              f"(devices: {', '.join(self.devices) or 'none'}): add --device "
                              f"{self.recommend_on}, or drop --recommend-on")
        if not self.device_cache.strip() or ".." in Path(self.device_cache).parts:
            raise ConfigError(f"--device-cache '{self.device_cache}' must name a folder without "
                              "'..' (under the device's login folder, or absolute)")
        if self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.latency_runs < 1:
            raise ConfigError(f"--latency-runs must be at least 1, got {self.latency_runs}")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ConfigError(
                f"--max-accuracy-drop is a fraction between 0 and 1, got {self.max_accuracy_drop}"
            )
        from converters.validation.task_request import parse_task_request

        parse_task_request(self.task)  # refuses an unknown task
        if self.jobs < 1:
            raise ConfigError(f"-j/--jobs must be at least 1, got {self.jobs}")
        if self.input_shape is not None and len(self.input_shape) == 3:
            self.dataset.preprocessing.check_channels(self.input_shape[-1])

    def stage_threads(self) -> int:
        """Threads of each stage process's TensorFlow pools: --threads shared out among the
        --jobs processes that run at once, so that together they do not oversubscribe the
        cores (interpreters still time latency on --threads)."""
        return max(1, self.threads // self.jobs)

    def folded_normalization(self) -> dict[str, list[float]] | None:
        """The per-channel --mean/--std every stage folds into the model (its first input then
        takes pixels 0..255), or None: a fixed range, or one value for every channel, which
        artifact metadata can say as it is."""
        preprocessing = self.dataset.preprocessing
        if (preprocessing.mode is not PreprocessingMode.MEAN_STD or self.keep_per_channel_normalization
                or preprocessing.mean is None or preprocessing.std is None
                or len({*preprocessing.mean}) == len({*preprocessing.std}) == 1):
            return None
        return {"mean": list(preprocessing.mean), "std": list(preprocessing.std)}

    def data_preprocessing(self) -> Preprocessing:
        """What the data stage makes of the images: pixels 0..255 for a folded normalization."""
        if self.folded_normalization() is not None:
            return Preprocessing(PreprocessingMode.RAW)
        return self.dataset.preprocessing
    def section(self, name: str, kind: type[S]) -> S:
        """Target ``name``'s section of the configuration, as its package's ``kind`` (its
        defaults when the section was not given)."""
        value = self.sections.get(name)
        return value if isinstance(value, kind) else kind()


def model_stem(path: Path) -> str:
    """The name used for the build folder and artifact files: ``model/flowers.h5`` → ``flowers``.

    The path is made absolute and normalised first (``model/..`` names the folder it means, and
    symlinks keep their own name); a name that is empty, ``.`` or ``..`` is refused, so a build
    folder always lands inside ``--out``.
    """
    normal = Path(os.path.abspath(path))
    stem = normal.name if normal.is_dir() else normal.stem
    if stem in ("", ".", "..") or "/" in stem:
        raise ConfigError(f"model {path} gives no usable name for its build folder: pass a model "
                          "file or SavedModel folder with a name, e.g. model/flowers.h5")
    return stem
