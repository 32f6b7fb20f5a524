"""The toolchain images: what each is built from, and ``invoke images`` that builds them.

Each image's Dockerfile lives in ``docker/``; its base is a build argument, either pulled from a
registry (``--base pull``) or bootstrapped from a Debian mirror with debootstrap and
``docker import`` (``--base bootstrap``, for hosts that reach no registry). A CA bundle for a
TLS-intercepting proxy reaches pip and apt as a BuildKit secret, never a layer.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from enum import Enum
from pathlib import Path

from converters import __version__, console
from converters.cache import stage_cache
from converters.errors import ConfigError, ImageBuildError
from converters.image_definition import CORE_IMAGE, ImageDefinition
from converters.processes import run_streaming
from converters.runners import docker_cli

BOOTSTRAP_BASE = "tensor-edge-converter/base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
CA_BUNDLE_VARIABLES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
BASE_NOT_FOUND_HINTS = ("pull access denied", "not found", "failed to resolve", "no such host",
                        "failed to do request", "i/o timeout", "connection refused")


class BaseSource(str, Enum):
    PULL = "pull"
    BOOTSTRAP = "bootstrap"


CORE_IMAGE_DEFINITION = ImageDefinition(CORE_IMAGE, f"docker/{CORE_IMAGE}.Dockerfile")


def all_images() -> dict[str, ImageDefinition]:
    """The core TensorFlow image and every target's own images (from the target registry)."""
    from converters.targets import all_targets

    images = {CORE_IMAGE_DEFINITION.name: CORE_IMAGE_DEFINITION}
    for target in all_targets().values():
        images |= {image.name: image for image in target.images}
    return images


def optional_images() -> frozenset[str]:
    """Images some hosts cannot build (a vendor repository or registry out of reach): without
    them their stages run locally, where they record that their tool is missing."""
    return frozenset(all_images()) - {CORE_IMAGE_DEFINITION.name}


def image_definition(name: str) -> ImageDefinition:
    images = all_images()
    if name not in images:
        raise ConfigError(f"unknown image '{name}': expected one of {', '.join(images)}")
    return images[name]


def default_ca_bundle() -> Path | None:
    """The CA bundle pip on this host uses, from PIP_CERT, REQUESTS_CA_BUNDLE or SSL_CERT_FILE."""
    for variable in CA_BUNDLE_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return Path(value)
    return None


def check_ca_bundle(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise ConfigError(f"CA bundle {path} does not exist: pass --ca-bundle PATH to a PEM file")
    return path


def build_images(names: list[str], base: BaseSource, ca_bundle: Path | None, source_dir: Path,
                 mirror: str = DEFAULT_MIRROR) -> dict[str, str]:
    """Build each named image (``all``: every one); return tag → image ID."""
    definitions = list(all_images().values()) if "all" in names else [image_definition(n) for n in names]
    docker_cli.require_engine()
    ca_bundle = check_ca_bundle(ca_bundle)
    base_image: str | None = None
    if base is BaseSource.BOOTSTRAP:
        unbootstrappable = [d for d in definitions if not d.bootstrappable]
        if unbootstrappable:
            raise ConfigError("; ".join(f"--base bootstrap cannot make the base of {d.name}: "
                                        f"{d.not_bootstrappable}" for d in unbootstrappable))
        base_image = bootstrap_base(mirror)
    built = {}
    for definition in definitions:
        built[definition.tag] = build_image(definition, base_image, ca_bundle, source_dir)
    return built


def build_image(definition: ImageDefinition, base_image: str | None, ca_bundle: Path | None,
                source_dir: Path) -> str:
    argv = [docker_cli.docker_cli(), "build", "--file", str(source_dir / definition.dockerfile),
            "--tag", definition.tag,
            "--build-arg", f"VERSION={__version__}",
            "--build-arg", f"REVISION={git_revision(source_dir)}",
            "--build-arg", f"CODE={stage_cache.code_fingerprint()}"]
    if base_image is not None:
        argv += ["--build-arg", f"BASE={base_image}"]
    if definition.platform is not None:
        argv += ["--platform", definition.platform]
    if ca_bundle is not None:
        argv += ["--secret", f"id=ca_bundle,src={ca_bundle.resolve()}"]
    argv.append(str(source_dir))
    console.info("$ DOCKER_BUILDKIT=1 " + " ".join(argv))
    exit_code, tail = run_streaming(argv, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if exit_code != 0:
        base = base_image or default_base(definition, source_dir)
        raise ImageBuildError(build_failure_message(definition, exit_code, tail, base))
    inspected = docker_cli.image_inspect(definition.tag)
    if inspected is None:
        raise ImageBuildError(f"docker build said it built {definition.tag} but the engine does "
                              "not list it")
    console.info(f"built {definition.tag} ({inspected['Id']})")
    return str(inspected["Id"])


def default_base(definition: ImageDefinition, source_dir: Path) -> str:
    """The pinned ``ARG BASE=`` default of the image's Dockerfile."""
    for line in (source_dir / definition.dockerfile).read_text().splitlines():
        if line.startswith("ARG BASE="):
            return line.removeprefix("ARG BASE=").strip()
    return "its base image"


def build_failure_message(definition: ImageDefinition, exit_code: int, tail: list[str],
                          base: str) -> str:
    log = "\n".join(f"  | {line}" for line in tail)
    text = "\n".join(tail).lower()
    known = [reason for marker, reason in definition.build_failures if marker.lower() in text]
    if known:
        reason = known[0]
    elif any(hint in text for hint in BASE_NOT_FOUND_HINTS) and "load metadata" in text:
        reason = f"the base image {base} could not be pulled: " + (
            "where no container registry is reachable use --base bootstrap (a Debian base made "
            "with debootstrap from a mirror)" if definition.bootstrappable
            else definition.not_bootstrappable)
    else:
        reason = "see the log lines above"
    return (f"building the {definition.name} image {definition.tag} failed (exit code "
            f"{exit_code}): {reason}\nlast lines of the build log:\n{log}")


def bootstrap_base(mirror: str) -> str:
    """A Debian base image made from ``mirror`` with debootstrap (reused when it exists)."""
    if docker_cli.image_inspect(BOOTSTRAP_BASE) is not None:
        console.info(f"using the bootstrapped base {BOOTSTRAP_BASE} (docker rmi it to remake it)")
        return BOOTSTRAP_BASE
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError("--base bootstrap needs debootstrap: `sudo apt-get install debootstrap`")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap must run as root: run `sudo invoke images --base "
                              "bootstrap` once (later builds reuse the base image)")
    with tempfile.TemporaryDirectory(prefix="tec-rootfs-") as rootfs:
        argv = [debootstrap, "--variant=minbase", f"--arch={debian_architecture()}", DEBIAN_SUITE,
                rootfs, mirror]
        console.info("$ " + " ".join(argv))
        exit_code, tail = run_streaming(argv)
        if exit_code != 0:
            log = "\n".join(f"  | {line}" for line in tail)
            raise ImageBuildError(f"debootstrap from {mirror} failed (exit code {exit_code}): "
                                  f"check that the mirror is reachable (--mirror URL)\n{log}")
        import_rootfs(Path(rootfs), BOOTSTRAP_BASE)
    return BOOTSTRAP_BASE


def import_rootfs(rootfs: Path, tag: str) -> None:
    console.info(f"$ tar -C {rootfs} -c . | docker import - {tag}")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run([docker_cli.docker_cli(), "import", "-", tag], stdin=tar.stdout,
                              capture_output=True, text=True)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or imported.returncode != 0:
        raise ImageBuildError(f"docker import of the bootstrapped root file system failed: "
                              f"{imported.stderr.strip()}")


def debian_architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def git_revision(source_dir: Path) -> str:
    try:
        result = subprocess.run(["git", "-C", str(source_dir), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def load_images_from_bundle(bundle_path: Path, public_key: Path | None = None) -> list[str]:
    """``docker load`` the stage images a bundle made with --with-images carries.

    The images are loaded from a private copy that was verified (with ``public_key``, its
    signature too) as it was extracted, in one pass over one open file: swapping the archive
    meanwhile cannot get unverified bytes loaded.
    """
    from converters.bundles.archive import extract_archive
    from converters.errors import BundleError

    docker_cli.require_engine()
    with tempfile.TemporaryDirectory(prefix="tec-load-") as folder:
        root = extract_archive(bundle_path, Path(folder), public_key)
        archives = sorted((root / "images").glob("*.tar"))
        if not archives:
            raise BundleError(f"{bundle_path} carries no images: build it with invoke bundle "
                              "--with-images")
        loaded = []
        for archive in archives:
            console.info(f"$ docker load --input {archive.name}")
            result = docker_cli.docker("load", "--input", str(archive), timeout=1800)
            if result.returncode != 0:
                raise ImageBuildError(f"docker load of {archive.name} failed: {result.stderr.strip()}")
            loaded.append(result.stdout.strip())
    return loaded
