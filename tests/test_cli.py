"""Bad inputs and a full build through the real ``invoke`` command line."""

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, quick_flags, run_invoke

pytestmark = pytest.mark.quick  # part of `invoke test --quick`


def assert_user_error(result: object, *fragments: str) -> None:
    assert result.returncode != 0  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    for fragment in fragments:
        assert fragment in stderr, stderr
    assert "Traceback" not in stderr + result.stdout  # type: ignore[attr-defined]


@pytest.mark.parametrize("setup,flags,fragments", [
    ("missing", ["--model", "{tmp}/missing.h5"], ["missing.h5 does not exist"]),
    ("extension", ["--model", "{tmp}/weights.pt"], ["unsupported extension '.pt'"]),
    ("none", ["--model", "{h5}", "--dataset", "{tmp}/nothing"], ["nothing does not exist"]),
    ("empty", ["--model", "{h5}", "--dataset", "{tmp}/empty"], ["holds no images"]),
    ("none", ["--model", "{h5}", "--quant", "int4"], ["unknown quantization mode 'int4'"]),
    ("none", ["--model", "{h5}", "--io-dtype", "int16"], ["unknown --io-dtype 'int16'"]),
    ("none", ["--model", "{h5}", "--preprocessing", "mean-std"], ["needs --mean and --std"]),
    ("none", ["--model", "{h5}", "--input-shape", "12,0"], ["must be positive sizes"]),
])
def test_bad_input_gives_message_and_nonzero_exit_before_writing(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path, setup: str, flags: list[str],
        fragments: list[str]) -> None:
    (tmp_path / "weights.pt").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    out = tmp_path / "build"
    args = [f.format(tmp=tmp_path, h5=tiny_h5) for f in flags]
    if "--dataset" not in args:
        args += ["--dataset", str(tiny_dataset)]
    result = run_invoke("convert", *args, "--out", str(out))
    assert_user_error(result, *fragments)
    assert not any(out.rglob("*.tflite"))


def test_corrupt_model_and_lambda_without_unsafe(tmp_path: Path, tiny_dataset: Path) -> None:
    import keras

    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    result = run_invoke("convert", "--model", str(corrupt), *quick_flags(tiny_dataset, tmp_path))
    assert_user_error(result, f"cannot load model {corrupt}")

    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t)(inputs)))
    path = tmp_path / "lam.keras"
    keras.Model(inputs, outputs).save(path)
    result = run_invoke("convert", "--model", str(path), *quick_flags(tiny_dataset, tmp_path))
    assert_user_error(result, "needs unsafe deserialisation", "--unsafe")
    assert not any(tmp_path.rglob("*.tflite"))
    result = run_invoke("convert", "--model", str(path), "--unsafe", "--quant", "fp32",
                        *quick_flags(tiny_dataset, tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "lam" / "tflite" / "lam_fp32.tflite").is_file()


def test_convert_report_and_infer_from_the_command_line(tmp_path: Path, tiny_keras: Path,
                                                        tiny_dataset: Path) -> None:
    out = tmp_path / "build"
    result = run_invoke("convert", "--model", str(tiny_keras), *quick_flags(tiny_dataset, out))
    assert result.returncode == 0, result.stderr
    # The tiny model is untrained: its Keras accuracy is near chance, so nothing is recommended.
    assert "No recommendation: the Keras reference itself is near chance" in result.stderr
    report = json.loads((out / "tiny" / "report.json").read_text())
    assert [a["variant"] for a in report["artifacts"]] == ["fp32", "fp16", "dynamic", "int8"]
    again = run_invoke("report", "--out", str(out))
    assert again.returncode == 0 and "tflite int8" in again.stdout
    image = next((tiny_dataset / "b").iterdir())
    inferred = run_invoke("infer", "--artifact", str(out / "tiny/tflite/tiny_int8.tflite"),
                          "--image", str(image), "--top-k", "2")
    assert inferred.returncode == 0, inferred.stderr
    lines = inferred.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in {"a", "b", "c"}
    missing = run_invoke("infer", "--artifact", str(out / "nope.tflite"), "--image", str(image))
    assert_user_error(missing, "nope.tflite does not exist")


def test_every_task_has_help() -> None:
    for task in ("convert", "report", "infer", "sample", "test", "verify", "clean", "images",
                 "edgetpu-check"):
        result = run_invoke("--help", task)
        assert result.returncode == 0 and "Docstring:" in result.stdout, task
    listing = run_invoke("--list", cwd=ROOT).stdout
    assert "convert" in listing and "sample" in listing


def test_model_shape_problems_from_the_command_line(tmp_path: Path, tiny_dataset: Path) -> None:
    import keras

    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs))
    dynamic = tmp_path / "dynamic.keras"
    keras.Model(inputs, outputs).save(dynamic)
    result = run_invoke("convert", "--model", str(dynamic), *quick_flags(tiny_dataset, tmp_path))
    assert_user_error(result, "has no static size", "--input-shape")
    fixed = run_invoke("convert", "--model", str(dynamic), "--input-shape", "16,16,3",
                       "--quant", "int8", *quick_flags(tiny_dataset, tmp_path))
    assert fixed.returncode == 0, fixed.stderr

    first, second = keras.Input((16, 16, 3)), keras.Input((16, 16, 3))
    joined = keras.layers.Flatten()(keras.layers.Add()([first, second]))
    two = tmp_path / "two.keras"
    keras.Model([first, second], [keras.layers.Dense(2)(joined), keras.layers.Dense(3)(joined)]
                ).save(two)
    result = run_invoke("convert", "--model", str(two), *quick_flags(tiny_dataset, tmp_path))
    assert_user_error(result, "is an image folder, which feeds a model with one image input",
                      "Pass --dataset FILE.npz with one array per input name")


TASKS = ["bundle", "bundle-keygen", "cache-prune", "clean", "convert", "device-check",
         "edgetpu-check", "images", "infer", "report", "sample", "test", "verify", "verify-bundle"]


@pytest.mark.parametrize("name", TASKS)
def test_dash_h_is_help_for_every_task_and_no_flag_has_an_accidental_short_form(
        name: str) -> None:
    result = run_invoke(name, "-h", check=True)
    assert f"{name} [--options]" in result.stdout
    options = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("-")]
    assert options and all(line.startswith("--") and not line.startswith("--,")
                           for line in options), options


def test_invoke_list_shows_one_complete_sentence_per_task() -> None:
    listing = run_invoke("--list", check=True).stdout
    descriptions: dict[str, str] = {}
    name = ""
    for line in listing.split("Available tasks:")[1].splitlines():
        if line.startswith("  ") and not line.startswith("   "):  # "  name   description"
            name, _, text = line.strip().partition(" ")
            descriptions[name] = text.strip()
        elif line.strip() and name:  # a wrapped continuation of the description
            descriptions[name] += " " + line.strip()
    assert sorted(descriptions) == TASKS
    for name, text in descriptions.items():
        assert text.endswith(".") and text.count(". ") == 0, (name, text)


def test_report_for_an_unknown_model_lists_the_built_ones(tmp_path: Path) -> None:
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpha" / "report.json").write_text("{}")
    result = run_invoke("report", "--out", str(tmp_path), "--model", "nosuch")
    assert_user_error(result, "no report for model 'nosuch'", "built models: alpha")


def test_a_missing_required_flag_is_a_message_naming_the_flag() -> None:
    assert_user_error(run_invoke("infer", "--image", "x.png"), "--artifact is required",
                      "invoke infer -h")
