"""Red-team findings of issue #11 (data loss, silent wrong results, tracebacks), through the real
command line: each test failed on the code before the fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from converters.cache import stage_cache
from converters.config import model_stem
from converters.errors import ConfigError
from tests.conftest import (
    ROOT,
    quick_flags,
    run_invoke,
    save_function_model,
    terminal_ctrl_c,
    tiny_model,
    write_images,
)
from tests.test_cli import assert_user_error


def fp32_build(model: Path, dataset: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_invoke("convert", "--model", str(model), *quick_flags(dataset, out), "--quant", "fp32",
                      *extra)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A finished fp32 build of a tiny model: (model, dataset, out)."""
    root = tmp_path_factory.mktemp("built")
    write_images(root / "data", {"a": 6, "b": 6, "c": 6})
    model = root / "m.keras"
    tiny_model().save(model)  # type: ignore[attr-defined]
    result = fp32_build(model, root / "data", root / "out")
    assert result.returncode == 0, result.stderr
    return model, root / "data", root / "out"


# --- 1-3: data loss -------------------------------------------------------------------------------

def test_clean_refuses_a_folder_that_holds_no_build(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / ".git" / "objects").mkdir(parents=True)
    (checkout / "README.md").write_text("mine")
    result = run_invoke("clean", "--out", str(checkout))
    assert_user_error(result, f"{checkout} is not a build output folder", "Nothing was removed")
    assert (checkout / ".git" / "objects").is_dir() and (checkout / "README.md").read_text() == "mine"


def test_clean_removes_build_folders_and_leaves_everything_else(tmp_path: Path, tiny_h5: Path,
                                                                 tiny_dataset: Path) -> None:
    out = tmp_path / "out"
    assert fp32_build(tiny_h5, tiny_dataset, out).returncode == 0
    (out / "notes.txt").write_text("keep me")
    (out / "mine").mkdir()
    result = run_invoke("clean", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert not (out / "tiny").exists()
    assert (out / "notes.txt").read_text() == "keep me" and (out / "mine").is_dir()
    assert f"leaving {out / 'notes.txt'}: not written by a build" in result.stdout


def test_sample_refuses_a_folder_with_foreign_files_and_force_touches_only_its_own(
        tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "holiday").mkdir(parents=True)
    (photos / "holiday" / "beach.jpg").write_bytes(b"precious")
    result = run_invoke("sample", "--dataset", str(photos), "--model-dir", str(tmp_path / "m"))
    assert_user_error(result, f"--dataset {photos} holds 1 file(s) the sample did not write",
                      "holiday/beach.jpg", "--force")
    assert (photos / "holiday" / "beach.jpg").read_bytes() == b"precious"
    assert not (tmp_path / "m").exists()

    forced = run_invoke("sample", "--dataset", str(photos), "--model-dir", str(tmp_path / "m"),
                        "--per-class", "2", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (photos / "holiday" / "beach.jpg").read_bytes() == b"precious"
    assert len(list(photos.glob("*/*.png"))) == 8 and (tmp_path / "m" / "sample.h5").is_file()


def test_model_path_with_dots_names_the_folder_it_means(tmp_path: Path, tiny_dataset: Path) -> None:
    import tensorflow as tf

    saved = save_function_model(tmp_path / "net", tf.nn.relu, size=8)
    out = tmp_path / "out"
    result = fp32_build(saved / "variables" / "..", tiny_dataset, out, "--allow-class-mismatch")
    assert result.returncode == 0, result.stderr
    assert (out / "net" / "tflite" / "net_fp32.tflite").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net", "out"]  # nothing outside --out
    with pytest.raises(ConfigError, match="no usable name"):
        model_stem(Path("/"))


# --- 8, 9: silent wrong results -------------------------------------------------------------------

def _scaled_model(path: Path, weight_scale: float, classes: int = 3) -> Path:
    """The tiny model with every Dense weight multiplied (NaN or far beyond float16's range)."""
    model = tiny_model(classes=classes)
    dense = model.layers[-1]  # type: ignore[attr-defined]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * weight_scale, bias])
    model.save(path)  # type: ignore[attr-defined]
    return path


def test_nan_reference_fails_the_build_naming_the_model(tmp_path: Path, tiny_dataset: Path) -> None:
    model = _scaled_model(tmp_path / "nan.keras", float("nan"))
    result = fp32_build(model, tiny_dataset, tmp_path / "out")
    assert_user_error(result, f"model {model} gives non-finite outputs (NaN or Inf)")
    assert not (tmp_path / "out" / "nan" / "report.json").exists()


def test_non_finite_artifact_fails_its_validation_and_json_stays_strict(
        tmp_path: Path, built: tuple[Path, Path, Path]) -> None:
    """The validate stage on a real LiteRT artifact whose outputs are NaN (square root of a
    negative number), in a real build folder whose Keras outputs are finite: that artifact
    fails, with the reason."""
    import shutil

    import tensorflow as tf

    from converters.fsutil import read_json, write_json_atomic
    from converters.reporting.report import recommend
    from converters.stages import StageContext, StageSpec, stage_function
    from converters.targets.base import ValidateParams

    model, dataset, out = built
    folder = tmp_path / "m"
    shutil.copytree(out / "m", folder)
    root_of_negative = tf.function(lambda x: tf.math.sqrt(-1.0 - tf.abs(x[:, 0, 0, :])),
                              input_signature=[tf.TensorSpec((1, 16, 16, 3), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [root_of_negative.get_concrete_function()], root_of_negative)
    (folder / "tflite" / "broken.tflite").write_bytes(converter.convert())
    record = "validation/tflite_broken.json"
    spec = StageSpec("validate-tflite-broken", "validate", "tflite",
                     ValidateParams(target="tflite", variant="broken",
                                    artifact="tflite/broken.tflite", output=record,
                                    runtime="ai-edge-litert", threads=1, latency_runs=1),
                     outputs=(record,))
    stage_function("validate")(StageContext(spec, model, dataset, folder, tmp_path / "staging"))
    result = read_json(tmp_path / "staging" / record)
    assert "non-finite outputs (NaN or Inf) on 11 of 11 validation samples" in result["failed"]
    assert result["metrics"] is None and result["latency_ms"] is None
    failed = {"path": "broken", "failed": result["failed"], "accuracy_drop": None,
              "size_bytes": 1, "latency_ms": None}
    assert recommend([failed], 1.0) == {"max_accuracy_drop": 1.0, "smallest": None,
                                        "fastest": None, "fastest_ties": [], "note": None,
                                        "rejected": ["broken"]}
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json_atomic(tmp_path / "x.json", {"value": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_failed_rebuild_marks_the_manifest_incomplete_and_verify_refuses(
        tmp_path: Path, tiny_dataset: Path) -> None:
    model = tmp_path / "m.keras"
    tiny_model(classes=3).save(model)  # type: ignore[attr-defined]
    out = tmp_path / "out"
    assert fp32_build(model, tiny_dataset, out).returncode == 0
    assert json.loads((out / "m" / "manifest.json").read_text())["complete"] is True
    tiny_model(classes=4).save(model)  # type: ignore[attr-defined]  # the rebuild will fail
    failed = fp32_build(model, tiny_dataset, out)
    assert_user_error(failed, "4 output classes")
    manifest = json.loads((out / "m" / "manifest.json").read_text())
    assert manifest["complete"] is False and "tflite-fp32" in manifest["stale_stages"]
    verify = run_invoke("verify", "--out", str(out))
    assert_user_error(verify, "the last build did not finish", "tflite-fp32")


# --- 10, 15: images -------------------------------------------------------------------------------

def _saved(image: object, path: Path) -> Path:
    image.save(path)  # type: ignore[attr-defined]
    return path


@pytest.mark.parametrize("mode,suffix,fill,expected", [
    ("1", "png", 1, 255), ("L", "png", 128, 128), ("P", "png", 7, None), ("RGB", "png", (10, 20, 30), None),
    ("RGBA", "png", (10, 20, 30, 0), None), ("CMYK", "tiff", (0, 0, 0, 0), 255),
    ("I;16", "png", 65535, 255), ("I;16", "png", 32896, 128), ("I", "tiff", 65535, 255),
    ("I", "tiff", 257 * 40, 40), ("LA", "png", (77, 255), 77),
])
def test_every_pillow_mode_reads_in_the_8_bit_range(tmp_path: Path, mode: str, suffix: str,
                                                    fill: object, expected: int | None) -> None:
    from PIL import Image

    from converters.inputs.imaging import read_pixels

    path = _saved(Image.new(mode, (6, 5), fill), tmp_path / f"image.{suffix}")  # type: ignore[arg-type]
    pixels = read_pixels(path, 5, 6, 3)
    assert pixels.shape == (5, 6, 3) and pixels.dtype == np.uint8
    if expected is not None:
        assert (pixels == expected).all(), (mode, pixels[0, 0])
    else:  # palette and colour images keep their colours
        rgb = Image.new(mode, (1, 1), fill).convert("RGB").getpixel((0, 0))  # type: ignore[arg-type]
        assert tuple(pixels[0, 0]) == rgb


def test_pa_mode_and_refused_modes() -> None:
    from PIL import Image

    from converters.inputs.imaging import eight_bit

    palette = Image.new("PA", (2, 2))
    assert eight_bit(palette) is palette and palette.convert("RGB").size == (2, 2)
    with pytest.raises(ValueError, match="32-bit float image"):
        eight_bit(Image.new("F", (2, 2), 0.5))
    with pytest.raises(ValueError, match="outside 0..65535"):
        eight_bit(Image.new("I", (2, 2), 70000))


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.6 kB PNG of 15,000 x 15,000 pixels: over twice Pillow's decompression-bomb limit."""
    from PIL import Image

    path = tmp_path_factory.mktemp("bomb") / "huge.png"
    Image.new("1", (15_000, 15_000)).save(path)
    return path


def test_decompression_bomb_is_skipped_in_the_build_and_refused_by_infer(
        tmp_path: Path, built: tuple[Path, Path, Path], bomb: Path) -> None:
    model, dataset, _ = built
    data = tmp_path / "data"
    write_images(data, {"a": 6, "b": 6, "c": 6})
    (data / "a" / "huge.png").write_bytes(bomb.read_bytes())
    out = tmp_path / "out"
    result = run_invoke("convert", "--model", str(model), "--dataset", str(data), "--out", str(out),
                        "--quant", "fp32", "--latency-runs", "1", "--runner", "local")
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr  # stage processes' warnings are streamed to stdout
    assert "huge.png" in shown and "decompression bomb" in shown
    report = json.loads((out / "m" / "report.json").read_text())
    assert report["dataset"]["unreadable"] == [str(data / "a" / "huge.png")]
    infer = run_invoke("infer", "--artifact", str(out / "m" / "tflite" / "m_fp32.tflite"),
                       "--image", str(bomb))
    assert_user_error(infer, f"cannot read image {bomb}", "decompression bomb")


# --- 11: class count ------------------------------------------------------------------------------

def test_class_folders_must_match_the_model_outputs(tmp_path: Path, built: tuple[Path, Path, Path],
                                                    ) -> None:
    model, _, _ = built
    data = tmp_path / "ten"
    write_images(data, {f"class{i}": 2 for i in range(10)})
    out = tmp_path / "out"
    result = fp32_build(model, data, out)
    assert_user_error(result, "has 10 class folders", "has 3 output classes", "--allow-class-mismatch")
    assert not any(out.rglob("*.tflite"))
    config = tmp_path / "config.yaml"  # a boolean in invoke.yaml counts too
    config.write_text("convert:\n  allow_class_mismatch: true\n")
    allowed = run_invoke("-f", str(config), "convert", "--model", str(model),
                         *quick_flags(data, out), "--quant", "fp32")
    assert allowed.returncode == 0, allowed.stderr


# --- 12, 13: filesystem errors and corrupt state --------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (the machine lets root mount one)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_and_read_only_out_give_a_message(small_tmpfs: Path, tiny_h5: Path,
                                                    tiny_dataset: Path) -> None:
    full = fp32_build(tiny_h5, tiny_dataset, small_tmpfs / "out")
    assert_user_error(full, "the disk is full")
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    read_only = fp32_build(tiny_h5, tiny_dataset, small_tmpfs / "elsewhere")
    assert_user_error(read_only, f"{small_tmpfs / 'elsewhere'}", "read-only")


def test_file_name_that_is_not_utf8(tmp_path: Path, built: tuple[Path, Path, Path]) -> None:
    model, dataset, _ = built
    data = tmp_path / "data"
    write_images(data, {"a": 4, "b": 4, "c": 4})
    (data / "a" / "000.png").rename(os.fsdecode(bytes(data / "a") + b"/\xff\xfe.png"))
    result = fp32_build(model, data, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "m" / "report.json").read_text())
    assert report["dataset"]["images_found"] == 12


def test_corrupt_stamp_manifest_and_report_are_named(tmp_path: Path, tiny_h5: Path,
                                                     tiny_dataset: Path) -> None:
    out = tmp_path / "out"
    assert fp32_build(tiny_h5, tiny_dataset, out).returncode == 0
    folder = out / "tiny"
    stamp = folder / ".stages" / "tflite-fp32.json"
    stamp.write_text(stamp.read_text()[:20])
    rebuilt = fp32_build(tiny_h5, tiny_dataset, out)
    assert rebuilt.returncode == 0 and "▶ tiny: tflite-fp32" in rebuilt.stdout
    (folder / "manifest.json").write_text('{"artifacts": {')
    assert_user_error(run_invoke("verify", "--out", str(out)),
                      f"{folder / 'manifest.json'} is not valid JSON")
    (folder / "report.json").write_text("{")
    assert_user_error(run_invoke("report", "--out", str(out)),
                      f"{folder / 'report.json'} is not valid JSON")


# --- 14: configuration ----------------------------------------------------------------------------

def test_null_values_in_invoke_yaml_mean_the_default_and_models_may_be_one_string(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"convert:\n  models: {tiny_h5}\n  quant: null\n  dataset: {tiny_dataset}\n"
                      "  threads: null\n  runner: null\n")
    result = run_invoke("-f", str(config), "convert", "--out", str(tmp_path / "out"),
                        "--calibration-size", "4", "--validation-size", "4", "--latency-runs", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "tiny" / "report.json").read_text())
    assert [a["variant"] for a in report["artifacts"]] == ["fp32", "fp16", "dynamic", "int8"]


@pytest.mark.parametrize("flags,yaml,fragment", [
    (["--seed", "-1"], "", "--seed must be between 0 and 4294967295, got -1"),
    (["--threads", "0"], "", "--threads must be between 1 and 1024, got 0"),
    ([], "  threads: 0\n", "--threads must be between 1 and 1024, got 0"),
    ([], "  seed: 1.5\n", "--seed (invoke.yaml: seed) must be a whole number, got 1.5"),
    (["--opset", "0"], "", "--opset must be between 13 and 18, got 0"),
    (["--num-segments", "0"], "", "--num-segments must be between 1 and 64, got 0"),
    (["--workspace-mb", "0"], "", "--workspace-mb must be between 1 and 1048576, got 0"),
    (["--volume", "vol", "--runner", "local"], "", "--volume vol applies to the docker runner"),
])
def test_bad_settings_are_refused_the_same_from_a_flag_or_invoke_yaml(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path, flags: list[str], yaml: str,
        fragment: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("convert:\n" + yaml if yaml else "convert: {}\n")
    result = run_invoke("-f", str(config), "convert", "--model", str(tiny_h5), "--dataset",
                        str(tiny_dataset), "--out", str(tmp_path / "out"), *flags)
    assert_user_error(result, fragment)
    assert not (tmp_path / "out").exists()


# --- 16, 17, 19: rejected inputs leave nothing ---------------------------------------------------

def test_rejected_model_leaves_nothing_and_verify_of_nothing_fails(tmp_path: Path,
                                                                   tiny_dataset: Path) -> None:
    import keras

    inputs = keras.Input((None, 3))  # a sequence of any length: no static size
    pooled = keras.layers.GlobalAveragePooling1D()(inputs)
    dynamic = tmp_path / "dynamic.keras"
    keras.Model(inputs, keras.layers.Dense(3)(pooled)).save(dynamic)
    out = tmp_path / "out"
    assert_user_error(fp32_build(dynamic, tiny_dataset, out), "has no static size (None, None, 3)",
                      "--input-shape")
    assert not out.exists()
    empty = tmp_path / "empty" / "m"
    (empty / ".stages").mkdir(parents=True)
    (empty / "manifest.json").write_text('{"artifacts": {}, "stages": {}}')
    assert_user_error(run_invoke("verify", "--out", str(empty.parent)), "holds no artifact")


def test_symlink_out_of_the_dataset_and_out_inside_it_are_refused(tmp_path: Path,
                                                                  tiny_h5: Path) -> None:
    data = tmp_path / "data"
    write_images(data, {"a": 3, "b": 3, "c": 3})
    outside = tmp_path / "elsewhere.png"
    (data / "a" / "000.png").rename(outside)
    (data / "a" / "000.png").symlink_to(outside)
    assert_user_error(fp32_build(tiny_h5, data, tmp_path / "out"),
                      "are symlinks to files outside the folder", str(data / "a" / "000.png"))
    (data / "a" / "000.png").unlink()
    assert_user_error(fp32_build(tiny_h5, data, data / "build"), "is inside --dataset")
    assert not (data / "build").exists()


# --- 20: Ctrl-C -----------------------------------------------------------------------------------

def test_ctrl_c_ends_the_stage_process_at_once_without_a_traceback(tmp_path: Path,
                                                                   tiny_dataset: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    # ResNet50 64x64: its fp32 conversion takes about 6 s (a MobileNetV2's under a second)
    wide = keras.applications.ResNet50(input_shape=(64, 64, 3), weights=None, classes=3)
    model = tmp_path / "wide.keras"
    wide.save(model)
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert", "--model",
         str(model), *quick_flags(tiny_dataset, tmp_path / "out"), "--quant", "int8"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=terminal_ctrl_c)
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "▶ wide: tflite-fp32" in line:
            break
    time.sleep(1.5)  # inside the fp32 conversion
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    elapsed = time.monotonic() - interrupted
    output = "".join(seen) + rest
    assert process.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert elapsed < 3.0, f"the build took {elapsed:.1f} s to stop"
    assert "✔ wide: tflite-fp32" not in output
    assert not (tmp_path / "out" / "wide" / "tflite" / "wide_fp32.tflite").exists()


# --- 21: verify -----------------------------------------------------------------------------------

def test_verify_checks_stamps_not_only_the_manifest(tmp_path: Path, tiny_h5: Path,
                                                    tiny_dataset: Path) -> None:
    out = tmp_path / "out"
    assert fp32_build(tiny_h5, tiny_dataset, out).returncode == 0
    folder = out / "tiny"
    assert run_invoke("verify", "--out", str(out)).returncode == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["artifacts"]["tflite/tiny_fp32.tflite"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    artifact = folder / "tflite" / "tiny_fp32.tflite"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    assert_user_error(run_invoke("verify", "--out", str(out)), f"{artifact}: sha256",
                      "recorded in a stamp but not the manifest")
    (folder / "tflite" / "extra.tflite").write_bytes(b"x")
    _, problems = stage_cache.verify_build_dir(folder)
    extra = folder / "tflite" / "extra.tflite"
    assert f"{extra}: not written by any stage of the build (no stamp records it)" in problems
