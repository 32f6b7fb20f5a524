"""The real-client check: every TFLite artifact through MediaPipe Tasks' ImageClassifier (for
real; skipped saying so without mediapipe, a failure under REQUIRE_MEDIAPIPE=1)."""

import dataclasses
import os
from pathlib import Path

import pytest

from converters.config import DatasetConfig, Preprocessing, PreprocessingMode, Quantization
from converters.fsutil import read_json
from converters.pipeline import build
from converters.targets.tflite import mediapipe_check
from tests.conftest import make_config

MODES = ("fp32", "fp16", "dynamic", "int8", "int8-mixed")


def require_mediapipe() -> None:
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        reason = "mediapipe is not installed (pip install '.[mediapipe]')"
        if os.environ.get("REQUIRE_MEDIAPIPE") == "1":
            pytest.fail(f"REQUIRE_MEDIAPIPE=1 but {reason}")
        pytest.skip(reason)


def test_every_artifact_classifies_in_mediapipe_with_names(tiny_h5: Path, tiny_dataset: Path,
                                                           tmp_path: Path) -> None:
    require_mediapipe()
    config = make_config(tiny_h5, tiny_dataset, tmp_path, targets=("tflite",),
                         quantizations=tuple(Quantization(mode) for mode in MODES))
    build.convert(config, ["test"])
    folder = tmp_path / "tiny"
    report = read_json(folder / "report.json")
    checked = {a["variant"]: a for a in report["artifacts"]}
    assert set(checked) == set(MODES)
    for mode, artifact in checked.items():
        entry = artifact["mediapipe"]
        assert entry["ran"] is True, (mode, entry)
        assert entry["samples"] == 12 and entry["source"] == "image files"
        assert entry["names_returned"] is True, mode
        assert entry["agrees_with_litert"] is True, (mode, entry)
        assert abs(entry["top1_agreement"] - artifact["metrics"]["top1_agreement"]) <= 0.01
        assert entry["accuracy"] == pytest.approx(artifact["metrics"]["accuracy"], abs=0.01)
        assert read_json(folder / "validation" / f"tflite_{mode}.json")["mediapipe"] == entry
    assert "MediaPipe ImageClassifier (real client): fp32 top-1 agreement" in \
        (folder / "report.md").read_text()


def test_per_channel_normalization_is_not_checked_and_says_why(tiny_h5: Path, tiny_dataset: Path,
                                                               tmp_path: Path) -> None:
    preprocessing = Preprocessing(PreprocessingMode.MEAN_STD, (120.0, 110.0, 100.0),
                                  (60.0, 50.0, 40.0))
    config = make_config(tiny_h5, tiny_dataset, tmp_path, targets=("tflite",),
                         quantizations=(Quantization.FP32,))
    config = dataclasses.replace(config, dataset=DatasetConfig(
        tiny_dataset, preprocessing=preprocessing, calibration_size=8, validation_size=12))
    build.convert(config, ["test"])
    [artifact] = read_json(tmp_path / "tiny" / "report.json")["artifacts"]
    assert artifact["metadata"]["normalization"] == {"mean": [120.0, 110.0, 100.0],
                                                     "std": [60.0, 50.0, 40.0]}
    assert artifact["metadata"]["per_channel"] is True
    assert artifact["mediapipe"]["ran"] is False
    assert "per-channel mean/std" in artifact["mediapipe"]["reason"]


def test_without_mediapipe_the_record_says_how_to_install(tiny_h5: Path, tiny_dataset: Path,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A mediapipe package that cannot be imported, first on the stage processes' path
    blocker = tmp_path / "blocker" / "mediapipe"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(blocker.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    config = make_config(tiny_h5, tiny_dataset, tmp_path / "out", targets=("tflite",),
                         quantizations=(Quantization.FP32,))
    build.convert(config, ["test"])
    [artifact] = read_json(tmp_path / "out" / "tiny" / "report.json")["artifacts"]
    assert artifact["mediapipe"] == {"ran": False, "reason": mediapipe_check.NOT_INSTALLED}
    assert f"MediaPipe ImageClassifier (real client): {mediapipe_check.NOT_INSTALLED}." in \
        (tmp_path / "out" / "tiny" / "report.md").read_text()
