"""Invoke tasks: thin wrappers around the converters API. Run ``invoke --list``.

Values come from a flag, then invoke.yaml (section ``convert``), then the built-in defaults.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoke import Context, Exit, task
from invoke.tasks import Task

from converters import console
from converters.errors import ConfigError, ConverterError, filesystem_error

ROOT = Path(__file__).resolve().parent


def cli_task(**options: Any) -> Callable[[Callable[..., None]], Task[Any]]:
    """Invoke's ``@task`` without automatic short flags: ``-h`` is help for every task, and no
    flag gets a one-letter form by accident (``-h`` was ``--threads``, ``--`` a flag)."""
    decorator: Callable[[Callable[..., None]], Task[Any]] = task(auto_shortflags=False, **options)
    return decorator


@contextmanager
def user_errors() -> Iterator[None]:
    """A ConverterError becomes a message and a non-zero exit, without a traceback."""
    try:
        yield
    except ConverterError as error:
        console.error(str(error))
        raise Exit(code=error.exit_code) from None
    except OSError as error:  # disk full, read-only folder: name the file, no traceback
        problem = filesystem_error(error)
        console.error(str(problem))
        raise Exit(code=problem.exit_code) from None
    except KeyboardInterrupt:
        console.error("interrupted")
        raise Exit(code=130) from None


def required(task_name: str, **flags: str) -> None:
    """Refuse an empty required flag. Required flags are not Invoke positionals, because a task
    with a missing positional rejects ``-h`` before it can show its help."""
    for name, value in flags.items():
        if not value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} is required: invoke {task_name} -h shows every flag")


def show_help(task_name: str) -> None:
    """``invoke --help TASK`` (for a task whose positional argument took ``-h``)."""
    subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), "--help",
                    task_name], check=False)


# Built-in defaults, used when neither a flag nor invoke.yaml gives a value (a null in
# invoke.yaml means "the built-in default" too).
DEFAULTS: dict[str, Any] = {
    "model_dir": "model", "dataset": "dataset", "target": "tflite",
    "quant": "fp32,fp16,dynamic,int8", "io_dtype": "uint8", "out": "build", "runner": "auto",
    "preprocessing": "auto", "calibration_size": 100, "validation_size": 200, "seed": 0,
    "latency_runs": 30, "max_accuracy_drop": 0.01, "jobs": 1, "compiler_timeout": 180,
    "num_segments": 1, "opset": 17, "batch": "1,8,32", "workspace_mb": 1024,
}


def setting(c: Context, flag: Any, name: str) -> Any:
    """The flag's value when given, else invoke.yaml's ``convert.<name>``, else the default.

    A boolean flag is "given" only when set: ``--allow-flex`` absent leaves invoke.yaml's value.
    """
    if flag not in (None, [], "", False):
        return flag
    configured = c.config.get("convert", {}).get(name)
    if configured is not None:
        return configured
    return DEFAULTS.get(name)


def default_models(model_dir: Path) -> list[Path]:
    """Every model file (.h5, .keras) and SavedModel folder in ``model_dir``."""
    from converters.config import MODEL_SUFFIXES

    if not model_dir.is_dir():
        raise ConfigError(f"model folder {model_dir} does not exist: pass --model PATH")
    found = sorted(p for p in model_dir.iterdir()
                   if (p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
                   or (p.is_dir() and (p / "saved_model.pb").exists()))
    if not found:
        raise ConfigError(
            f"no model in {model_dir}: put name.h5 (or .keras, or a SavedModel folder) there, "
            "pass --model PATH, or run invoke sample"
        )
    return found


SAMPLE_MODEL = ROOT / "model" / "sample.h5"
SAMPLE_DATASET = ROOT / "dataset"


def without_sample_model(models: list[Path], dataset: Path) -> list[Path]:
    """The bundled sample model goes with the bundled images only: a user who drops a model into
    model/ and points --dataset at their images does not get sample.h5 converted against them."""
    if dataset.resolve() == SAMPLE_DATASET:
        return models
    kept = [m for m in models if m.resolve() != SAMPLE_MODEL]
    if len(kept) < len(models):
        console.info(f"skipping the bundled sample {SAMPLE_MODEL.relative_to(ROOT)}: it goes with "
                     f"the bundled images, not {dataset} (pass --model to convert it anyway)")
    if not kept:
        raise ConfigError(f"no model to convert against {dataset}: put yours in model/ or pass "
                          "--model PATH")
    return kept


def check_not_on_sample_images(models: list[Path], dataset: Path) -> None:
    """Your model is never calibrated and validated on the bundled shape images by accident."""
    if dataset.resolve() != SAMPLE_DATASET:
        return
    others = [m for m in models if m.resolve() != SAMPLE_MODEL]
    if others:
        raise ConfigError(
            f"no --dataset given for {others[0]}: the default dataset/ holds the bundled sample's "
            "shape images, which only fit model/sample.h5. Pass --dataset DIR with your own images "
            "(one sub-folder per class, for accuracy), or --dataset dataset to use the sample "
            "images anyway")


def convert_config(c: Context, **flags: Any) -> Any:
    from converters.config import (
        ConvertConfig,
        DatasetConfig,
        IODType,
        Preprocessing,
        PreprocessingMode,
        Quantization,
        Runner,
        Target,
        parse_enum,
        parse_enum_list,
        parse_floats,
        parse_input_shape,
    )
    from converters.tensorrt_engine import BatchProfile

    def get(name: str) -> Any:
        return setting(c, flags.get(name), name)

    listed = flags.get("model") or get("models") or []
    if isinstance(listed, str):  # `models: a.h5` in invoke.yaml means one model, not 4 letters
        listed = [listed]
    if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
        raise ConfigError(f"models in invoke.yaml must be a list of paths, got {listed!r}")
    models = [Path(m) for m in listed]
    dataset = Path(get("dataset"))
    if not models:
        models = without_sample_model(default_models(Path(get("model_dir"))), dataset)
    if not flags.get("dataset"):
        check_not_on_sample_images(models, dataset)
    preprocessing = Preprocessing(
        parse_enum(PreprocessingMode, str(get("preprocessing")), "preprocessing"),
        parse_floats(get("mean"), "--mean"),
        parse_floats(get("std"), "--std"),
    )
    numbers = {name: whole_number(get(name), name) for name in
               ("calibration_size", "validation_size", "seed", "latency_runs", "jobs")}
    if numbers["seed"] < 0:
        raise ConfigError(f"--seed must be 0 or more, got {numbers['seed']}")
    # One rule for the flag and invoke.yaml: no value means every core; 0 is refused below.
    threads = os.cpu_count() or 1 if get("threads") is None else whole_number(get("threads"),
                                                                                "threads")
    max_drop = optional_number(get("max_accuracy_drop"), float, "--max-accuracy-drop")
    return ConvertConfig(
        models=tuple(models),
        dataset=DatasetConfig(dataset, preprocessing, numbers["calibration_size"],
                              numbers["validation_size"], numbers["seed"]),
        targets=parse_enum_list(Target, get("target"), "target"),
        quantizations=parse_enum_list(Quantization, get("quant"), "quantization mode"),
        io_dtype=parse_enum(IODType, str(get("io_dtype")), "--io-dtype"),
        allow_flex=bool(get("allow_flex")),
        allow_float_fallback=bool(get("allow_float_fallback")),
        unsafe=bool(get("unsafe")),
        allow_class_mismatch=bool(get("allow_class_mismatch")),
        input_shape=parse_input_shape(get("input_shape")),
        out=Path(get("out")),
        runner=parse_enum(Runner, str(get("runner")), "--runner"),
        volume=get("volume") or None,
        threads=threads,
        latency_runs=numbers["latency_runs"],
        max_accuracy_drop=max_drop,
        force=bool(flags.get("force")),
        jobs=numbers["jobs"],
        edgetpu=edgetpu_options(get),
        min_tpu_ops=optional_number(get("min_tpu_ops"), float, "--min-tpu-ops"),
        edgetpu_split=bool(get("edgetpu_split")),
        onnx_opset=whole_number(get("opset"), "opset"),
        batch=BatchProfile.parse(str(get("batch"))),
        workspace_mb=whole_number(get("workspace_mb"), "workspace_mb"),
    )


def whole_number(value: Any, name: str) -> int:
    """An integer setting from a flag (text) or invoke.yaml (a number), named when it is not."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool) or value is None or (isinstance(value, float)
                                                      and not value.is_integer()):
        raise ConfigError(f"{flag} (invoke.yaml: {name}) must be a whole number, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} (invoke.yaml: {name}) must be a whole number, got "
                          f"{value!r}") from None


def optional_number(value: Any, kind: type, flag: str) -> Any:
    from converters.errors import ConfigError

    if value in (None, ""):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} must be a number, got '{value}'") from None


def edgetpu_options(get: Any) -> Any:
    from converters.edgetpu_compiler import CompileOptions

    tensors = get("intermediate_tensors") or ""
    return CompileOptions(
        min_runtime_version=optional_number(get("min_runtime_version"), int, "--min-runtime-version"),
        num_segments=whole_number(get("num_segments"), "num_segments"),
        search_delegate=bool(get("search_delegate")),
        delegate_search_step=optional_number(get("delegate_search_step"), int,
                                             "--delegate-search-step"),
        timeout_sec=whole_number(get("compiler_timeout"), "compiler_timeout"),
        intermediate_tensors=tuple(t.strip() for t in str(tensors).split(",") if t.strip()),
    )


@cli_task(
    iterable=["model"],
    help={
        "model": "model file (.h5, .keras) or SavedModel folder; repeat for several "
                 "(default: every model in model/)",
        "dataset": "image folder, flat or one sub-folder per class (default: dataset/)",
        "target": "comma list of targets: tflite, edgetpu, onnx, tensorrt (default from "
                  "invoke.yaml)",
        "quant": "comma list of fp32,fp16,dynamic,int8 or all",
        "io_dtype": "int8 model input/output type: uint8 (default), int8 or float32",
        "out": "build folder (default: build)",
        "runner": "where stages run: local (this Python), docker (each stage in its toolchain "
                  "image) or auto (docker when an engine answers and the image is current)",
        "volume": "docker runner: share the build folder as this named volume (stored in --out) "
                  "instead of a bind mount",
        "preprocessing": "auto (default: from the model's input layer and, with labelled "
                         "images, Keras accuracy), 0..1, -1..1, 0..255 or mean-std",
        "mean": "per-channel means for mean-std, e.g. 123.7,116.3,103.5",
        "std": "per-channel standard deviations for mean-std",
        "calibration_size": "images used to calibrate int8 (default 100)",
        "validation_size": "held-out images used to validate (default 200)",
        "seed": "seed of the calibration/validation split",
        "threads": "interpreter threads for latency (default: all cores)",
        "latency_runs": "runs per latency median (default 30)",
        "max_accuracy_drop": "recommendation bound, a fraction (default 0.01)",
        "allow_flex": "let fp32/fp16/dynamic keep TensorFlow (Flex) ops",
        "allow_float_fallback": "let int8 keep ops that cannot be quantized in float",
        "unsafe": "allow unsafe deserialisation (Lambda layers) of a trusted .keras/.h5",
        "allow_class_mismatch": "go on when the dataset's class folders do not match the model's "
                                "output classes in number",
        "input_shape": "H,W,C for a model without a static input size",
        "force": "rebuild every stage even when it is up to date",
        "jobs": "independent jobs run in parallel (default 1)",
        "min_runtime_version": "edgetpu: oldest Edge TPU runtime the model must run on "
                               "(compiler -m; default: the compiler's, 14)",
        "num_segments": "edgetpu: split the model for pipelining across N Edge TPUs (compiler -n)",
        "search_delegate": "edgetpu: search for the largest graph prefix that compiles (-d)",
        "delegate_search_step": "edgetpu: op step of that search (-k)",
        "compiler_timeout": "edgetpu: compiler timeout in seconds (default 180)",
        "intermediate_tensors": "edgetpu: comma list of tensors to expose as outputs (-i)",
        "min_tpu_ops": "edgetpu: fail the build when a smaller fraction of ops maps to the TPU",
        "edgetpu_split": "edgetpu: also write the TPU-mappable head and the CPU tail as two "
                         ".tflite models (validated against the whole model)",
        "opset": "onnx: ONNX opset (13-18, default 17)",
        "batch": "tensorrt: optimization profile of the batch dimension min,opt,max (default 1,8,32)",
        "workspace_mb": "tensorrt: builder workspace limit in MiB (default 1024)",
    },
)
def convert(c: Context, model: list[str] | None = None, dataset: str = "", target: str = "",
            quant: str = "", io_dtype: str = "", out: str = "", runner: str = "",
            preprocessing: str = "", mean: str = "", std: str = "", calibration_size: str = "",
            validation_size: str = "", seed: str = "", threads: str = "", latency_runs: str = "",
            volume: str = "",
            max_accuracy_drop: str = "", allow_flex: bool = False,
            allow_float_fallback: bool = False, unsafe: bool = False,
            allow_class_mismatch: bool = False, input_shape: str = "",
            force: bool = False, jobs: str = "", min_runtime_version: str = "",
            num_segments: str = "", search_delegate: bool = False, delegate_search_step: str = "",
            compiler_timeout: str = "", intermediate_tensors: str = "", min_tpu_ops: str = "",
            edgetpu_split: bool = False, opset: str = "", batch: str = "", workspace_mb: str = "") -> None:
    """Convert Keras models to TFLite, Edge TPU, ONNX and TensorRT artifacts, validate, report.

    Outputs go to build/<model>/ (never next to your inputs): tflite/<model>_<mode>.tflite,
    report.json/.md/.html and manifest.json. Stages whose inputs did not change are skipped.
    """
    flags = {k: v for k, v in locals().items() if k != "c"}
    with user_errors():
        from converters.build import convert as run_build
        from converters.summary import print_summary

        config = convert_config(c, **flags)
        result = run_build(config, sys.argv)
        for plan in result.plans:
            print_summary(plan.build_dir)
        if result.problems:
            from converters.errors import BuildError

            raise BuildError("\n".join(result.problems))


@cli_task(help={
    "target": "comma list of images: tflite, edgetpu, tensorrt, or all (default: tflite)",
    "base": "pull (the Dockerfile's pinned Debian/NGC base from a registry) or bootstrap (a "
            "Debian base made with debootstrap from --mirror, for hosts without a registry)",
    "ca_bundle": "PEM bundle of a TLS-intercepting proxy, given to pip and apt as a build secret "
                 "(default: $PIP_CERT, $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE)",
    "mirror": "Debian mirror for --base bootstrap (default http://deb.debian.org/debian)",
    "load": "instead of building, docker load the images a bundle made with --with-images "
            "carries (verified first)",
    "public_key": "with --load: require the bundle's Ed25519 signature by this PEM public key",
})
def images(c: Context, target: str = "tflite", base: str = "pull", ca_bundle: str = "",
           mirror: str = "", load: str = "", public_key: str = "") -> None:
    """Build the toolchain images the docker runner uses (docker/*.Dockerfile)."""
    with user_errors():
        if public_key and not load:
            raise ConfigError("--public-key checks a bundle's signature: use it with --load BUNDLE")
        if load:
            from converters.images import load_images_from_bundle

            key = Path(public_key) if public_key else None
            for line in load_images_from_bundle(Path(load), key):
                console.info(line)
            return
        from converters.config import parse_enum
        from converters.images import DEFAULT_MIRROR, BaseSource, build_images, default_ca_bundle

        names = [name.strip() for name in target.split(",") if name.strip()]
        bundle = Path(ca_bundle) if ca_bundle else default_ca_bundle()
        build_images(names, parse_enum(BaseSource, base, "--base"), bundle, ROOT,
                     mirror or DEFAULT_MIRROR)


@cli_task(help={"out": "build folder (default: build)", "model": "model name (default: all)"})
def report(c: Context, out: str = "", model: str = "") -> None:
    """Print the summary table of built models and where their reports are."""
    with user_errors():
        from converters.summary import built_models, print_summary

        for build_dir in built_models(Path(setting(c, out, "out")), model or None):
            print_summary(build_dir)


@cli_task(help={"artifact": "a built .tflite file (an *_edgetpu.tflite runs on the Edge TPU)",
            "image": "an image file",
            "top_k": "how many classes to print (default 5)",
            "threads": "interpreter threads (default 1)",
            "device": "Edge TPU to use: usb, pci, usb:0, ... (default: the first found)"})
def infer(c: Context, artifact: str = "", image: str = "", top_k: int = 5, threads: int = 1,
          device: str = "") -> None:
    """Classify one image with a built artifact (minimal inference code)."""
    with user_errors():
        required("infer", artifact=artifact, image=image)
        from converters.infer import classify

        for prediction in classify(Path(artifact), Path(image), top_k=top_k, threads=threads,
                                   device=device or None):
            print(f"{prediction.label}\t{prediction.score:.4f}")


@cli_task(name="edgetpu-check", help={
    "model": "an int8 .tflite file",
    "json": "print the full result as JSON instead of tables",
    "edgetpu_split": "write X_head.tflite (Edge TPU) and X_tail.tflite (CPU) next to the model, "
                     "cut where the prediction leaves the Edge TPU, and X_split.json",
})
def edgetpu_check(c: Context, model: str = "", json: bool = False,
                  edgetpu_split: bool = False) -> None:
    """Predict which ops of an int8 .tflite map to the Edge TPU (no compiler needed).

    Exits non-zero when the model cannot compile at all (not quantized, batch > 1), or when
    --edgetpu-split cannot split it.
    """
    with user_errors():
        required("edgetpu-check", model=model)
        from converters.edgetpu_check import check_model
        from converters.summary import print_precheck

        result = check_model(Path(model))
        print_precheck(result, as_json=json)
        if result["blocking"]:
            from converters.errors import ConversionError

            raise ConversionError(f"{model} cannot be compiled for the Edge TPU: "
                                  + "; ".join(result["blocking"]))
        if edgetpu_split:
            split_and_print(Path(model))


def split_and_print(model: Path) -> None:
    """``edgetpu-check --edgetpu-split``: write and validate the head/tail pair."""
    from converters.edgetpu_split import split_lines, split_model
    from converters.errors import ConversionError

    record = split_model(model)
    for line in split_lines(record):
        console.info(line)
    if not record["split"] and record["needed"]:
        raise ConversionError(f"{model} was not split: {record['reason']}")


@cli_task(help={
    "model": "the model (file, folder or its name in the build folder; default: the only one)",
    "target": "tflite, edgetpu, onnx or tensorrt",
    "variant": "fp32, fp16, dynamic or int8 (default int8)",
    "platform": "linux/x86_64 or linux/aarch64 (default: this machine's)",
    "python": "the device's Python, e.g. 3.11 (default: this one's)",
    "with_images": "add the stage images (docker save) for an air-gapped build host",
    "out": "build folder (default: build)",
    "dist": "where the bundle goes (default: dist)",
    "sign_key": "Ed25519 private key (PEM): also write the detached signature <bundle>.sig",
})
def bundle(c: Context, target: str = "", model: str = "", variant: str = "int8", platform: str = "",
           python: str = "", with_images: bool = False, out: str = "", dist: str = "dist",
           sign_key: str = "") -> None:
    """Write an offline deployment bundle for one built artifact.

    dist/<model>-<target>-<variant>-<platform>.tar.gz (+ .sha256, + .sig when signed) holds the
    artifact, bundle.json, run.py, verify.py, requirements.txt and the runtime wheels, a README
    (and with --with-images the images).
    """
    with user_errors():
        required("bundle", target=target)
        import platform as host

        from converters.bundle import BundleRequest, build_bundle
        from converters.config import model_stem
        from converters.summary import built_models

        # --model takes the model's name in the build folder or the model file/folder itself.
        name = model_stem(Path(model)) if model else None
        candidates = built_models(Path(setting(c, out, "out")), name)
        if len(candidates) > 1:
            raise ConfigError(f"several models are built ({', '.join(p.name for p in candidates)}):"
                              " pass --model NAME")
        build_dir = candidates[0]
        default_platform = f"linux/{host.machine().lower().replace('arm64', 'aarch64')}"
        build_bundle(BundleRequest(
            build_dir=build_dir, target=target, variant=variant,
            platform=platform or default_platform,
            python=python or f"{sys.version_info.major}.{sys.version_info.minor}",
            with_images=with_images, dist=Path(dist), constraints=ROOT / "constraints.txt",
            sign_key=Path(sign_key) if sign_key else None))


@cli_task(name="verify-bundle", help={
    "path": "a bundle .tar.gz (the first argument, or --path)",
    "public_key": "Ed25519 public key (PEM): refuse a bundle without a valid <bundle>.sig by it",
})
def verify_bundle(c: Context, path: str, public_key: str = "") -> None:
    """Check every member of a bundle against its bundle.json.

    Hashes, sizes, missing and extra members, unsafe paths, links, devices and size limits,
    <bundle>.sha256 when present, and with --public-key its signature; exits non-zero naming
    what is wrong.
    """
    if path in ("-h", "--help"):  # the positional took the help flag: show the help anyway
        show_help("verify-bundle")
        return
    with user_errors():
        from converters.bundle_archive import verify_archive
        from converters.bundle_verify import describe

        verified = verify_archive(Path(path), Path(public_key) if public_key else None)
        console.info(describe(verified, Path(path)))


@cli_task(name="bundle-keygen", help={"out": "folder for bundle-signing.pem and bundle-signing.pub.pem"})
def bundle_keygen(c: Context, out: str = "") -> None:
    """Make an Ed25519 key pair for signing bundles (bundle --sign-key, verify-bundle --public-key)."""
    with user_errors():
        required("bundle-keygen", out=out)
        from converters.bundle_signing import generate_keys

        private, public = generate_keys(Path(out))
        console.info(f"private key: {private} (keep it secret; only you can read it)")
        console.info(f"public key:  {public} (give it to whoever checks bundles)")


@cli_task(help={"model_dir": "where to write sample.h5 (default: model)",
            "dataset": "where to write the images (default: dataset); a folder holding other "
                       "files is refused",
            "per_class": "held-out images per class (default 80)",
            "force": "write into a --dataset folder that holds other files too (only the "
                     "sample's own files are overwritten)"})
def sample(c: Context, model_dir: str = "model", dataset: str = "dataset",
           per_class: int = 80, force: bool = False) -> None:
    """Regenerate the bundled sample: procedural shape images and a trained model (deterministic)."""
    with user_errors():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from converters.sample import clear_for_dataset, train_model, write_dataset

        dataset_dir = Path(dataset)
        clear_for_dataset(dataset_dir, force)
        count = write_dataset(dataset_dir, per_class)
        console.info(f"wrote {count} images to {dataset_dir}/")
        train_model(Path(model_dir) / "sample.h5")


@cli_task(help={"out": "build folder (default: build)"})
def verify(c: Context, out: str = "") -> None:
    """Re-hash every artifact against build/<model>/manifest.json; exit non-zero on a mismatch."""
    with user_errors():
        from converters.housekeeping import verify_build

        verify_build(Path(setting(c, out, "out")))


@cli_task(help={"out": "build folder (default: build)", "dry_run": "only list what would go"})
def clean(c: Context, out: str = "", dry_run: bool = False) -> None:
    """Remove build outputs."""
    with user_errors():
        from converters.housekeeping import clean_build

        clean_build(Path(setting(c, out, "out")), dry_run)


# The fast subset: tests marked quick (they convert the sample end to end, check the report in a
# browser and the command line), without the docker, slow and gpu ones.
QUICK_TESTS = "-m 'quick and not docker and not slow and not gpu'"


@cli_task(help={"pytest_args": "extra arguments for pytest, e.g. \"-m 'not slow'\"",
                "quick": "only the fast subset (tests marked quick, about 2 minutes); the whole "
                         "suite takes about 17 minutes on a busy 2-core machine"})
def test(c: Context, pytest_args: str = "", quick: bool = False) -> None:
    """Run the test suite (pytest)."""
    selection = QUICK_TESTS if quick else ""
    c.run(f"{sys.executable} -m pytest {selection} {pytest_args}", pty=False)
