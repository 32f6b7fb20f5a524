"""The docker runner and the toolchain images, with the real Docker engine.

Needs a running engine and the tflite image (`invoke images --target tflite`). Without them the
tests skip and say why; with REQUIRE_DOCKER=1 (set by CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from converters.fsutil import sha256_file
from converters.runners import docker_cli
from converters.runners.docker import DockerRunner
from converters.runners.images import default_ca_bundle, image_definition
from tests.conftest import ROOT, run_invoke, skip_or_fail, terminal_ctrl_c

pytestmark = pytest.mark.docker
TFLITE_TAG = image_definition("tflite").tag
SAMPLE_FLAGS = ["--model", str(ROOT / "model" / "sample.h5"), "--dataset", str(ROOT / "dataset"),
                "--calibration-size", "20", "--validation-size", "40", "--latency-runs", "3",
                "--threads", "1"]


@pytest.fixture(scope="module")
def tflite_image() -> str:
    """The tflite image's ID, once the engine answers and the image matches this checkout."""
    problem = docker_cli.engine_problem()
    if problem is not None:
        skip_or_fail(problem)
    problem = DockerRunner(Path("/tmp")).image_problem("tflite")
    if problem is not None:
        skip_or_fail(problem)
    inspected = docker_cli.image_inspect(TFLITE_TAG)
    assert inspected is not None
    return str(inspected["Id"])


def containers_of(out: Path) -> list[str]:
    listed = docker_cli.docker("ps", "--all", "--quiet", "--filter",
                           f"label={docker_cli.BUILD_DIR_LABEL}={out.resolve()}")
    return listed.stdout.split()


def tflite_hashes(out: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(out.rglob("*.tflite"))}


def test_sample_converts_in_the_image_like_the_local_runner(tflite_image: str,
                                                            tmp_path: Path) -> None:
    in_docker, local = tmp_path / "docker", tmp_path / "local"
    result = run_invoke("convert", *SAMPLE_FLAGS, "--out", str(in_docker), "--runner", "docker",
                        check=True)
    assert f"--network none --user {os.getuid()}:{os.getgid()}" in result.stdout  # printed
    run_invoke("convert", *SAMPLE_FLAGS, "--out", str(local), "--runner", "local", check=True)

    docker_hashes = tflite_hashes(in_docker)
    assert len(docker_hashes) == 4
    assert docker_hashes == tflite_hashes(local)  # same TF version: byte-identical

    manifest = json.loads((in_docker / "sample" / "manifest.json").read_text())
    for name, stage in manifest["stages"].items():
        if name == "report":
            assert stage["runner"] == "local"  # host stage: reads JSON records only
        else:
            assert stage["runner"] == "docker", name
            assert stage["environment"] == {"image": TFLITE_TAG, "image_id": tflite_image}
    report = json.loads((in_docker / "sample" / "report.json").read_text())
    assert report["stages"]["tflite-int8"]["image_id"] == tflite_image
    assert tflite_image[:19] in (in_docker / "sample" / "report.md").read_text()
    assert report["artifacts"][3]["metrics"]["accuracy"] >= 0.95
    # MediaPipe's ImageClassifier ran in the image, as it does on the host
    local_report = json.loads((local / "sample" / "report.json").read_text())
    for in_image, on_host in zip(report["artifacts"], local_report["artifacts"], strict=True):
        assert in_image["mediapipe"]["ran"] is True, in_image["mediapipe"]
        assert in_image["mediapipe"]["names_returned"] is True
        assert in_image["mediapipe"]["top1_agreement"] == on_host["mediapipe"]["top1_agreement"]

    # Artifacts belong to the caller, not to the image's user (uid 10001).
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (in_docker / "sample").rglob("*")}
    assert owners == {(os.getuid(), os.getgid())}
    assert containers_of(in_docker) == []  # --rm


def test_auto_runner_picks_docker_and_says_why(tflite_image: str, tmp_path: Path) -> None:
    result = run_invoke("convert", *SAMPLE_FLAGS, "--quant", "fp32", "--out", str(tmp_path),
                        "--runner", "auto", check=True)
    assert "runner auto: tflite stages in docker" in result.stdout
    manifest = json.loads((tmp_path / "sample" / "manifest.json").read_text())
    assert manifest["stages"]["tflite-fp32"]["environment"]["image_id"] == tflite_image


def test_container_has_no_network(tflite_image: str, tmp_path: Path) -> None:
    """Interfaces seen inside the stage container: loopback only. The control run without
    --network none sees another interface, so the check can fail."""
    runner = DockerRunner(tmp_path)
    job = {"model_path": str(ROOT / "model" / "sample.h5"), "dataset_dir": str(ROOT / "dataset"),
           "image": "tflite"}
    argv = runner.container_argv(job, f"tec-network-probe-{os.getpid()}")
    probe = ["--entrypoint", "cat", TFLITE_TAG, "/proc/net/dev"]

    def interfaces(command: list[str]) -> set[str]:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return set(re.findall(r"^\s*([\w.-]+):", result.stdout, flags=re.MULTILINE))

    assert interfaces(argv + probe) == {"lo"}
    index = argv.index("--network")
    control = argv[:index] + argv[index + 2:]
    assert interfaces(control + probe) - {"lo"}


def _wait_for_container(out: Path, process: subprocess.Popen[str], limit_s: float) -> list[str]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        if found := containers_of(out):
            return found
        time.sleep(0.2)
    raise AssertionError("the stage container never appeared")


def _start_docker_convert(out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert", *SAMPLE_FLAGS,
         "--out", str(out), "--runner", "docker"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=terminal_ctrl_c)


def test_ctrl_c_stops_and_removes_the_container(tflite_image: str, tmp_path: Path) -> None:
    process = _start_docker_convert(tmp_path)
    _wait_for_container(tmp_path, process, limit_s=60)
    time.sleep(1.5)  # inside the stage: TensorFlow is loading or converting
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert containers_of(tmp_path) == []
    folder = tmp_path / "sample"
    if not folder.exists():  # interrupted before any stage finished: nothing is left behind
        assert not any(tmp_path.rglob("*.tflite"))
        return
    # Only complete stages left files: each artifact on disk is in the manifest, which says the
    # build is incomplete (and verify refuses it, naming the stale stages).
    manifest = json.loads((folder / "manifest.json").read_text())
    on_disk = {f"tflite/{p.name}" for p in (folder / "tflite").glob("*.tflite")}
    assert on_disk <= set(manifest["artifacts"])
    assert manifest["complete"] is False
    verify = run_invoke("verify", "--out", str(tmp_path))
    assert verify.returncode != 0 and "did not finish" in verify.stderr


def test_container_of_a_killed_build_is_removed_by_the_next(tflite_image: str,
                                                            tmp_path: Path) -> None:
    """SIGKILL gives the build no chance to clean up: the docker CLI dies with it, the container
    runs on. The next build of the same folder (holding its lock) removes it and says so."""
    process = _start_docker_convert(tmp_path)
    [orphan] = _wait_for_container(tmp_path, process, limit_s=60)
    orphan_name = docker_cli.docker("inspect", "--format", "{{.Name}}", orphan).stdout.strip("/\n")
    process.kill()
    process.communicate(timeout=30)
    rerun = run_invoke("convert", *SAMPLE_FLAGS, "--out", str(tmp_path), "--runner", "docker",
                       check=True)
    assert f"removed container {orphan_name} left by an interrupted build" in rerun.stdout
    assert containers_of(tmp_path) == []
    assert docker_cli.docker("inspect", orphan).returncode != 0  # gone
    assert run_invoke("verify", "--out", str(tmp_path)).returncode == 0


def test_named_volume_is_stored_in_the_build_folder(tflite_image: str, tmp_path: Path) -> None:
    volume = f"tec-test-{os.getpid()}"
    try:
        run_invoke("convert", *SAMPLE_FLAGS, "--quant", "fp32", "--out", str(tmp_path),
                   "--runner", "docker", "--volume", volume, check=True)
        assert (tmp_path / "sample" / "tflite" / "sample_fp32.tflite").exists()
        options = docker_cli.docker("volume", "inspect", "--format", "{{json .Options}}", volume)
        assert json.loads(options.stdout)["device"] == str(tmp_path.resolve())
        elsewhere = tmp_path / "other"
        clash = run_invoke("convert", *SAMPLE_FLAGS, "--quant", "fp32", "--out", str(elsewhere),
                           "--runner", "docker", "--volume", volume)
        assert clash.returncode != 0 and "Traceback" not in clash.stdout + clash.stderr
        assert f"docker volume {volume} is stored in {tmp_path.resolve()}" in clash.stderr
    finally:
        docker_cli.docker("volume", "rm", "--force", volume)


def test_stale_or_missing_image_is_refused_with_the_fix(tflite_image: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from converters.runners import images as images_module
    from converters.runners.images import ImageDefinition

    runner = DockerRunner(tmp_path)
    every_image = images_module.all_images()
    nosuch = ImageDefinition("nosuch", "docker/nosuch.Dockerfile")
    monkeypatch.setattr(images_module, "all_images", lambda: {**every_image, "nosuch": nosuch})
    missing = runner.image_problem("nosuch")
    assert missing is not None and "does not exist" in missing
    assert "invoke images --target nosuch" in missing
    assert runner.image_problem("tflite") is None
    monkeypatch.setattr("converters.runners.docker.stage_cache.code_fingerprint", lambda: "edited")
    stale = runner.image_problem("tflite")
    assert stale is not None and "holds other converters code" in stale


PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _proxy_certificates(bundle: Path) -> list[str]:
    """Certificates in ``bundle`` that are in no public root store here (certifi's, pip's,
    Debian's Mozilla set): the proxy's own CA."""
    import certifi
    from pip._vendor import certifi as pip_certifi

    stores = [Path(certifi.where()), Path(pip_certifi.where()),
              *Path("/usr/share/ca-certificates/mozilla").glob("*.crt")]
    public = {body for store in stores for body in PEM_BODY.findall(store.read_text())}
    return [cert for cert in PEM_BODY.findall(bundle.read_text()) if cert not in public]


def test_ca_bundle_is_in_no_layer_of_the_image(tflite_image: str) -> None:
    bundle = default_ca_bundle()
    if bundle is None or not bundle.is_file():
        pytest.skip("no CA bundle configured (PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE)")
    private = _proxy_certificates(bundle)
    if not private:
        pytest.skip(f"{bundle} holds only public roots: there is no proxy CA to look for")
    # A 64-character base64 line from the middle of each proxy certificate, and a control that
    # is in the image (a root of the certifi bundle pip ships in the venv).
    markers = {cert.splitlines()[3].encode() for cert in private}
    import certifi

    control = Path(certifi.where()).read_text().split("-----BEGIN CERTIFICATE-----")[1]
    control_marker = control.strip().splitlines()[3].encode()
    found = {marker: False for marker in [*markers, control_marker]}
    saved = subprocess.Popen([docker_cli.docker_cli(), "save", TFLITE_TAG], stdout=subprocess.PIPE)
    assert saved.stdout is not None
    tail = b""
    while chunk := saved.stdout.read(1 << 22):
        window = tail + chunk
        for marker in found:
            found[marker] = found[marker] or marker in window
        tail = window[-256:]
    assert saved.wait() == 0
    assert found[control_marker], "the scan did not see a file that is in the image"
    assert not any(found[marker] for marker in markers), "the proxy CA is in a layer"
    history = docker_cli.docker("history", "--no-trunc", TFLITE_TAG).stdout
    inspected = json.dumps(docker_cli.image_inspect(TFLITE_TAG))
    for text in (history, inspected):
        assert str(bundle) not in text and "PIP_CERT=/" not in text


def test_image_build_failures_say_why(tflite_image: str) -> None:
    tensorrt = run_invoke("images", "--target", "tensorrt", "--base", "bootstrap")
    assert tensorrt.returncode != 0 and "NVIDIA's NGC TensorRT image" in tensorrt.stderr
    missing_ca = run_invoke("images", "--ca-bundle", "/nonexistent/ca.pem")
    assert missing_ca.returncode != 0
    assert "CA bundle /nonexistent/ca.pem does not exist" in missing_ca.stderr
    pulled = run_invoke("images", "--target", "tensorrt", "--base", "pull", timeout=300)
    assert pulled.returncode != 0 and "Traceback" not in pulled.stderr
    if "could not be pulled" not in pulled.stderr:
        pytest.fail("nvcr.io answered: this host can build the tensorrt image; extend this test")
    assert "nvcr.io/nvidia/tensorrt:" in pulled.stderr


def test_edgetpu_image_builds_or_names_corals_repository(tflite_image: str) -> None:
    """Coral's repository is unreachable on the project's machines: the build must say so. On a
    host that reaches it the image builds and holds the compiler."""
    result = run_invoke("images", "--target", "edgetpu", "--base", "bootstrap", timeout=900)
    if result.returncode == 0:
        version = docker_cli.docker("run", "--rm", "--entrypoint", "edgetpu_compiler",
                                image_definition("edgetpu").tag, "--version")
        assert "Edge TPU Compiler version" in version.stdout
    else:
        assert "Coral's package repository (https://packages.cloud.google.com) is unreachable" \
            in result.stderr
        assert "Traceback" not in result.stderr


def test_edgetpu_target_crosses_images(tflite_image: str, tmp_path: Path) -> None:
    """int8 conversion and pre-check run in the tflite image; the compile stage belongs to the
    edgetpu image. Where that image is missing (always here: Coral's repository is
    unreachable), its stage runs locally, records that the compiler is missing, and the build
    exits non-zero after writing the report."""
    if docker_cli.image_inspect(image_definition("edgetpu").tag) is not None:
        pytest.skip("the edgetpu image exists here: the compile stage runs in it")
    result = run_invoke("convert", *SAMPLE_FLAGS, "--target", "edgetpu", "--out", str(tmp_path),
                        "--runner", "docker")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "edgetpu stages run locally: the edgetpu image" in result.stdout + result.stderr
    assert "the Edge TPU compile did not run" in result.stderr
    manifest = json.loads((tmp_path / "sample" / "manifest.json").read_text())
    assert manifest["stages"]["edgetpu-int8"]["environment"]["image_id"] == tflite_image
    assert manifest["stages"]["edgetpu-check"]["runner"] == "docker"
    assert manifest["stages"]["edgetpu-compile"]["runner"] == "local"
    assert (tmp_path / "sample" / "report.json").exists()


def test_tensorrt_target_exports_onnx_in_the_tflite_image(tflite_image: str, tmp_path: Path) -> None:
    """ONNX export and Q/DQ quantization run in the tflite image; the engine stages belong to
    the tensorrt image, which cannot be built here (NGC unreachable): they run locally, record
    that TensorRT is missing, and the build exits non-zero after writing the report."""
    if docker_cli.image_inspect(image_definition("tensorrt").tag) is not None:
        pytest.skip("the tensorrt image exists here: the engine stages run in it")
    result = run_invoke("convert", *SAMPLE_FLAGS, "--target", "tensorrt", "--quant", "int8",
                        "--out", str(tmp_path), "--runner", "docker")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "tensorrt stages run locally: the tensorrt image" in result.stdout + result.stderr
    assert "tensorrt-int8 did not run here: TensorRT engines are not built here" in result.stderr
    manifest = json.loads((tmp_path / "sample" / "manifest.json").read_text())
    for stage in ("onnx-fp32", "onnx-int8", "validate-onnx-int8", "onnx-int8-tensorrt",
                  "validate-onnx-int8-tensorrt"):
        assert manifest["stages"][stage]["environment"]["image_id"] == tflite_image, stage
    assert manifest["stages"]["tensorrt-int8"]["runner"] == "local"
    report = json.loads((tmp_path / "sample" / "report.json").read_text())
    for variant in ("int8", "int8-tensorrt"):  # onnxruntime's and TensorRT's Q/DQ models
        int8 = next(a for a in report["artifacts"]
                    if a["target"] == "onnx" and a["variant"] == variant)
        assert int8["metrics"]["accuracy"] >= 0.95, variant


def test_a_failing_stage_in_the_container_is_a_clear_error(tflite_image: str, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"this is not an HDF5 file")
    result = run_invoke("convert", "--model", str(corrupt), "--dataset", str(ROOT / "dataset"),
                        "--out", str(tmp_path / "b"), "--runner", "docker")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert str(corrupt) in result.stderr
    assert not list((tmp_path / "b").rglob("*.tflite"))
    assert containers_of(tmp_path / "b") == []


def test_paths_with_colons_and_commas_and_symlinks_mean_the_same_in_both_runners(
        tflite_image: str, tmp_path: Path) -> None:
    """--mount, not --volume: a ':' or ',' in the model, dataset or --out path works in docker;
    a dataset image that is a symlink out of the folder is refused by both runners alike."""
    import shutil

    odd = tmp_path / "we:ird,place"
    shutil.copytree(ROOT / "dataset", odd / "data:set,1")
    shutil.copy(ROOT / "model" / "sample.h5", odd / "sample.h5")
    flags = ["--model", str(odd / "sample.h5"), "--dataset", str(odd / "data:set,1"),
             "--calibration-size", "8", "--validation-size", "12", "--latency-runs", "1",
             "--threads", "1", "--quant", "fp32"]
    result = run_invoke("convert", *flags, "--out", str(odd / "out:1,2"), "--runner", "docker")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--mount type=bind," in result.stdout
    assert (odd / "out:1,2" / "sample" / "tflite" / "sample_fp32.tflite").is_file()
    outside = tmp_path / "outside.png"
    circle = odd / "data:set,1" / "circle" / "0000.png"
    circle.rename(outside)
    circle.symlink_to(outside)
    for runner in ("docker", "local"):
        refused = run_invoke("convert", *flags, "--out", str(tmp_path / runner), "--runner", runner)
        assert refused.returncode != 0 and "symlinks to files outside the folder" in refused.stderr
