"""Runner choice and engine problems, without needing an engine: DOCKER_HOST points at a socket
that does not exist, which is what a stopped daemon looks like to the docker CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, run_invoke

SAMPLE = ["--model", str(ROOT / "model" / "sample.h5"), "--dataset", str(ROOT / "dataset"),
          "--quant", "fp32", "--validation-size", "8", "--calibration-size", "8",
          "--latency-runs", "2"]


@pytest.fixture
def engine_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")


def test_docker_runner_with_the_engine_down_says_how_to_start_it(engine_down: None,
                                                                 tmp_path: Path) -> None:
    result = run_invoke("convert", *SAMPLE, "--out", str(tmp_path / "b"), "--runner", "docker")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--runner docker: the Docker engine does not answer" in result.stderr
    assert "sudo dockerd" in result.stderr and "--runner local" in result.stderr
    assert not (tmp_path / "b").exists()


def test_auto_runner_with_the_engine_down_runs_locally_and_says_why(engine_down: None,
                                                                   tmp_path: Path) -> None:
    result = run_invoke("convert", *SAMPLE, "--out", str(tmp_path / "b"), "--runner", "auto")
    assert result.returncode == 0, result.stderr
    assert "runner auto: every stage runs locally because the Docker engine does not answer" \
        in result.stdout
    manifest = (tmp_path / "b" / "sample" / "manifest.json").read_text()
    assert '"runner": "local"' in manifest and '"runner": "docker"' not in manifest


def test_images_with_the_engine_down_fails_clearly(engine_down: None) -> None:
    result = run_invoke("images", "--target", "tflite")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the Docker engine does not answer" in result.stderr


def test_no_docker_command_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    from converters.runners import docker_cli

    monkeypatch.setattr(docker_cli, "DEBIAN_DOCKER_CLI", Path("/nonexistent/docker"))
    monkeypatch.setenv("PATH", "/nonexistent")
    problem = docker_cli.engine_problem()
    assert problem is not None and "apt-get install docker.io" in problem


def test_unknown_image_target_is_refused() -> None:
    result = run_invoke("images", "--target", "cuda")
    assert result.returncode != 0
    assert "unknown image 'cuda': expected one of tflite, edgetpu, tensorrt" in result.stderr
