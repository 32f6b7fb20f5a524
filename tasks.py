"""Invoke tasks: thin wrappers around the converters API. Run ``invoke --list``.

Values come from a flag, then invoke.yaml (section ``convert``), then the built-in defaults.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any

from invoke import Collection, Context
from invoke.tasks import Task

from converters import console
from converters.commands.cli import ROOT, cli_task, not_empty, required, show_help, user_errors
from converters.errors import ConfigError
from converters.runners.images import all_images
from converters.targets import CORE_IMAGE, all_targets


def target_tasks() -> list[Task[Any]]:
    """The Invoke tasks the targets' packages define (``Target.tasks``: a module's tasks)."""
    import importlib

    from converters.targets import all_targets

    found: list[Task[Any]] = []
    for target in all_targets().values():
        if target.tasks is not None:
            module = importlib.import_module(target.tasks)
            found += [value for value in vars(module).values() if isinstance(value, Task)]
    return found


def project_setting(c: Context, flag: Any, name: str) -> Any:
    """A setting of converters/commands/settings.py's table: the flag, else invoke.yaml, else its default."""
    from converters.commands.settings import resolve

    return resolve(name, flag, c.config.get("convert", {}))


def convert_flags() -> inspect.Signature:
    """``convert``'s parameters, one per flag of the settings table (flags with values are
    parsed by the table, so their default is None: "not given", and an empty value is
    refused)."""
    from converters.commands.settings import flag_rows
    from converters.setting_kinds import SWITCH

    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for setting in flag_rows():
        default: Any = False if setting.kind == SWITCH else None
        parameters.append(inspect.Parameter(setting.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            default=default))
    return inspect.Signature(parameters)


def convert_body(c: Context, **flags: Any) -> None:
    """Convert Keras models to TFLite, Edge TPU, ONNX and TensorRT artifacts, validate, report.

    Outputs go to build/<model>/ (never next to your inputs): one folder per target,
    report.json/.md/.html and manifest.json. Stages whose inputs did not change are skipped.
    Every flag, its default and invoke.yaml key come from converters/commands/settings.py.
    """
    with user_errors():
        from converters.commands.settings import convert_config
        from converters.errors import BuildError
        from converters.pipeline.build import convert as run_build
        from converters.reporting.summary import print_summary

        config = convert_config(flags, c.config.get("convert", {}))
        result = run_build(config, sys.argv)
        for plan in result.plans:
            print_summary(plan.build_dir)
        if result.problems:
            raise BuildError("\n".join(result.problems))


def _convert_task() -> Task[Any]:
    from converters.commands.settings import flag_rows
    from converters.setting_kinds import PATHS

    convert_body.__signature__ = convert_flags()  # type: ignore[attr-defined]
    return cli_task(name="convert", iterable=[setting.name for setting in flag_rows()
                                              if setting.kind == PATHS or setting.repeatable],
                    help={setting.name: setting.describe() for setting in flag_rows()})(convert_body)


convert = _convert_task()


@cli_task(help={
    "target": f"comma list of images: {', '.join(all_images())}, or all (default: {CORE_IMAGE})",
    "base": "pull (the Dockerfile's pinned Debian/NGC base from a registry) or bootstrap (a "
            "Debian base made with debootstrap from --mirror, for hosts without a registry)",
    "ca_bundle": "PEM bundle of a TLS-intercepting proxy, given to pip and apt as a build secret "
                 "(default: $PIP_CERT, $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE)",
    "mirror": "Debian mirror for --base bootstrap (default http://deb.debian.org/debian)",
    "load": "instead of building, docker load the images a bundle made with --with-images "
            "carries (verified first)",
    "public_key": "with --load: require the bundle's Ed25519 signature by this PEM public key",
})
def images(c: Context, target: str = CORE_IMAGE, base: str = "pull", ca_bundle: str = "",
           mirror: str = "", load: str = "", public_key: str = "") -> None:
    """Build the toolchain images the docker runner uses (docker/*.Dockerfile)."""
    with user_errors():
        not_empty(target=target, base=base)
        if public_key and not load:
            raise ConfigError("--public-key checks a bundle's signature: use it with --load BUNDLE")
        if load:
            from converters.runners.images import load_images_from_bundle

            key = Path(public_key) if public_key else None
            for line in load_images_from_bundle(Path(load), key):
                console.info(line)
            return
        from converters.config import parse_enum
        from converters.runners.images import DEFAULT_MIRROR, BaseSource, build_images, default_ca_bundle

        names = [name.strip() for name in target.split(",") if name.strip()]
        bundle = Path(ca_bundle) if ca_bundle else default_ca_bundle()
        build_images(names, parse_enum(BaseSource, base, "--base"), bundle, ROOT,
                     mirror or DEFAULT_MIRROR)


@cli_task(help={"out": "build folder (default: build)", "model": "model name (default: all)"})
def report(c: Context, out: str | None = None, model: str = "") -> None:
    """Print the summary table of built models and where their reports are."""
    with user_errors():
        from converters.reporting.summary import built_models, print_summary

        for build_dir in built_models(Path(project_setting(c, out, "out")), model or None):
            print_summary(build_dir)


@cli_task(help={"artifact": "a built artifact: a file ending in "
                        + ", ".join(sorted({s for t in all_targets().values() if t.runtime
                                            for s in t.artifact_suffixes})),
            "image": "an image file (a model with one image input)",
            "arrays": "a .npz file (one array per input name: one sample, or samples on the first "
                      "axis) or a .npy file (a one-input model), used as given",
            "top_k": "how many classes to print (default 5)",
            "threads": "interpreter threads (default 1)",
            "device": "Edge TPU to use: usb, pci, usb:0, ... (default: the first found)",
            "max_array_mb": "the most MiB --arrays may declare (default: invoke.yaml's "
                            "max_array_mb, 2048)"})
def infer(c: Context, artifact: str = "", image: str = "", arrays: str = "", top_k: int = 5,
          threads: int = 1, device: str = "", max_array_mb: str | None = None) -> None:
    """Run one image, or arrays, through a built artifact: top classes, or each output's summary.

    Minimal inference code. A classifier prints its top classes; a model with several outputs
    prints one summary line per output and the top classes of each output of class scores;
    several samples (--arrays) print a "sample N:" block each."""
    with user_errors():
        required("infer", artifact=artifact)
        if bool(image) == bool(arrays):
            raise ConfigError("give one of --image IMAGE or --arrays FILE.npz|FILE.npy: "
                              "invoke infer -h shows every flag")
        from converters.commands.infer import infer_samples, lines
        from converters.inputs.arrays import ARRAY_SUFFIXES

        if arrays and Path(arrays).suffix.lower() not in ARRAY_SUFFIXES:
            raise ConfigError(f"--arrays takes a .npz or .npy file, got {arrays}")
        from converters.commands.settings import by_name
        from converters.setting_kinds import parse

        samples = infer_samples(Path(artifact), Path(image or arrays), top_k=top_k,
                                threads=parse(by_name()["threads"], threads), device=device or None,
                                max_array_mb=project_setting(c, max_array_mb, "max_array_mb"))
        print("\n".join(lines(samples)))


@cli_task(help={
    "model": "the model (file, folder or its name in the build folder; default: the only one)",
    "target": ", ".join(name for name, t in all_targets().items() if t.bundle is not None),
    "variant": "fp32, fp16, dynamic or int8 (default int8)",
    "platform": "linux/x86_64 or linux/aarch64 (default: this machine's)",
    "python": "the device's Python, e.g. 3.11 (default: this one's)",
    "with_images": "add the stage images (docker save) for an air-gapped build host",
    "out": "build folder (default: build)",
    "dist": "where the bundle goes (default: dist)",
    "sign_key": "Ed25519 private key (PEM): also write the detached signature <bundle>.sig",
})
def bundle(c: Context, target: str = "", model: str = "", variant: str = "int8", platform: str = "",
           python: str = "", with_images: bool = False, out: str | None = None,
           dist: str = "dist", sign_key: str = "") -> None:
    """Write an offline deployment bundle for one built artifact.

    dist/<model>-<target>-<variant>-<platform>.tar.gz (+ .sha256, + .sig when signed) holds the
    artifact, bundle.json, run.py, verify.py, requirements.txt and the runtime wheels, a README
    (and with --with-images the images).
    """
    with user_errors():
        required("bundle", target=target)
        not_empty(variant=variant, dist=dist)
        import platform as host

        from converters.bundles.bundle import BundleRequest, build_bundle
        from converters.config import model_stem
        from converters.reporting.summary import built_models

        # --model takes the model's name in the build folder or the model file/folder itself.
        name = model_stem(Path(model)) if model else None
        candidates = built_models(Path(project_setting(c, out, "out")), name)
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
        from converters.bundles.archive import verify_archive
        from converters.bundles.verify import describe

        verified = verify_archive(Path(path), Path(public_key) if public_key else None)
        console.info(describe(verified, Path(path)))


@cli_task(name="bundle-keygen", help={"out": "folder for bundle-signing.pem and bundle-signing.pub.pem"})
def bundle_keygen(c: Context, out: str = "") -> None:
    """Make an Ed25519 key pair for signing bundles (bundle --sign-key, verify-bundle --public-key)."""
    with user_errors():
        required("bundle-keygen", out=out)
        from converters.bundles.signing import generate_keys

        private, public = generate_keys(Path(out))
        console.info(f"private key: {private} (keep it secret; only you can read it)")
        console.info(f"public key:  {public} (give it to whoever checks bundles)")


@cli_task(help={"model_dir": "where to write sample.h5 (default: model); an existing sample.h5 is "
                         "refused, except this checkout's own model/sample.h5",
            "dataset": "where to write the images (default: dataset); a folder holding other "
                       "files is refused",
            "per_class": "held-out images per class (default 80, at most 10000)",
            "force": "overwrite an existing --model-dir/sample.h5, and write into a --dataset "
                     "folder that holds other files too (only the sample's own files are "
                     "overwritten)"})
def sample(c: Context, model_dir: str = "model", dataset: str = "dataset",
           per_class: int = 80, force: bool = False) -> None:
    """Regenerate the bundled sample: procedural shape images and a trained model (deterministic)."""
    with user_errors():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from converters.inputs.sample import check_request, clear_for_dataset, train_model, write_dataset

        not_empty(model_dir=model_dir, dataset=dataset)
        model = Path(model_dir) / "sample.h5"
        check_request(model, per_class, force)
        dataset_dir = Path(dataset)
        clear_for_dataset(dataset_dir, force)
        count = write_dataset(dataset_dir, per_class)
        console.info(f"wrote {count} images to {dataset_dir}/")
        train_model(model)


@cli_task(help={"out": "build folder (default: build)"})
def verify(c: Context, out: str | None = None) -> None:
    """Re-hash every artifact against build/<model>/manifest.json; exit non-zero on a mismatch."""
    with user_errors():
        from converters.commands.housekeeping import verify_build

        verify_build(Path(project_setting(c, out, "out")))


@cli_task(help={"out": "build folder (default: build)", "dry_run": "only list what would go"})
def clean(c: Context, out: str | None = None, dry_run: bool = False) -> None:
    """Remove build outputs."""
    with user_errors():
        from converters.commands.housekeeping import clean_build

        clean_build(Path(project_setting(c, out, "out")), dry_run)


@cli_task(help={"max_size": "keep the cache at most this big, e.g. 500M or 2G (K, M, G, T: "
                            "powers of 1024)",
                "cache_dir": "the shared stage cache (default: invoke.yaml's cache_dir)"})
def cache_prune(c: Context, max_size: str = "", cache_dir: str | None = None) -> None:
    """Shrink the shared stage cache (--cache-dir) to --max-size, least recently used first."""
    with user_errors():
        from converters.pipeline.shared_cache import prune_cache

        required("cache-prune", max_size=max_size)
        console.info(prune_cache(project_setting(c, cache_dir, "cache_dir"), max_size))


@cli_task(name="device-check", help={
    "name": "the device: a Host of ~/.ssh/config or [user@]host[:port] (the first argument)",
    "device_timeout": "seconds it may take to answer (default: invoke.yaml's device_timeout, 120)",
    "accept_new_host_key": "trust its host key when known_hosts does not hold it yet, and add it",
    "device_cache": "its cache folder, whose runtime environments are counted (default: "
                    "invoke.yaml's device_cache)",
})
def device_check(c: Context, name: str, device_timeout: str | None = None,
                 accept_new_host_key: bool = False, device_cache: str | None = None) -> None:
    """Probe a device over SSH and print what it offers; nothing is built or copied.

    Its host key fingerprint, machine and bundle platform, system and glibc, python3, the
    runtimes installed system-wide and cached by earlier runs, Edge TPU, NVIDIA GPU, free disk.
    """
    if name in ("-h", "--help"):  # the positional took the help flag: show the help anyway
        show_help("device-check")
        return
    with user_errors():
        from converters.devices import require_paramiko

        require_paramiko()
        from converters.devices.connection import connect
        from converters.devices.probe import probe

        timeout = project_setting(c, device_timeout, "device_timeout")
        with connect(name, timeout, accept_new_host_key) as connection:
            facts = probe(connection, project_setting(c, device_cache, "device_cache"))
        for line in facts.lines():
            console.info(line)


# The fast subset: tests marked quick (they convert the sample end to end, check the report in a
# browser and the command line), without the docker, slow and gpu ones.
QUICK_TESTS = "-m 'quick and not docker and not slow and not gpu'"


@cli_task(help={"pytest_args": "extra arguments for pytest, e.g. \"-m 'not slow'\"",
                "quick": "only the fast subset (tests marked quick, about 1 minute); the whole "
                         "suite takes 14 to 15 minutes on a 2-core machine",
                "workers": "test processes running test files side by side (pytest-xdist): auto "
                           "(one per core) or a number; 0 runs every test in this process"})
def test(c: Context, pytest_args: str = "", quick: bool = False, workers: str = "auto") -> None:
    """Run the test suite (pytest), test files side by side in worker processes."""
    with user_errors():
        if workers != "auto" and not workers.isdigit():
            raise ConfigError(f"--workers takes auto or a number, got '{workers}'")
    selection = QUICK_TESTS if quick else ""
    # Work stealing: an idle worker takes tests queued for a busy one, so both cores stay busy to
    # the end; a module fixture may then be built once more in a worker that runs that file again.
    parallel = "" if workers == "0" else f"-n {workers} --dist worksteal"
    c.run(f"{sys.executable} -m pytest {parallel} {selection} {pytest_args}", pty=False)


# Every task above, and the tasks each target's package brings.
ns = Collection.from_module(sys.modules[__name__])
for _target_tasks in target_tasks():
    ns.add_task(_target_tasks)
