"""Deployment bundles for real: built from a real conversion with real downloaded wheels,
verified, tampered with, installed offline in a fresh virtual environment (and, with a Docker
engine, in a --network none container), and rebuilt byte-identically."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from converters.bundles.archive import (
    extract_archive,
    file_record,
    verify_archive,
    write_archive,
)
from converters.errors import BundleError
from converters.fsutil import sha256_file
from converters.runners import docker_cli
from converters.runners.images import image_definition
from tests.conftest import ROOT, run_invoke, skip_or_fail

NAME = "sample-tflite-int8-linux_x86_64"
IMAGE = sorted((ROOT / "dataset" / "triangle").iterdir())[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private, public) PEM keys made by invoke bundle-keygen."""
    folder = tmp_path_factory.mktemp("keys")
    run_invoke("bundle-keygen", "--out", str(folder), check=True)
    private, public = folder / "bundle-signing.pem", folder / "bundle-signing.pub.pem"
    assert private.stat().st_mode & 0o777 == 0o600
    return private, public


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> tuple[Path, Path]:
    """(build folder, bundle path) for the sample's int8 TFLite model, signed with ``keys``."""
    if os.uname().machine != "x86_64":
        pytest.skip("the bundle tests build for linux/x86_64 hosts")
    folder = tmp_path_factory.mktemp("bundle")
    run_invoke("convert", "--quant", "int8", "--out", str(folder / "build"), "--runner", "local",
               "--latency-runs", "3", check=True)
    result = run_invoke("bundle", "--model", str(ROOT / "model" / "sample.h5"), "--target",
                        "tflite", "--platform", "linux/x86_64", "--python", "3.11", "--out",
                        str(folder / "build"), "--dist", str(folder / "dist"), "--sign-key",
                        str(keys[0]), check=True)
    path = folder / "dist" / f"{NAME}.tar.gz"
    line = f"{sha256_file(path)}  {NAME}.tar.gz"
    assert line in result.stdout
    assert (folder / "dist" / f"{NAME}.tar.gz.sha256").read_text() == line + "\n"
    return folder / "build", path


def host_top1(build: Path) -> str:
    result = run_invoke("infer", "--artifact", str(build / "sample" / "tflite" / "sample_int8.tflite"),
                        "--image", str(IMAGE), "--top-k", "1", check=True)
    return result.stdout.split("\t")[0]


def test_bundle_content_and_verification(built: tuple[Path, Path]) -> None:
    _, bundle_path = built
    assert run_invoke("verify-bundle", str(bundle_path)).returncode == 0
    bundle = verify_archive(bundle_path).bundle
    assert {"run.py", "verify.py", "imaging.py"} <= set(bundle["files"])
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


def test_same_inputs_give_the_same_bundle(built: tuple[Path, Path], tmp_path: Path,
                                         keys: tuple[Path, Path]) -> None:
    build, bundle_path = built
    flags = ["--target", "tflite", "--platform", "linux/x86_64", "--python", "3.11",
             "--out", str(build)]
    run_invoke("bundle", *flags, "--dist", str(tmp_path / "signed"), "--sign-key", str(keys[0]),
               check=True)
    assert sha256_file(tmp_path / "signed" / f"{NAME}.tar.gz") == sha256_file(bundle_path)
    # The bundle's README speaks of signatures only when the bundle is signed.
    run_invoke("bundle", *flags, "--dist", str(tmp_path / "unsigned"), check=True)
    readmes = {kind: bundle_readme(tmp_path / kind / f"{NAME}.tar.gz") for kind in ("signed", "unsigned")}
    assert "--public-key KEY.pub.pem" in readmes["signed"] and ".sig" in readmes["signed"]
    assert "--public-key" not in readmes["unsigned"] and ".sig" not in readmes["unsigned"]
    assert "This bundle is not signed" in readmes["unsigned"]


def bundle_readme(path: Path) -> str:
    with tarfile.open(path, "r:gz") as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/README.md"))
        readme = archive.extractfile(member)
        assert readme is not None
        return readme.read().decode()


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
                                                              keys: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    """On the device: verify.py with the standard library only (python -I -S: no site-packages),
    then the offline install, then run.py, with clear errors for bad --top-k values and images."""
    build, bundle_path = built
    root = extract_archive(bundle_path, tmp_path)
    stdlib_only = [sys.executable, "-I", "-S", str(root / "verify.py")]
    checked = subprocess.run([*stdlib_only, str(bundle_path), "--public-key", str(keys[1])],
                             capture_output=True, text=True)
    assert checked.returncode == 0 and "signature valid" in checked.stdout, checked.stderr
    assert f"matches {NAME}.tar.gz.sha256" in checked.stdout
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    offline = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # no index, no find-links but ours
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--find-links",
                              str(root / "wheels"), "-r", str(root / "requirements.txt")],
                             capture_output=True, text=True, env=offline)
    assert install.returncode == 0, install.stderr

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(venv / "bin" / "python"), str(root / "run.py"), *args],
                              capture_output=True, text=True, cwd=tmp_path)

    ran = run(str(IMAGE), "--top-k", "2")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].split("\t")[0] == host_top1(build) == "triangle"
    assert len(ran.stdout.splitlines()) == 2
    clamped = run(str(IMAGE), "--top-k", "9")
    assert clamped.returncode == 0 and len(clamped.stdout.splitlines()) == 4
    assert "--top-k 9 is more than the model's 4 classes: printing all 4" in clamped.stderr
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("L", (13000, 13000)).save(bomb)  # 169 Mpixels: over Pillow's 89 Mpixel limit
    (tmp_path / "notes.png").write_text("not an image")
    for args, message in [(["--top-k", "-1"], "--top-k: must be 1 or more"),
                          (["--top-k", "0"], "--top-k: must be 1 or more"),
                          ([str(bomb)], f"error: {bomb} is too large to read safely"),
                          ([str(tmp_path / "notes.png")], "error: cannot read image")]:
        refused = run(*(args if args[0].endswith(".png") else [str(IMAGE), *args]))
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr and not refused.stdout
    mine = subprocess.run(stdlib_only, capture_output=True, text=True)
    assert mine.returncode == 0 and "files match bundle.json" in mine.stdout, mine.stderr
    (root / "artifacts" / "sample_int8.tflite").write_bytes(b"changed on the device")
    (root / "numpy.py").write_text("print('shadowing numpy')")
    changed = subprocess.run(stdlib_only, capture_output=True, text=True)
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    assert "member 'artifacts/sample_int8.tflite' has 21 bytes" in changed.stderr


@pytest.mark.docker
def test_offline_install_in_a_container_without_network(built: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    """The tflite image's system Python (not its venv) with only the bundle's wheels, installed
    by pip --no-index with --network none."""
    problem = docker_cli.engine_problem()
    if problem is None and docker_cli.image_inspect(image_definition("tflite").tag) is None:
        problem = "the tflite image does not exist (invoke images --target tflite)"
    if problem is not None:
        skip_or_fail(problem)
    build, bundle_path = built
    root = extract_archive(bundle_path, tmp_path)
    (root / "image.png").write_bytes(IMAGE.read_bytes())
    script = ("/opt/venv/bin/pip install --quiet --no-index --find-links /bundle/wheels "
              "--target /tmp/site -r /bundle/requirements.txt && "
              "PYTHONPATH=/tmp/site /usr/bin/python3 /bundle/run.py /bundle/image.png --top-k 1")
    result = docker_cli.docker("run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
                           "--env", "HOME=/tmp", "--env", "PIP_CONFIG_FILE=/dev/null",
                           "--volume", f"{root}:/bundle:ro", "--entrypoint", "/bin/sh",
                           image_definition("tflite").tag, "-c", script, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\t")[0] == host_top1(build)


def test_aarch64_bundle_carries_aarch64_wheels(built: tuple[Path, Path], tmp_path: Path) -> None:
    build, _ = built
    run_invoke("bundle", "--target", "tflite", "--platform", "linux/aarch64", "--python", "3.11",
               "--out", str(build), "--dist", str(tmp_path), check=True)
    bundle = verify_archive(tmp_path / "sample-tflite-int8-linux_aarch64.tar.gz").bundle
    wheels = [name for name in bundle["files"] if name.startswith("wheels/")]
    platform_wheels = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert platform_wheels and all("aarch64" in w for w in platform_wheels), wheels


@pytest.mark.parametrize(("flags", "message"), [
    (["--target", "edgetpu"], "has no edgetpu int8 artifact"),
    (["--target", "tensorrt"], "no int8 TensorRT engine"),
    (["--target", "tflite", "--variant", "fp16"], "has no tflite fp16 artifact (built: tflite int8)"),
    (["--target", "tflite", "--platform", "windows/x86"], "unknown platform 'windows/x86'"),
    (["--target", "tflite", "--sign-key", str(ROOT / "invoke.yaml")],  # small, not a key
     f"the signing key {ROOT / 'invoke.yaml'} is not a PEM key, expected an Ed25519 private key"),
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
    import dataclasses

    from converters import targets
    from converters.bundles import bundle as bundle_module
    from converters.runners import images as images_module
    from converters.runners.images import BOOTSTRAP_BASE, ImageDefinition, load_images_from_bundle

    problem = docker_cli.engine_problem()
    if problem is None and docker_cli.image_inspect(BOOTSTRAP_BASE) is None:
        problem = f"the bootstrapped base {BOOTSTRAP_BASE} does not exist (invoke images --base bootstrap)"
    if problem is not None:
        skip_or_fail(problem)
    stand_in = ImageDefinition("bundletest", "docker/tflite.Dockerfile")
    every_image = images_module.all_images()
    monkeypatch.setattr(images_module, "all_images", lambda: {**every_image, "bundletest": stand_in})
    tflite = targets.get("tflite")
    assert tflite.bundle is not None
    monkeypatch.setitem(targets._registered, "tflite", dataclasses.replace(
        tflite, bundle=dataclasses.replace(tflite.bundle, images=("bundletest",))))
    assert docker_cli.docker("tag", BOOTSTRAP_BASE, stand_in.tag).returncode == 0
    try:
        build, _ = built
        path = bundle_module.build_bundle(bundle_module.BundleRequest(
            build_dir=build / "sample", target="tflite", variant="int8", platform="linux/x86_64",
            python="3.11", with_images=True, dist=tmp_path, constraints=ROOT / "constraints.txt"))
        assert "images/bundletest.tar" in verify_archive(path).bundle["files"]
        assert docker_cli.docker("rmi", stand_in.tag).returncode == 0
        loaded = load_images_from_bundle(path)
        assert any(stand_in.tag in line for line in loaded), loaded
        assert docker_cli.image_inspect(stand_in.tag) is not None
    finally:
        docker_cli.docker("rmi", stand_in.tag)


def test_onnx_bundle_installs_offline_and_agrees(built: tuple[Path, Path], tmp_path: Path) -> None:
    build, _ = built
    out = tmp_path / "build"
    run_invoke("convert", "--target", "onnx", "--quant", "int8", "--out", str(out), "--runner",
               "local", "--latency-runs", "3", check=True)
    run_invoke("bundle", "--target", "onnx", "--platform", "linux/x86_64", "--python", "3.11",
               "--out", str(out), "--dist", str(tmp_path / "dist"), check=True)
    path = tmp_path / "dist" / "sample-onnx-int8-linux_x86_64.tar.gz"
    bundle = verify_archive(path).bundle
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


# --- the build's manifest is checked (#11.4) -------------------------------------------------

def _changed_artifact(build: Path) -> str:
    path = build / "sample" / "tflite" / "sample_int8.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return f"{path} changed after the build: sha256"


def _incomplete(build: Path) -> str:
    manifest = build / "sample" / "manifest.json"
    document = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**document, "complete": False,
                                    "stale_stages": ["tflite-int8", "validate-tflite-int8"]}))
    return "is incomplete (stale stages: tflite-int8, validate-tflite-int8)"


@pytest.mark.parametrize("change", [_changed_artifact, _incomplete], ids=["changed", "incomplete"])
def test_bundle_refuses_what_the_manifest_does_not_vouch_for(built: tuple[Path, Path],
                                                            tmp_path: Path, change: object) -> None:
    build = tmp_path / "build"
    shutil.copytree(built[0], build)
    message = change(build)  # type: ignore[operator]
    result = run_invoke("bundle", "--target", "tflite", "--platform", "linux/x86_64", "--python",
                        "3.11", "--out", str(build), "--dist", str(tmp_path / "dist"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert not (tmp_path / "dist").exists()


# --- anchors outside the archive: .sha256 and the Ed25519 signature (#11.6) -------------------

def _forged(bundle_path: Path, work: Path) -> Path:
    """The bundle with a changed model and a bundle.json recomputed to match it."""
    root = extract_archive(bundle_path, work / "x")
    artifact = root / "artifacts" / "sample_int8.tflite"
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\0")
    listing = json.loads((root / "bundle.json").read_text())
    listing["files"]["artifacts/sample_int8.tflite"] = file_record(artifact)
    (root / "bundle.json").write_text(json.dumps(listing))
    forged = work / "dist" / bundle_path.name
    write_archive(root, forged, NAME)
    return forged


def test_signed_bundle_verifies_and_forgeries_are_refused(built: tuple[Path, Path],
                                                         keys: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    _, bundle_path = built
    public = str(keys[1])
    good = run_invoke("verify-bundle", str(bundle_path), "--public-key", public)
    assert good.returncode == 0 and "signature valid" in good.stdout, good.stderr
    assert f"matches {NAME}.tar.gz.sha256" in good.stdout
    # Standard tools check the same signature: it signs exactly the .sha256 line.
    if shutil.which("openssl"):
        subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", public, "-rawin",
                        "-in", f"{bundle_path}.sha256", "-sigfile", f"{bundle_path}.sig"],
                       check=True, capture_output=True)
    forged = _forged(bundle_path, tmp_path)
    assert run_invoke("verify-bundle", str(forged)).returncode == 0  # self-consistent, unsigned
    other = tmp_path / "other"
    run_invoke("bundle-keygen", "--out", str(other), check=True)
    shutil.copy(f"{bundle_path}.sig", f"{forged}.sig")
    cases = [
        (forged, public, "does not match"),  # the real signature, a forged archive
        (bundle_path, str(other / "bundle-signing.pub.pem"), "does not match"),
    ]
    unsigned = tmp_path / "unsigned" / bundle_path.name
    unsigned.parent.mkdir()
    shutil.copy(bundle_path, unsigned)
    cases.append((unsigned, public, f"is not signed ({unsigned}.sig does not exist)"))
    wrong_sum = tmp_path / "wrongsum" / bundle_path.name
    wrong_sum.parent.mkdir()
    shutil.copy(bundle_path, wrong_sum)
    Path(f"{wrong_sum}.sha256").write_text("0" * 64 + f"  {NAME}.tar.gz\n")
    cases.append((wrong_sum, "", f"{wrong_sum}.sha256 says 0000000000000000"))
    for path, key, message in cases:
        result = run_invoke("verify-bundle", str(path), *(["--public-key", key] if key else []))
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert message in " ".join(result.stderr.split()), result.stderr


def test_verify_bundle_explains_a_folder_and_a_bad_key(built: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    _, bundle_path = built
    folder = run_invoke("verify-bundle", str(tmp_path))
    assert folder.returncode != 0 and "Traceback" not in folder.stderr
    assert f"{tmp_path} is a folder, not a bundle archive: pass the .tar.gz" in folder.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("not a key\n")
    key = run_invoke("verify-bundle", str(bundle_path), "--public-key", str(notes))
    assert key.returncode != 0 and "Traceback" not in key.stderr
    assert "is not a PEM key, expected an Ed25519 public key" in " ".join(key.stderr.split())
    document = tmp_path / "document.txt"
    document.write_text("a document, not a key\n" * 1000)  # 22 KiB
    large = run_invoke("verify-bundle", str(bundle_path), "--public-key", str(document))
    assert large.returncode != 0 and "Traceback" not in large.stderr
    assert "is larger than 16.0 KiB, which no PEM key is" in " ".join(large.stderr.split())


def test_pure_python_ed25519_agrees_with_cryptography() -> None:
    """verify.py's RFC 8032 verifier: the RFC's test vector 1, and cryptography's signatures,
    accepted, and refused once anything changes."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from converters.bundles.verify import L, ed25519_verify

    rfc_key = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    rfc_signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39"
        "701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    assert ed25519_verify(rfc_key, b"", rfc_signature)
    for index in range(8):
        key = ed25519.Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes_raw()
        message = os.urandom(index * 40)
        signature = key.sign(message)
        assert ed25519_verify(public, message, signature)
        flipped_r = bytes([signature[0] ^ 1]) + signature[1:]
        flipped_s = signature[:40] + bytes([signature[40] ^ 1]) + signature[41:]
        s_plus_l = signature[:32] + (int.from_bytes(signature[32:], "little") + L).to_bytes(32, "little")
        other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        assert not ed25519_verify(public, message + b"x", signature)
        assert not ed25519_verify(public, message, flipped_r)
        assert not ed25519_verify(public, message, flipped_s)
        assert not ed25519_verify(public, message, s_plus_l)  # malleability: S must be < L
        assert not ed25519_verify(other, message, signature)
        assert not ed25519_verify(public[:31], message, signature)


# --- one open file from verification to extraction (#11.5) ----------------------------------

def _small_bundle(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    """A valid bundle archive holding ``files`` (and its bundle.json)."""
    staging = folder / name
    for relative, data in files.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(data)
    listing = {relative: file_record(staging / relative) for relative in files}
    (staging / "bundle.json").write_text(json.dumps({"name": name, "files": listing}))
    path = folder / f"{name}.tar.gz"
    write_archive(staging, path, name)
    return path


@pytest.mark.parametrize(("listing", "message"), [
    (b"{not json", "b/bundle.json is not valid JSON"),
    (b"[" * 100_000, "b/bundle.json is not valid JSON"),
    (b'{"name": "b"}', "b/bundle.json lacks the 'name' and 'files' entries"),
    (b'{"name": "b", "files": {"../x": {"sha256": "0", "size": 1}}}',
     "bundle.json entry '../x' has a '..' component"),
], ids=["truncated", "deeply-nested", "no-files", "unsafe-entry"])
def test_malformed_bundle_json_is_refused(tmp_path: Path, listing: bytes, message: str) -> None:
    staging = tmp_path / "b"
    staging.mkdir()
    (staging / "bundle.json").write_bytes(listing)
    write_archive(staging, tmp_path / "b.tar.gz", "b")
    result = run_invoke("verify-bundle", str(tmp_path / "b.tar.gz"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr


def test_images_load_hands_docker_the_bytes_it_verified(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The archive is swapped for a tampered one right after it is first opened (when gzip
    starts reading it): what reaches docker load is still the verified original."""
    import gzip

    from converters.runners import images

    path = _small_bundle(tmp_path / "a", "b", {"images/tflite.tar": b"original image"})
    tampered = _small_bundle(tmp_path / "c", "b", {"images/tflite.tar": b"tampered image"})
    original_init = gzip.GzipFile.__init__

    def swap_after_open(self: gzip.GzipFile, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)  # type: ignore[arg-type]
        if tampered.exists():
            os.replace(tampered, path)

    loaded: list[bytes] = []

    def fake_docker(*args: str, timeout: float = 0) -> subprocess.CompletedProcess[str]:
        loaded.append(Path(args[args.index("--input") + 1]).read_bytes())
        return subprocess.CompletedProcess(list(args), 0, "Loaded image: tflite\n", "")

    monkeypatch.setattr(gzip.GzipFile, "__init__", swap_after_open)
    monkeypatch.setattr(images.docker_cli, "require_engine", lambda: None)
    monkeypatch.setattr(images.docker_cli, "docker", fake_docker)
    assert images.load_images_from_bundle(path) == ["Loaded image: tflite"]
    assert not tampered.exists()  # the swap happened
    assert loaded == [b"original image"]


# --- limits against crafted archives (#11.7) ------------------------------------------------

SPAN = 16 << 20


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _streamed_archive(path: Path, parts: list[bytes | tuple[int, bytes]]) -> Path:
    """A tar.gz of ``parts``: bytes, or (size, fill byte) spans of any size, padded to tar
    blocks. Each part is its own gzip member (a valid multi-member gzip file), so a GiB-sized
    span is one small compressed block written many times: nothing large is ever in memory."""
    with path.open("wb") as out:
        for part in parts:
            if isinstance(part, bytes):
                out.write(gzip_member(part + b"\0" * (-len(part) % 512)))
                continue
            size, fill = part
            span = gzip_member(fill * SPAN)
            for _ in range(size // SPAN):
                out.write(span)
            out.write(gzip_member(fill * (size % SPAN) + b"\0" * (-size % 512)))
        out.write(gzip_member(b"\0" * 1024))
    return path


def gzip_member(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=9, mtime=0)


# Runs argv and prints its peak memory: a child forked from pytest (TensorFlow loaded) would
# report pytest's resident size as its own peak, so a small fresh Python does the forking.
MEASURE = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], "
           "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
           ".ru_maxrss); sys.exit(code)")


def _run_measured(*args: str) -> tuple[int, str, float, float]:
    """invoke ARGS: exit code, stderr, seconds and the process's peak memory (MiB)."""
    import time

    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True,
                            text=True, cwd=ROOT)
    seconds = time.monotonic() - started
    return result.returncode, result.stderr, seconds, int(result.stdout.split()[-1]) / 1024


GIB = 1 << 30
CRAFTED = {
    "bundle-json-1GiB": ([_header("b/", 0, tarfile.DIRTYPE), _header("b/bundle.json", GIB),
                          (GIB, b" ")], "member 'b/bundle.json' is 1.0 GiB, over the 4.0 MiB limit "
                                        "for bundle.json"),
    "name-256MiB": ([_header("././@LongLink", 256 << 20, tarfile.GNUTYPE_LONGNAME),
                     (256 << 20, b"a"), _header("b", 0)],
                    "tar header #1 holds a 256.0 MiB member name, over the 1024-byte name-length "
                    "limit"),
    "member-17GiB": ([_header("b/", 0, tarfile.DIRTYPE), _header("b/images/x.tar", 17 * GIB),
                      (17 * GIB, b"\0")],
                     "member 'b/images/x.tar' is 17.0 GiB, over the per-member limit of 16.0 GiB"),
    "ratio-2GiB": ([_header("b/", 0, tarfile.DIRTYPE), _header("b/images/x.tar", 2 * GIB),
                    (2 * GIB, b"\0")],
                   "over the compression-ratio limit of 50:1"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archives_hit_a_limit_before_allocating(tmp_path: Path, case: str) -> None:
    parts, message = CRAFTED[case]
    crafted = _streamed_archive(tmp_path / f"{case}.tar.gz", parts)
    code, stderr, seconds, memory = _run_measured("verify-bundle", str(crafted))
    print(f"{case}: {crafted.stat().st_size / 2**20:.1f} MiB archive refused in {seconds:.2f} s, "
          f"peak memory {memory:.0f} MiB")
    assert code != 0 and "Traceback" not in stderr
    assert message in " ".join(stderr.split()), stderr
    assert memory < 300 and len(stderr) < 2000
    with pytest.raises(BundleError, match="refusing the bundle"):
        extract_archive(crafted, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_member_count_limit(tmp_path: Path) -> None:
    from converters.bundles.verify import MAX_HEADERS

    crafted = tmp_path / "many.tar.gz"
    with tarfile.open(crafted, "w:gz", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(tarfile.TarInfo("b/bundle.json"), io.BytesIO(b""))
        for index in range(MAX_HEADERS):
            archive.addfile(tarfile.TarInfo(f"b/{index}"), io.BytesIO(b""))
    code, stderr, seconds, memory = _run_measured("verify-bundle", str(crafted))
    print(f"{MAX_HEADERS + 1} members: refused in {seconds:.2f} s, peak memory {memory:.0f} MiB")
    assert code != 0 and "Traceback" not in stderr
    assert f"the archive has more than {MAX_HEADERS} tar headers (member-count limit)" in stderr


def test_total_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The total limit (32 GiB) with the limits lowered: members that reach it for real take
    minutes to stream, the check is the same."""
    from converters.bundles import verify

    monkeypatch.setattr(verify, "MAX_MEMBER_BYTES", 3 << 20)
    monkeypatch.setattr(verify, "MAX_TOTAL_BYTES", 5 << 20)
    crafted = _small_bundle(tmp_path, "b", {f"images/{i}.tar": os.urandom(2 << 20) for i in range(3)})
    with pytest.raises(BundleError, match=r"members up to 'b/images/2.tar' unpack to 6.0 MiB, over "
                                          r"the total limit of 5.0 MiB"):
        verify_archive(crafted)
