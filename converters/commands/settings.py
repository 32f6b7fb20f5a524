"""One table of ``invoke convert`` settings: name, type, default, help, choices, targets. The
core's rows are here; each target contributes its own rows (and its section of the
configuration) from its package, collected through the registry; what a row is and how a value
is parsed is converters/setting_kinds.py.

Everything else is derived from it: the task's flags and their help (tasks.py), the documented
defaults in invoke.yaml (:func:`render_yaml`) and the reference page docs/reference/settings.md
(:func:`render_markdown`; tests keep both files equal to it), and the
validated :class:`~converters.config.ConvertConfig` (:func:`convert_config`). A value comes
from the flag, else from invoke.yaml (section ``convert``), else from the default here, in one
place (:func:`resolve`); a ``null`` in invoke.yaml means the default.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters import targets
from converters.cpu import usable_cores
from converters.defaults import MAX_ARRAY_MB, MAX_RELATIVE_ERROR
from converters.errors import ConfigError, shown
from converters.setting_kinds import FRACTION, JOBS, PATHS, SWITCH, TEXT, WHOLE, Setting, parse

if TYPE_CHECKING:
    from converters.config import ConvertConfig

CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("models", PATHS, (), "models to convert (empty: every model in model_dir)", flag=False),
    Setting("model_dir", TEXT, "model", "folder whose models convert by default", flag=False),
    Setting("model", PATHS, (), "model file (.h5, .keras) or SavedModel folder; repeat for "
            "several (default: every model in model/)"),
    Setting("dataset", TEXT, "dataset", "image folder (flat or one sub-folder per class), a .npz "
            "file with one array per input name (and optional labels), or a folder of .npy/.npz "
            "samples"),
    Setting("target", TEXT, "tflite", "comma list of targets, or all"),  # choices: the registry's
    Setting("quant", TEXT, "fp32,fp16,dynamic,int8", "comma list of quantization modes, or all; "
            "int8-mixed keeps the ops int8 hurts most in float until the accuracy drop is within "
            "--max-accuracy-drop", choices=("fp32", "fp16", "dynamic", "int8", "int8-mixed")),
    Setting("quant_engine", TEXT, "auto", "who makes fp16/dynamic/int8 TFLite: auto "
            "(ai-edge-quantizer derives fp16 and dynamic from the fp32 model; the TF converter "
            "makes int8 and, with --allow-flex, every mode), tflite-converter or "
            "ai-edge-quantizer (int8 too, with float32 or int8 I/O)",
            choices=("auto", "tflite-converter", "ai-edge-quantizer")),
    Setting("io_dtype", TEXT, "uint8", "int8 model input/output type (uint8 is what Coral "
            "expects)", choices=("uint8", "int8", "float32")),
    Setting("out", TEXT, "build", "build folder"),
    Setting("runner", TEXT, "auto", "where stages run: local (this Python), docker (each stage in "
            "its toolchain image) or auto (docker when an engine answers and the image is current)",
            choices=("auto", "docker", "local")),
    Setting("volume", TEXT, None, "docker runner: share the build folder as this named volume "
            "(stored in --out) instead of a bind mount"),
    Setting("preprocessing", TEXT, "auto", "pixel scaling: auto (the model's input layer and, "
            "with labelled images, Keras accuracy decide), 0..1, -1..1, 0..255 or mean-std",
            choices=("auto", "0..1", "-1..1", "0..255", "mean-std")),
    Setting("mean", TEXT, None, "per-channel means for mean-std, e.g. 123.7,116.3,103.5"),
    Setting("std", TEXT, None, "per-channel standard deviations for mean-std"),
    Setting("keep_per_channel_normalization", SWITCH, False, "keep a per-channel --mean/--std "
            "outside the model (its artifacts take normalized inputs, which MediaPipe and TFLite "
            "metadata readers cannot give them) instead of folding it into the model's first "
            "operations (its artifacts then take pixels 0..255)"),
    Setting("labels", TEXT, None, "class names, one per line in the model's output order, for "
            "every artifact's metadata, the report and infer (default: the class folder names)"),
    Setting("calibration_size", WHOLE, 100, "images used to calibrate int8", minimum=1,
            maximum=100_000),
    Setting("validation_size", WHOLE, 200, "held-out images used to validate", minimum=1,
            maximum=100_000),
    Setting("seed", WHOLE, 0, "seed of the calibration/validation split", minimum=0,
            maximum=2**32 - 1),
    Setting("max_array_mb", WHOLE, MAX_ARRAY_MB, "array datasets and infer --arrays: "
            "the most MiB a .npy/.npz file's arrays may declare (checked on their headers, "
            "before they are read)", minimum=1, maximum=1 << 20),
    Setting("threads", WHOLE, None, "interpreter threads for latency (default: every core this "
            "process may use, on this host and on each device); -j N stage processes share them "
            "out for TensorFlow's own work",
            minimum=1, maximum=1024),
    Setting("latency_runs", WHOLE, 30, "timed runs per latency figure", minimum=1,
            maximum=10_000),
    Setting("max_accuracy_drop", FRACTION, 0.01, "recommendation bound, a fraction", minimum=0,
            maximum=1),
    Setting("max_relative_error", FRACTION, MAX_RELATIVE_ERROR, "recommendation bound "
            "on the relative error of regression outputs beside class outputs (a detector's "
            "boxes beside its scores), a fraction", minimum=0, maximum=1),
    Setting("task", TEXT, "auto", "how outputs are validated: auto (each output's activation, "
            "saved loss, then shape), one task for every output, and/or NAME=TASK for one "
            "output; repeat or comma-separate", choices=("auto", "classification", "detection",
                                                         "segmentation", "regression",
                                                         "embedding"), repeatable=True),
    Setting("allow_flex", SWITCH, False, "let fp32/fp16/dynamic keep TensorFlow (Flex) ops"),
    Setting("allow_float_fallback", SWITCH, False, "let int8 keep ops that cannot be quantized "
            "in float"),
    Setting("unsafe", SWITCH, False, "trust the model: allow Lambda layers in a .keras/.h5 and "
            "file, network or Python ops in a SavedModel's graphs"),
    Setting("custom_objects", PATHS, (), "Python file defining the model's own layer classes "
            "(registered with keras.saving.register_keras_serializable, or in a custom_objects "
            "dict), imported before the model loads; repeat for several. It runs your code"),
    Setting("allow_class_mismatch", SWITCH, False, "go on when the dataset's class folders do not "
            "match the model's output classes in number"),
    Setting("input_shape", TEXT, None, "H,W,C (or any per-sample shape) for a one-input model "
            "without a static input size"),
    Setting("force", SWITCH, False, "rebuild every stage even when it is up to date"),
    Setting("jobs", JOBS, "auto", "stage processes run in parallel; auto: 1 on 2 cores or "
            "fewer, else one per 2 cores and per 2 GiB of available memory"),
    Setting("executor", TEXT, "local", "where jobs run: local (processes on this machine) or ray "
            "(tasks on a Ray cluster; pip install '.[ray]')", choices=("local", "ray")),
    Setting("ray_address", TEXT, None, "--executor ray: the cluster to join (default $RAY_ADDRESS, "
            "else a local Ray started and stopped for the build)"),
    Setting("device", PATHS, (), "measure every TFLite and ONNX artifact on this device over SSH "
            "as well: a Host of ~/.ssh/config or [user@]host[:port]; repeat for several"),
    Setting("devices", PATHS, (), "devices to measure every artifact on (as --device)", flag=False),
    Setting("device_timeout", WHOLE, 120, "seconds a device may take to answer, and to finish "
            "each command run there", minimum=1, maximum=86_400),
    Setting("device_cache", TEXT, ".cache/tensor-edge-converter", "folder on each device (under "
            "its login folder unless absolute) that holds the bundles being run and the runtime "
            "environments kept between runs"),
    Setting("accept_new_host_key", SWITCH, False, "trust a device whose host key known_hosts "
            "does not hold yet, and add it there (a changed key is always refused)"),
    Setting("recommend_on", TEXT, None, "recommend the fastest artifact by its latency on this "
            "device (one of --device) instead of this host's"),
    Setting("cache_dir", TEXT, None, "shared stage cache folder: a stage whose key it holds is "
            "restored instead of run, and built stages are stored in it (invoke cache-prune)"),
    Setting("cache_sign_key", TEXT, None, "Ed25519 private key (PEM, as invoke bundle-keygen "
            "makes) that signs every entry this build stores in --cache-dir: for the writers of "
            "a shared cache, such as CI"),
    Setting("cache_public_key", TEXT, None, "Ed25519 public key (PEM): restore from --cache-dir "
            "only entries signed by its private key (any other is skipped with a warning and the "
            "stage runs here)"),
)
# The one table: the core's rows, then each target's own (its package's settings module).
def table() -> tuple[Setting, ...]:
    """The core's rows and every registered target's (a target registered later adds its rows
    from then on); ``--target`` lists the registry's names."""
    names = (*targets.all_targets(), "all")
    return tuple(replace(row, choices=names) if row.name == "target" else row
                 for row in CORE_SETTINGS + targets.settings())


def by_name() -> dict[str, Setting]:
    return {setting.name: setting for setting in table()}


def flag_rows() -> tuple[Setting, ...]:
    """The rows ``invoke convert`` has a flag for."""
    return tuple(setting for setting in table() if setting.flag)


def resolve(name: str, flag: Any, configured: Mapping[str, Any]) -> Any:
    """The value of setting ``name``: the flag when given (None: not given; a switch only when
    set), else invoke.yaml's (``configured``: its ``convert`` section, whose keys are checked),
    else the default, parsed and checked against the table. An empty value is refused: it
    would silently mean the default."""
    setting = by_name()[name]
    check_keys(configured)
    refuse_empty(setting.flag_name, flag)
    value = flag if flag not in (None, [], (), False) else configured.get(name)
    if value == "" and setting.default not in ("", None):
        raise ConfigError(f"invoke.yaml's {name} is empty: give a value, or null for the "
                          f"default ({_yaml_value(setting.default)})")
    if value is None:
        value = setting.default
    return parse(setting, value)


def refuse_empty(flag_name: str, value: Any) -> None:
    """Refuse a flag given as an empty string (``--out ""``): it would silently mean the
    default, or invoke.yaml's value."""
    if value == "":
        raise ConfigError(f"{flag_name} is empty: give a value, or leave the flag out for the "
                          "default")


def check_keys(configured: Mapping[str, Any]) -> None:
    """invoke.yaml's ``convert`` section holds only the table's settings: a misspelled key
    (``calibraton_size``) would silently leave the default in force."""
    if not isinstance(configured, Mapping):
        raise ConfigError(f"invoke.yaml's convert section must be a mapping of settings, got "
                          f"{shown(configured, quoted=True)}")
    known = by_name()
    unknown = sorted(str(key) for key in configured if key not in known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"invoke.yaml's convert section has an unknown key "
                          f"{shown(unknown[0], quoted=True)}{hint}"
                          + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "")
                          + ": its keys are the settings of converters/commands/settings.py, as the "
                          "project's invoke.yaml lists them")


def render_yaml() -> str:
    """invoke.yaml's ``convert`` section as the table documents it (defaults and comments)."""
    lines = ["# Project defaults for `invoke convert` and friends, one line per setting of",
             "# converters/commands/settings.py (a test keeps them equal). Flags override every value;",
             "# a value left null means the built-in default.", "convert:"]
    for setting in table():
        if setting.name in ("model", "force", "device"):
            continue  # per-command choices, not project defaults
        # A comment needs a space before its # (a longer line pushes it right)
        lines.append(f"  {setting.name}: {_yaml_value(setting.default)} ".ljust(34)
                     + f"# {setting.describe(with_default=False)}")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """docs/reference/settings.md: every setting of the table with its flag, invoke.yaml key,
    default and help (a test keeps the page equal to it)."""
    lines = ["# Settings of `invoke convert`", "",
             "Generated from the settings table (`converters/commands/settings.py` and each target's",
             "rows); regenerate with `python -c 'from converters.commands.settings import",
             "render_markdown; print(render_markdown(), end=\"\")' > docs/reference/settings.md`.",
             "A value comes from the flag, else from `invoke.yaml` (section `convert`), else from the",
             "default below; `null` in invoke.yaml means the default.", "",
             "| flag | invoke.yaml key | default | applies to | what it sets |", "|---|---|---|---|---|"]
    for setting in table():
        flag = f"`{setting.flag_name}`" if setting.flag else "(invoke.yaml only)"
        scope = ", ".join(setting.targets) if setting.targets else "every target"
        text = setting.help + (f" (choices: {', '.join(setting.choices)})" if setting.choices else "")
        lines.append(f"| {flag} | `{setting.name}` | `{_yaml_value(setting.default)}` | {scope} | "
                     f"{text.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def convert_config(flags: Mapping[str, Any], configured: Mapping[str, Any]) -> ConvertConfig:
    """The validated configuration of one ``invoke convert`` from its flags and invoke.yaml's
    ``convert`` section (precedence: flag, invoke.yaml, default)."""
    from converters.config import (
        ConvertConfig,
        DatasetConfig,
        Executor,
        IODType,
        Preprocessing,
        PreprocessingMode,
        QuantEngine,
        Quantization,
        Runner,
        parse_enum,
        parse_enum_list,
        parse_floats,
        parse_input_shape,
    )
    from converters.inputs import custom_objects
    from converters.inputs.labels import read_labels
    from converters.inputs.sample import default_models, paired_with_sample

    def get(name: str) -> Any:
        return resolve(name, flags.get(name), configured)

    def optional_path(name: str) -> Path | None:
        value = get(name)
        return Path(value) if value else None

    dataset = Path(get("dataset"))
    labels_file = optional_path("labels")
    given = [Path(m) for m in get("model") or get("models")]
    models = paired_with_sample(given or default_models(Path(get("model_dir"))), dataset,
                                listed=bool(given), dataset_given=bool(flags.get("dataset")))
    preprocessing = Preprocessing(parse_enum(PreprocessingMode, get("preprocessing"), "preprocessing"),
                                  parse_floats(get("mean"), "--mean"), parse_floats(get("std"), "--std"))
    threads = get("threads")
    config = ConvertConfig(
        models=tuple(models),
        dataset=DatasetConfig(dataset, preprocessing, get("calibration_size"),
                              get("validation_size"), get("seed"), get("max_array_mb"),
                              read_labels(labels_file) if labels_file else ()),
        targets=targets.parse_targets(get("target")),
        quantizations=parse_enum_list(Quantization, get("quant"), "quantization mode"),
        quant_engine=parse_enum(QuantEngine, get("quant_engine"), "--quant-engine"),
        io_dtype=parse_enum(IODType, get("io_dtype"), "--io-dtype"),
        allow_flex=get("allow_flex"),
        allow_float_fallback=get("allow_float_fallback"),
        unsafe=get("unsafe"),
        custom_objects=custom_objects.read(get("custom_objects")),
        allow_class_mismatch=get("allow_class_mismatch"),
        input_shape=parse_input_shape(get("input_shape")),
        out=Path(get("out")),
        runner=parse_enum(Runner, get("runner"), "--runner"),
        volume=get("volume") or None,
        threads=usable_cores() if threads is None else threads,  # none: every usable core
        latency_runs=get("latency_runs"),
        max_accuracy_drop=get("max_accuracy_drop"),
        max_relative_error=get("max_relative_error"),
        task=get("task"),
        force=get("force"),
        jobs=get("jobs"),
        executor=parse_enum(Executor, get("executor"), "--executor"),
        ray_address=get("ray_address") or None,
        cache_dir=optional_path("cache_dir"),
        cache_sign_key=optional_path("cache_sign_key"),
        cache_public_key=optional_path("cache_public_key"),
        keep_per_channel_normalization=get("keep_per_channel_normalization"),
        devices=tuple(dict.fromkeys(get("device") or get("devices"))),
        device_threads=threads,
        device_timeout=get("device_timeout"),
        device_cache=get("device_cache"),
        accept_new_host_key=get("accept_new_host_key"),
        recommend_on=get("recommend_on") or None,
        sections=targets.config_sections(get),
    )
    targets.check_config(config)
    return config
