"""Deployment bundles for real: built from a real conversion with real downloaded wheels,
verified, tampered with, installed offline in a fresh virtual environment (and, with a Docker
engine, in a --network none container), and rebuilt byte-identically."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from converters import docker
from converters.bundle_archive import BundleError, extract_archive, verify_archive, write_archive
from converters.fsutil import sha256_file
from converters.images import IMAGES
from tests.conftest import ROOT, run_invoke, skip_or_fail

NAME = "sample-tflite-int8-linux_x86_64"
IMAGE = sorted((ROOT / "dataset" / "triangle").iterdir())[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(build folder, bundle path) for the sample's int8 TFLite model."""
    if os.uname().machine != "x86_64":
        pytest.skip("the bundle tests build for linux/x86_64 hosts")
    folder = tmp_path_factory.mktemp("bundle")
    run_invoke("convert", "--quant", "int8", "--out", str(folder / "build"), "--runner", "local",
               "--latency-runs", "3", check=True)
    run_invoke("bundle", "--model", str(ROOT / "model" / "sample.h5"), "--target", "tflite",
               "--platform", "linux/x86_64", "--python", "3.11", "--out", str(folder / "build"),
               "--dist", str(folder / "dist"), check=True)
    return folder / "build", folder / "dist" / f"{NAME}.tar.gz"


def host_top1(build: Path) -> str:
    result = run_invoke("infer", "--artifact", str(build / "sample" / "tflite" / "sample_int8.tflite"),
                        "--image", str(IMAGE), "--top-k", "1", check=True)
    return result.stdout.split("\t")[0]


def test_bundle_content_and_verification(built: tuple[Path, Path]) -> None:
    _, bundle_path = built
    assert run_invoke("verify-bundle", "--path", str(bundle_path)).returncode == 0
    bundle = verify_archive(bundle_path)
    assert bundle["runtime"] == "litert" and bundle["artifact"] == "artifacts/sample_int8.tflite"
    assert bundle["model"]["input_shape"] == [32, 32, 3]
    assert bundle["model"]["input"]["type"] == "UINT8" and bundle["model"]["input"]["scale"]
    assert bundle["class_names"] == ["circle", "square", "stripes", "triangle"]
    assert bundle["preprocessing"]["mode"] == "0..1"
    assert bundle["tools"]["tflite-int8"]["tensorflow"].startswith("tensorflow")
    assert len(bundle["source_manifest_sha256"]) == 64
    wheels = [name for name in bundle["files"] if name.startswith("wheels/")]
    assert any("ai_edge_litert-2.3.0" in w for w in wheels) and any("numpy" in w for w in wheels)
    with tarfile.open(bundle_path, "r:gz") as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}


def test_same_inputs_give_the_same_bundle(built: tuple[Path, Path], tmp_path: Path) -> None:
    build, bundle_path = built
    run_invoke("bundle", "--target", "tflite", "--platform", "linux/x86_64", "--python", "3.11",
               "--out", str(build), "--dist", str(tmp_path), check=True)
    assert sha256_file(tmp_path / f"{NAME}.tar.gz") == sha256_file(bundle_path)


def _repack(bundle_path: Path, work: Path, change: str) -> Path:
    """Extract, apply one change, pack again with the same deterministic writer."""
    root = extract_archive(bundle_path, work / "x")
    artifact = root / "artifacts" / "sample_int8.tflite"
    if change == "byte":
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0x01
        artifact.write_bytes(bytes(data))
    elif change == "missing":
        artifact.unlink()
    elif change == "extra":
        (root / "artifacts" / "notes.txt").write_text("added after the build")
    repacked = work / "tampered.tar.gz"
    write_archive(root, repacked, NAME)
    return repacked


@pytest.mark.parametrize(("change", "message"), [
    ("byte", f"member '{NAME}/artifacts/sample_int8.tflite' has sha256"),
    ("missing", f"member '{NAME}/artifacts/sample_int8.tflite' listed in bundle.json is missing"),
    ("extra", f"member '{NAME}/artifacts/notes.txt' is not listed in bundle.json"),
])
def test_tampered_bundles_are_refused_naming_the_member(built: tuple[Path, Path], tmp_path: Path,
                                                       change: str, message: str) -> None:
    _, bundle_path = built
    tampered = _repack(bundle_path, tmp_path, change)
    result = run_invoke("verify-bundle", "--path", str(tampered))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr


def _crafted(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(tarfile.TarInfo("b"), io.BytesIO(b""))
        if member.isfile():
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
        else:
            archive.addfile(member)
    return path


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(("member", "message"), [
    (tarfile.TarInfo("b/../../evil.py"), "has a '..' component"),
    (tarfile.TarInfo("/etc/cron.d/evil"), "has an absolute path"),
    (_link("b/run.py", tarfile.SYMTYPE, "/etc/passwd"), "is a link (to '/etc/passwd')"),
    (_link("b/hard", tarfile.LNKTYPE, "b/bundle.json"), "is a link"),
    (_link("b/tty", tarfile.CHRTYPE, ""), "is a device, FIFO or other special file"),
], ids=["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_crafted_archives_are_refused(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    crafted = _crafted(tmp_path / "crafted.tar.gz", member)
    result = run_invoke("verify-bundle", "--path", str(crafted))
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert f"member '{member.name}'" in result.stderr
    with pytest.raises(BundleError, match="refusing the bundle"):
        extract_archive(crafted, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.py").exists()


def test_offline_install_in_a_fresh_venv_gives_the_hosts_top1(built: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    build, bundle_path = built
    root = extract_archive(bundle_path, tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    offline = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # no index, no find-links but ours
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--find-links",
                              str(root / "wheels"), "-r", str(root / "requirements.txt")],
                             capture_output=True, text=True, env=offline)
    assert install.returncode == 0, install.stderr
    ran = subprocess.run([str(venv / "bin" / "python"), str(root / "run.py"), str(IMAGE),
                          "--top-k", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].split("\t")[0] == host_top1(build) == "triangle"


@pytest.mark.docker
def test_offline_install_in_a_container_without_network(built: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    """The tflite image's system Python (not its venv) with only the bundle's wheels, installed
    by pip --no-index with --network none."""
    problem = docker.engine_problem()
    if problem is None and docker.image_inspect(IMAGES["tflite"].tag) is None:
        problem = "the tflite image does not exist (invoke images --target tflite)"
    if problem is not None:
        skip_or_fail(problem)
    build, bundle_path = built
    root = extract_archive(bundle_path, tmp_path)
    (root / "image.png").write_bytes(IMAGE.read_bytes())
    script = ("/opt/venv/bin/pip install --quiet --no-index --find-links /bundle/wheels "
              "--target /tmp/site -r /bundle/requirements.txt && "
              "PYTHONPATH=/tmp/site /usr/bin/python3 /bundle/run.py /bundle/image.png --top-k 1")
    result = docker.docker("run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
                           "--env", "HOME=/tmp", "--env", "PIP_CONFIG_FILE=/dev/null",
                           "--volume", f"{root}:/bundle:ro", "--entrypoint", "/bin/sh",
                           IMAGES["tflite"].tag, "-c", script, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\t")[0] == host_top1(build)


def test_aarch64_bundle_carries_aarch64_wheels(built: tuple[Path, Path], tmp_path: Path) -> None:
    build, _ = built
    run_invoke("bundle", "--target", "tflite", "--platform", "linux/aarch64", "--python", "3.11",
               "--out", str(build), "--dist", str(tmp_path), check=True)
    bundle = verify_archive(tmp_path / "sample-tflite-int8-linux_aarch64.tar.gz")
    wheels = [name for name in bundle["files"] if name.startswith("wheels/")]
    platform_wheels = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert platform_wheels and all("aarch64" in w for w in platform_wheels), wheels


@pytest.mark.parametrize(("flags", "message"), [
    (["--target", "edgetpu"], "has no edgetpu int8 artifact"),
    (["--target", "tensorrt"], "no int8 TensorRT engine"),
    (["--target", "tflite", "--variant", "fp16"], "has no tflite fp16 artifact (built: tflite int8)"),
    (["--target", "tflite", "--platform", "windows/x86"], "unknown platform 'windows/x86'"),
])
def test_bundle_errors_write_nothing(built: tuple[Path, Path], tmp_path: Path, flags: list[str],
                                     message: str) -> None:
    build, _ = built
    result = run_invoke("bundle", *flags, "--out", str(build), "--dist", str(tmp_path / "dist"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())



@pytest.mark.docker
def test_with_images_bundle_loads_on_a_build_host(built: tuple[Path, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--with-images saves the stage images and images --load restores them. A small stand-in
    image (the bootstrapped Debian base, re-tagged) keeps the archive small; the code path is the
    one every bundle takes."""
    from converters import bundle as bundle_module
    from converters.images import BOOTSTRAP_BASE, ImageDefinition, load_images_from_bundle

    problem = docker.engine_problem()
    if problem is None and docker.image_inspect(BOOTSTRAP_BASE) is None:
        problem = f"the bootstrapped base {BOOTSTRAP_BASE} does not exist (invoke images --base bootstrap)"
    if problem is not None:
        skip_or_fail(problem)
    stand_in = ImageDefinition("bundletest", "docker/tflite.Dockerfile")
    monkeypatch.setitem(IMAGES, "bundletest", stand_in)
    monkeypatch.setitem(bundle_module.STAGE_IMAGES, "tflite", ("bundletest",))
    assert docker.docker("tag", BOOTSTRAP_BASE, stand_in.tag).returncode == 0
    try:
        build, _ = built
        path = bundle_module.build_bundle(bundle_module.BundleRequest(
            build_dir=build / "sample", target="tflite", variant="int8", platform="linux/x86_64",
            python="3.11", with_images=True, dist=tmp_path, constraints=ROOT / "constraints.txt"))
        assert "images/bundletest.tar" in verify_archive(path)["files"]
        assert docker.docker("rmi", stand_in.tag).returncode == 0
        loaded = load_images_from_bundle(path)
        assert any(stand_in.tag in line for line in loaded), loaded
        assert docker.image_inspect(stand_in.tag) is not None
    finally:
        docker.docker("rmi", stand_in.tag)


def test_onnx_bundle_installs_offline_and_agrees(built: tuple[Path, Path], tmp_path: Path) -> None:
    build, _ = built
    out = tmp_path / "build"
    run_invoke("convert", "--target", "onnx", "--quant", "int8", "--out", str(out), "--runner",
               "local", "--latency-runs", "3", check=True)
    run_invoke("bundle", "--target", "onnx", "--platform", "linux/x86_64", "--python", "3.11",
               "--out", str(out), "--dist", str(tmp_path / "dist"), check=True)
    path = tmp_path / "dist" / "sample-onnx-int8-linux_x86_64.tar.gz"
    bundle = verify_archive(path)
    assert bundle["runtime"] == "onnxruntime" and bundle["artifact"] == "artifacts/sample_int8.onnx"
    assert any(name.startswith("wheels/onnxruntime-") for name in bundle["files"])
    root = extract_archive(path, tmp_path / "x")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    offline = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", "--find-links",
                    str(root / "wheels"), "-r", str(root / "requirements.txt")], check=True, env=offline)
    ran = subprocess.run([str(venv / "bin" / "python"), str(root / "run.py"), str(IMAGE)],
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\t")[0] == host_top1(build)
