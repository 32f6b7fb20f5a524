"""Red-team findings on inputs (array files, labels, settings, keys, bundles), through the real
command line where a user meets them: each test failed on the code before its fix."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, quick_flags, run_invoke, tiny_model
from tests.test_cli import assert_user_error

CLASSES = 4
SIZE = 8  # the tiny model takes 8 x 8 x 3 images
SHAPE = (SIZE, SIZE, 3)


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A .npy header (format 1.0) declaring ``shape`` of ``dtype``."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1")


def zip_bomb(path: Path, member: str, samples: int) -> Path:
    """A real .npz of zeros: ``samples`` float32 images, deflated about 1000:1 (written in
    chunks, so making it takes little memory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive, \
            archive.open(member + ".npy", "w", force_zip64=True) as handle:
        handle.write(npy_header((samples, *SHAPE)))
        chunk = bytes(16 << 20)
        left = samples * math.prod(SHAPE) * 4
        while left:
            handle.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))
    return path


def peak_rss_mb(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``invoke ARGS`` and the peak resident memory (MiB) of the processes it ran, measured in
    a fresh parent so that nothing else this test session ran counts."""
    measure = ("import resource, subprocess, sys\n"
               "result = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stdout.write(result.stdout)\nsys.stderr.write(result.stderr)\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(result.returncode)\n")
    result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "invoke",
                             "--search-root", str(ROOT), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    *stderr, peak = result.stderr.rstrip("\n").split("\n")
    return (subprocess.CompletedProcess(result.args, result.returncode, result.stdout,
                                        "\n".join(stderr)), int(peak) / 1024)


def samples(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4-class model built (fp32) from a labelled .npz dataset: (model, its tflite artifact)."""
    root = tmp_path_factory.mktemp("built")
    model = root / "four.keras"
    tiny_model(size=SIZE, classes=CLASSES).save(model)  # type: ignore[attr-defined]
    np.savez(root / "data.npz", image=samples(20), labels=np.arange(20) % CLASSES)
    result = run_invoke("convert", "--model", str(model), *quick_flags(root / "data.npz",
                                                                        root / "out"),
                        "--quant", "fp32")
    assert result.returncode == 0, result.stderr
    return model, root / "out" / "four" / "tflite" / "four_fp32.tflite"


def bundle_runner(folder: Path) -> Path:
    """A bundle's run.py with the code it ships beside and a bundle.json for the 4-class model:
    what a device runs. Arrays are refused before the runtime is loaded, so no artifact is
    needed to check them."""
    from converters.bundles.bundle import shipped_code

    folder.mkdir()
    for name, source in shipped_code("converters.targets.tflite.device_runner").items():
        shutil.copy(source, folder / name)
    (folder / "bundle.json").write_text(json.dumps({
        "runtime": "litert", "artifact": "missing.tflite", "preprocessing": None,
        "class_names": ["a", "b", "c", "d"],
        "model": {"input_shape": list(SHAPE),
                  "inputs": [{"name": "image", "shape": list(SHAPE), "dtype": "float32"}]}}))
    return folder / "run.py"


def run_py(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=120)


# --- a .npz zip bomb and a .npy that declares 240 GB ---------------------------------------------

def test_zip_bomb_is_refused_from_its_header_in_bounded_memory(
        tmp_path: Path, built: tuple[Path, Path]) -> None:
    _, artifact = built
    bomb = zip_bomb(tmp_path / "bomb.npz", "image", 800_000)  # 586 MiB of zeros in 0.6 MB
    assert bomb.stat().st_size < 1 << 20
    result, peak = peak_rss_mb("infer", "--artifact", str(artifact), "--arrays", str(bomb),
                               "--max-array-mb", "100")
    assert_user_error(result, f"member 'image' of input file {bomb} declares shape "
                      "(800000, 8, 8, 3) of float32: 585.9 MiB once read, over the limit of "
                      "100 MiB for array files", "--max-array-mb N (invoke.yaml: max_array_mb)")
    assert peak < 400, f"infer peaked at {peak:.0f} MiB on a bomb it refused"
    convert = run_invoke("convert", "--model", str(built[0]), "--dataset", str(bomb),
                         "--out", str(tmp_path / "out"), "--max-array-mb", "100")
    assert_user_error(convert, f"member 'image' of dataset {bomb} declares shape (800000, 8, 8, "
                      "3) of float32: 585.9 MiB")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    device = run_py(bundle_runner(tmp_path / "bundle"), str(bomb), "--max-array-mb", "100")
    assert device.returncode == 2 and "Traceback" not in device.stderr, device.stderr
    assert f"member 'image' of {bomb} declares shape (800000, 8, 8, 3) of float32: 585.9 MiB " \
           "once read, over the limit of 100 MiB for array files. If the file is what you " \
           "meant, raise the limit with --max-array-mb N" in device.stderr


def test_npy_declaring_240_gb_is_refused_under_the_default_limit(
        tmp_path: Path, built: tuple[Path, Path]) -> None:
    huge = tmp_path / "huge.npy"
    huge.write_bytes(npy_header((100_000, 100_000, 3), "<f8") + bytes(64))
    result = run_invoke("infer", "--artifact", str(built[1]), "--arrays", str(huge))
    assert_user_error(result, f"the array in input file {huge} declares shape (100000, 100000, 3) "
                      "of float64: 223.5 GiB once read, over the limit of 2048 MiB")
    folder = tmp_path / "samples"
    folder.mkdir()
    np.save(folder / "0.npy", samples(1)[0])
    shutil.copy(huge, folder / "1.npy")
    convert = run_invoke("convert", "--model", str(built[0]), "--dataset", str(folder),
                         "--out", str(tmp_path / "out"))
    assert_user_error(convert, f"the array in sample {folder / '1.npy'} declares shape "
                      "(100000, 100000, 3) of float64: 223.5 GiB")
    device = run_py(bundle_runner(tmp_path / "bundle"), str(huge))
    assert device.returncode == 2 and "223.5 GiB once read" in device.stderr, device.stderr


# --- values a cast would silently change ---------------------------------------------------------

def test_non_finite_complex_and_out_of_range_arrays_are_refused_naming_the_array(
        tmp_path: Path, built: tuple[Path, Path]) -> None:
    _, artifact = built
    infinite = np.full((1, *SHAPE), np.inf, np.float32)
    cases = {
        "inf.npz": ({"image": infinite}, "array 'image' in {path} holds 192 non-finite value(s) "
                    "(NaN or Inf; the first, inf, at index (0, 0, 0, 0)); the model input takes "
                    "finite float32 values"),
        "nan.npz": ({"image": np.where(np.arange(192).reshape(1, *SHAPE) == 5, np.nan,
                                       samples(1))}, "holds 1 non-finite value(s) (NaN or Inf; "
                    "the first, nan, at index (0, 0, 1, 2))"),
        "complex.npz": ({"image": samples(1) + 1j}, "array 'image' in {path} holds complex "
                        "numbers (complex64); the model input takes real float32 values"),
        "huge.npz": ({"image": np.full((1, *SHAPE), 1e39)}, "array 'image' in {path} holds "
                     "values from 1e+39 to 1e+39, outside the range of the model input's float32"),
    }
    runner = bundle_runner(tmp_path / "bundle")
    for name, (arrays, message) in cases.items():
        path = tmp_path / name
        np.savez(path, **arrays)
        result = run_invoke("infer", "--artifact", str(artifact), "--arrays", str(path))
        assert_user_error(result, message.format(path=path))
        assert not result.stdout  # nothing printed for an input that was refused
        device = run_py(runner, str(path))
        assert device.returncode == 2 and message.format(path=path) in device.stderr, \
            device.stderr


# --- what a message lists ------------------------------------------------------------------------

def test_a_npz_with_20000_members_gets_a_short_message(tmp_path: Path,
                                                       built: tuple[Path, Path]) -> None:
    crowded = tmp_path / "crowded.npz"
    np.savez(crowded, **{f"array{index:05d}": np.zeros(1, np.float32) for index in range(20_000)})
    result = run_invoke("infer", "--artifact", str(built[1]), "--arrays", str(crowded))
    assert_user_error(result, "arrays found: array00000, array00001,", "array00009, ... and "
                      "19990 more")
    assert len(result.stderr) < 2000, len(result.stderr)
    device = run_py(bundle_runner(tmp_path / "bundle"), str(crowded))
    assert device.returncode == 2 and "array00009, ... and 19990 more" in device.stderr
    assert len(device.stderr) < 2000, len(device.stderr)


# --- symlinks out of an array-sample folder ------------------------------------------------------

def test_array_sample_folder_refuses_symlinks_out_of_it_as_image_folders_do(
        tmp_path: Path, built: tuple[Path, Path]) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    for index in range(3):
        np.save(folder / f"{index}.npy", samples(1, seed=index)[0])
    outside = tmp_path / "secret.npy"
    np.save(outside, samples(1)[0])
    (folder / "3.npy").symlink_to(outside)
    result = run_invoke("convert", "--model", str(built[0]), "--dataset", str(folder),
                        "--out", str(tmp_path / "out"))
    assert_user_error(result, f"dataset {folder}: 1 sample(s) are symlinks to files outside the "
                      f"folder (first: {folder / '3.npy'} → {outside})")
    assert not (tmp_path / "out").exists()


# --- labels outside the model's classes ----------------------------------------------------------

def test_labels_outside_the_models_classes_are_refused_naming_values_and_samples(
        tmp_path: Path, built: tuple[Path, Path]) -> None:
    model, _ = built
    labels = np.arange(20) % CLASSES
    labels[[1, 2, 3, 5, 8, 13]] = [7, -1, 7, -1, 7, -1]
    dataset = tmp_path / "data.npz"
    np.savez(dataset, image=samples(20), labels=labels)
    result = run_invoke("convert", "--model", str(model), *quick_flags(dataset, tmp_path / "out"),
                        "--quant", "fp32")
    assert_user_error(result, f"the labels of dataset {dataset} hold values outside the 4 classes "
                      "(0 to 3) of the model output '", "': -1, 7, in 4 validation sample(s) "
                      "(data.npz[2], data.npz[13], data.npz[3], data.npz[8]). Accuracy would count "
                      "them as wrong predictions")
    report = tmp_path / "out" / "four" / "report.json"
    assert not report.exists()  # no accuracy was reported
    labels[[1, 2, 3, 5, 8, 13]] = [3, 0, 3, 0, 3, 0]
    np.savez(dataset, image=samples(20), labels=labels)
    again = run_invoke("convert", "--model", str(model), *quick_flags(dataset, tmp_path / "out"),
                       "--quant", "fp32")
    assert again.returncode == 0, again.stderr
    assert json.loads(report.read_text())["reference"]["accuracy"] is not None


# --- numbers out of range, and files that never end ----------------------------------------------

HUGE = "99999999999999999999999"


@pytest.mark.parametrize("flags,fragment", [
    (["--preprocessing", "mean-std", "--mean", "nan,0,0", "--std", "1,1,1"],
     "--mean must be finite numbers (no nan or inf), got nan,0.0,0.0"),
    (["--mean", "1,2", "--std", "1,2"],
     "--mean must give one value per image channel (1, 3 or 4 values), got 2"),
    (["--preprocessing", "mean-std", "--mean", "1,2,3", "--std", "1,1,inf"],
     "--std must be finite numbers (no nan or inf), got 1.0,1.0,inf"),
    (["--mean", "1,2,3", "--std", "1,1,1", "--input-shape", "16,16,1"],
     "--mean/--std give 3 values but the model has 1 input channels"),
    (["--latency-runs", HUGE], f"--latency-runs must be between 1 and 10000, got {HUGE}"),
    (["--calibration-size", "100001"], "--calibration-size must be between 1 and 100000"),
    (["--seed", str(2**32)], "--seed must be between 0 and 4294967295, got 4294967296"),
    (["--max-accuracy-drop", "nan"], "--max-accuracy-drop (invoke.yaml: max_accuracy_drop) "
                                     "must be a finite number, got 'nan'"),
    (["--jobs", HUGE], f"-j/--jobs must be between 1 and 256, got {HUGE}"),
    (["--batch", "1,8,100000"], "--batch must be min,opt,max with 1 <= min <= opt <= max <= "
                                "4096, got 1,8,100000"),
    (["--input-shape", "100000,100000,3"], "--input-shape '100000,100000,3' is over the "
                                           "268435456 values (1 GiB of float32)"),
    (["--max-array-mb", "0"], "--max-array-mb must be between 1 and 1048576, got 0"),
    (["--compiler-timeout", "1" * 400], "--compiler-timeout must be between 1 and 86400, got "
                                        + "1" * 40 + "…"),
])
def test_numbers_out_of_range_are_refused_before_anything_runs(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path, flags: list[str], fragment: str) -> None:
    result = run_invoke("convert", "--model", str(tiny_h5), "--dataset", str(tiny_dataset),
                        "--out", str(tmp_path / "out"), *flags)
    assert_user_error(result, fragment)
    assert len(result.stderr) < 1000
    assert not (tmp_path / "out").exists()


def test_other_tasks_refuse_numbers_out_of_range(tmp_path: Path, built: tuple[Path, Path]) -> None:
    prune = run_invoke("cache-prune", "--cache-dir", str(tmp_path), "--max-size", "9" * 400)
    assert_user_error(prune, "--max-size must be at most 1048576T (1 EiB), got '" + "9" * 40)
    assert len(prune.stderr) < 1000
    for threads in ("0", "100000"):
        infer = run_invoke("infer", "--artifact", str(built[1]), "--arrays", str(tmp_path / "x.npz"),
                           "--threads", threads)
        assert_user_error(infer, f"--threads must be between 1 and 1024, got {threads}")
    infer = run_invoke("infer", "--artifact", str(built[1]), "--arrays", str(tmp_path / "x.npz"),
                       "--max-array-mb", "-5")
    assert_user_error(infer, "--max-array-mb must be between 1 and 1048576, got -5")
    device = run_py(bundle_runner(tmp_path / "bundle"), str(tmp_path / "x.npz"), "--top-k", HUGE)
    assert device.returncode == 2 and "--top-k: must be at most 1048576 (how many classes to " \
        f"print), got {HUGE}" in device.stderr, device.stderr


def test_keys_and_archives_that_are_not_regular_files_are_refused_at_once(
        tmp_path: Path) -> None:
    import os

    from converters.bundles.signing import load_signing_key
    from converters.errors import ConfigError

    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(b"not read")
    verify = ROOT / "converters" / "bundles" / "verify.py"
    for key in ("/dev/zero", str(tmp_path)):
        refused = run_invoke("verify-bundle", str(archive), "--public-key", key, timeout=60)
        assert_user_error(refused, f"the public key {key} is not a regular file: pass the PEM file")
        device = subprocess.run([sys.executable, "-I", "-S", str(verify), str(archive),
                                 "--public-key", key], capture_output=True, text=True, timeout=60)
        assert device.returncode == 1, device.stderr
        assert f"error: the public key {key} is not a regular file" in device.stderr
    big = tmp_path / "big.pem"
    big.write_bytes(b"-" * (1 << 20))
    assert_user_error(run_invoke("verify-bundle", str(archive), "--public-key", str(big)),
                      f"the public key {big} is larger than 16.0 KiB, which no PEM key is")
    with pytest.raises(ConfigError, match="the signing key /dev/zero is not a regular file"):
        load_signing_key(Path("/dev/zero"))
    fifo = tmp_path / "fifo.tar.gz"
    os.mkfifo(fifo)
    assert_user_error(run_invoke("verify-bundle", str(fifo), timeout=60),
                      f"bundle {fifo} is not a regular file")
    os.mkfifo(tmp_path / "fifo.npz")
    device = run_py(bundle_runner(tmp_path / "bundle"), str(tmp_path / "fifo.npz"))
    assert device.returncode == 2 and f"{tmp_path / 'fifo.npz'} is not a regular file" in \
        device.stderr, device.stderr
    os.mkfifo(tmp_path / "fifo.h5")
    model = run_invoke("convert", "--model", str(tmp_path / "fifo.h5"), "--dataset",
                       str(tmp_path), timeout=60)
    assert_user_error(model, f"model {tmp_path / 'fifo.h5'} is not a regular file")


# --- an extracted bundle -------------------------------------------------------------------------

def test_verify_py_in_an_extracted_bundle_refuses_an_extra_folder_and_a_fifo(tmp_path: Path) -> None:
    import hashlib
    import os

    root = tmp_path / "bundle"
    (root / "artifacts").mkdir(parents=True)
    shutil.copy(ROOT / "converters" / "bundles" / "verify.py", root / "verify.py")
    (root / "artifacts" / "model.tflite").write_bytes(b"model")
    files = {name: {"sha256": hashlib.sha256((root / name).read_bytes()).hexdigest(),
                    "size": (root / name).stat().st_size}
             for name in ("verify.py", "artifacts/model.tflite")}
    (root / "bundle.json").write_text(json.dumps({"name": "bundle", "files": files}))

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-I", "-S", str(root / "verify.py")],
                              capture_output=True, text=True, timeout=60)

    assert verify().returncode == 0, verify().stderr
    (root / "artifacts" / "extra").mkdir()
    extra = verify()
    assert extra.returncode == 1 and "error: 'artifacts/extra' is a folder that holds no file " \
        "bundle.json lists: refusing the bundle" in extra.stderr, extra.stderr
    (root / "artifacts" / "extra").rmdir()
    os.mkfifo(root / "pipe")
    fifo = verify()
    assert fifo.returncode == 1 and "error: 'pipe' is a FIFO, socket, device or other special " \
        "file" in fifo.stderr, fifo.stderr


# --- misspelled keys and empty values ------------------------------------------------------------

def test_a_misspelled_invoke_yaml_key_is_refused_with_the_nearest_name(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("convert:\n  calibraton_size: 5\n  quant: fp32\n")
    result = run_invoke("-f", str(config), "convert", "--model", str(tiny_h5), "--dataset",
                        str(tiny_dataset), "--out", str(tmp_path / "out"))
    assert_user_error(result, "invoke.yaml's convert section has an unknown key 'calibraton_size' "
                      "(did you mean 'calibration_size'?)")
    assert not (tmp_path / "out").exists()
    report = run_invoke("-f", str(config), "report", "--out", str(tmp_path))
    assert_user_error(report, "unknown key 'calibraton_size'")  # every task reading the section


@pytest.mark.parametrize("task,flags,fragment", [
    ("convert", ["--quant", ""], "--quant is empty: give a value, or leave the flag out"),
    ("convert", ["--target", ""], "--target is empty"),
    ("convert", ["--out", ""], "--out is empty"),
    ("convert", ["--model", ""], "--model (invoke.yaml: model) must be a list of non-empty paths"),
    ("convert", ["--jobs", ""], "--jobs is empty"),
    ("clean", ["--out", ""], "--out is empty"),
    ("cache-prune", ["--max-size", "1G", "--cache-dir", ""], "--cache-dir is empty"),
    ("bundle", ["--target", "tflite", "--dist", ""], "--dist is empty"),
    ("sample", ["--model-dir", ""], "--model-dir is empty"),
    ("infer", ["--artifact", "a.tflite", "--arrays", "x.npz", "--max-array-mb", ""],
     "--max-array-mb is empty"),
])
def test_empty_flag_values_are_refused_naming_the_flag(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path, task: str, flags: list[str],
        fragment: str) -> None:
    extra = ["--model", str(tiny_h5), "--dataset", str(tiny_dataset)] if task == "convert" and \
        "--model" not in flags else []
    result = run_invoke(task, *extra, *flags, cwd=tmp_path)
    assert_user_error(result, fragment)
    assert list(tmp_path.iterdir()) == []  # nothing written where "" would have pointed


def test_messages_about_many_models_or_outputs_list_ten(tmp_path: Path) -> None:
    from converters.errors import ValidationError
    from converters.validation import metrics

    for index in range(50):
        (tmp_path / f"model{index:02d}").mkdir()
        (tmp_path / f"model{index:02d}" / "report.json").write_text("{}")
    result = run_invoke("report", "--out", str(tmp_path), "--model", "nosuch")
    assert_user_error(result, "built models: model00, model01, model02, model03, model04, "
                      "model05, model06, model07, model08, model09, ... and 40 more. Pass one")
    reference = {f"out{index}": np.zeros((1, 2)) for index in range(1000)}
    with pytest.raises(ValidationError) as refused:
        metrics.compare(reference, {"other": np.zeros((1, 2))}, {}, None)
    assert "no output named out0, out1, out2, out3, out4, out5, out6, out7, out8, out9, ... and " \
        "990 more (it has other)" in str(refused.value)


def _model_with_a_layer_of_zeros(path: Path) -> Path:
    """A layer whose output is 0 for every input (zero weights), then layers fed by it."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Dense(4, kernel_initializer="zeros")(keras.layers.Flatten()(inputs))
    x = keras.layers.Dense(4, activation="tanh")(keras.layers.Dense(4, activation="tanh")(x))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    return path


def test_an_int8_model_litert_cannot_run_fails_its_variant_with_the_reason(
        tmp_path: Path, tiny_dataset: Path) -> None:
    """A layer of zeros quantizes (by TF's converter or ai-edge-quantizer) to int8 tensors
    that XNNPACK, LiteRT's default CPU kernels, refuses to prepare: the int8 variants fail
    with LiteRT's reason and a hint, no traceback; fp32 is still built and validated."""
    model = _model_with_a_layer_of_zeros(tmp_path / "zeros.keras")
    result = run_invoke("convert", "--model", str(model), *quick_flags(tiny_dataset, tmp_path),
                        "--quant", "fp32,int8,int8-mixed")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    for variant in ("int8", "int8-mixed"):
        assert f"zeros: tflite-{variant} failed: LiteRT cannot run the quantized model: " \
               "failed to create XNNPACK runtimeNode" in output, output
    assert "outputs only zeros on the calibration samples" in output
    report = json.loads((tmp_path / "zeros" / "report.json").read_text())
    assert [a["variant"] for a in report["artifacts"] if not a.get("failed")] == ["fp32"]


def test_validating_an_artifact_litert_cannot_run_names_it_and_why(tmp_path: Path) -> None:
    import tensorflow as tf

    from converters.errors import ValidationError
    from converters.validation.compare import TFLiteRuntime

    model = tf.keras.models.load_model(_model_with_a_layer_of_zeros(tmp_path / "zeros.keras"))
    samples = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    artifact = tmp_path / "zeros_int8.tflite"
    artifact.write_bytes(converter.convert())
    runtime = TFLiteRuntime(artifact, threads=1)
    with pytest.raises(ValidationError, match=r"LiteRT cannot run .*zeros_int8\.tflite: failed "
                                              r"to create XNNPACK runtimeNode .* only zeros"):
        runtime.predict_named({runtime.input_tensors[0].name: samples})


def test_litert_messages_are_said_once_and_only_xnnpack_refusals_get_the_hint() -> None:
    from converters.errors import runtime_message, xnnpack_refusal

    refused = RuntimeError("failed to create XNNPACK runtimefailed to create XNNPACK runtime"
                           "Node number 16 (TfLiteXNNPackDelegate) failed to prepare.")
    assert runtime_message(refused) == ("failed to create XNNPACK runtimeNode number 16 "
                                        "(TfLiteXNNPackDelegate) failed to prepare")
    assert (xnnpack_refusal(refused) or "").endswith("check the model's activations")
    assert xnnpack_refusal(RuntimeError("There is at least 1 reference to internal data")) is None
    assert runtime_message(RuntimeError("a" * 32 + " 0000000000000000.")) == "a" * 32 + " " + "0" * 16
