"""``invoke infer --arrays`` and a bundle's ``run.py`` on models that do not take one image: a
two-input model (image + vector) and an audio-shaped model, fed ``.npz`` / ``.npy`` files, run by
real LiteRT and onnxruntime and compared with the trained Keras model on the same arrays; an
Edge TPU split pair fed a ``.npz`` of images; and the errors a wrong file gets."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.bundles.archive import extract_archive, verify_archive
from tests.conftest import run_invoke
from tests.multi_io_models import (
    audio_model,
    audio_samples,
    detection_samples,
    detector_model,
    two_input_model,
    two_input_samples,
)

COMPILER_MISSING = "the Edge TPU compile did not run"
FP32_ERROR = 1e-5  # largest |artifact - Keras|, as a share of the largest |Keras| output
INT8_ERROR = 0.1  # ‖artifact - Keras‖ / ‖Keras‖, as the build's box_relative_error bound
PRINTED = 5e-5  # scores are printed with 4 decimals


@dataclass(frozen=True)
class Built:
    """A trained model, its build folder and held-out samples saved as a .npz file."""

    model: Any
    build: Path
    samples: dict[str, np.ndarray]  # input name → 6 samples
    npz: Path

    def keras(self, samples: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The Keras model's outputs by name for ``samples`` (default: the held-out ones)."""
        given = samples or self.samples
        # A one-input model takes its array (a dict would make Keras warn about the structure).
        outputs = self.model(next(iter(given.values())) if len(given) == 1 else given)
        if isinstance(outputs, dict):
            return {name: np.asarray(value) for name, value in outputs.items()}
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return {name: np.asarray(value)
                for name, value in zip(self.model.output_names, outputs, strict=True)}


def build(model: Any, name: str, dataset: dict[str, np.ndarray], samples: dict[str, np.ndarray],
          root: Path, *targets: str) -> Built:
    """Save and convert ``model`` (fp32 and int8) with ``dataset`` as its .npz dataset."""
    model.save(root / f"{name}.keras")
    np.savez(root / "dataset.npz", **dataset)
    np.savez(root / "samples.npz", **samples)
    result = run_invoke("convert", "--model", str(root / f"{name}.keras"), "--dataset",
                        str(root / "dataset.npz"), "--out", str(root / "out"),
                        "--calibration-size", "32", "--validation-size", "32", "--latency-runs",
                        "2", "--threads", "1", "--runner", "local", "--quant", "fp32,int8",
                        *targets)
    # Without edgetpu_compiler the compile stage fails (exit 1); everything else is built.
    assert result.returncode == 0 or COMPILER_MISSING in result.stderr, result.stderr[-3000:]
    return Built(model, root / "out" / name, samples, root / "samples.npz")


@pytest.fixture(scope="module")
def fusion(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The two-input model (image + vector), built for tflite, onnx and the Edge TPU (batch 1)."""
    images, vectors, labels = two_input_samples(80, seed=1)
    held_out_images, held_out_vectors, _ = two_input_samples(6, seed=7)
    return build(two_input_model(), "fusion",
                 {"image": images, "vector": vectors, "labels": labels},
                 {"image": held_out_images, "vector": held_out_vectors},
                 tmp_path_factory.mktemp("fusion"), "--target", "tflite,onnx,edgetpu")


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The audio-shaped model (waveform 256 × 1), built for tflite, onnx and the Edge TPU."""
    clips, labels = audio_samples(80, seed=1)
    held_out, _ = audio_samples(6, seed=7)
    return build(audio_model(), "tones", {"waveform": clips, "labels": labels},
                 {"waveform": held_out}, tmp_path_factory.mktemp("tones"), "--target",
                 "tflite,onnx,edgetpu")


def assert_close(found: np.ndarray, expected: np.ndarray, variant: str, classes: bool = True,
                 rounding: float = 0.0) -> None:
    """Within the variant's tolerance (``rounding``: what printing may add to each value) and,
    for class scores, the same top class in every row."""
    if variant == "fp32":
        limit = FP32_ERROR * float(np.abs(expected).max()) + rounding
        assert float(np.abs(found - expected).max()) <= limit, (found, expected)
    else:
        error = float(np.linalg.norm(found - expected))
        limit = INT8_ERROR * float(np.linalg.norm(expected)) + rounding * np.sqrt(found.size)
        assert error <= limit, (found, expected)
    if classes:
        assert (found.argmax(-1) == expected.argmax(-1)).all(), (found, expected)


ARTIFACTS = [("tflite", "fp32", "_fp32.tflite"), ("tflite", "int8", "_int8.tflite"),
             ("onnx", "fp32", "_fp32.onnx"), ("onnx", "int8", "_int8.onnx"),
             ("edgetpu", "int8", "_int8.tflite")]  # the Edge TPU's: batch 1, int8 in and out


@pytest.mark.parametrize("case", ["fusion", "tones"])
@pytest.mark.parametrize(("folder", "variant", "ending"), ARTIFACTS)
def test_every_artifact_matches_keras_on_a_npz(case: str, folder: str, variant: str, ending: str,
                                               request: pytest.FixtureRequest) -> None:
    from converters.commands.infer import predict

    built: Built = request.getfixturevalue(case)
    outputs = predict(built.build / folder / f"{built.build.name}{ending}", built.npz)
    expected = built.keras()
    assert list(outputs) == list(expected)
    for name, values in outputs.items():
        assert values.shape == expected[name].shape == (6, *expected[name].shape[1:])
        assert_close(values, expected[name], variant)


def test_edgetpu_split_pair_takes_a_npz_of_images(tmp_path_factory: pytest.TempPathFactory
                                                  ) -> None:
    """The head/tail pair (through the same Runtime interface) of the two-head detector, fed
    its image input as arrays: both heads match Keras, as the whole int8 model does."""
    from converters.commands.infer import predict

    images, _, _ = detection_samples(64, seed=2)
    held_out, _, _ = detection_samples(4, seed=7)
    built = build(detector_model(), "detector", {"image": images}, {"image": held_out},
                  tmp_path_factory.mktemp("detector"), "--target", "edgetpu", "--edgetpu-split")
    pair = predict(built.build / "edgetpu" / "split" / "detector_int8_split.json", built.npz)
    whole = predict(built.build / "edgetpu" / "detector_int8.tflite", built.npz)
    expected = built.keras()
    assert list(pair) == ["class_logits", "boxes"]
    for name in expected:
        np.testing.assert_array_equal(pair[name], whole[name])
        assert_close(pair[name], expected[name], "int8", classes=False)
    assert (pair["class_logits"].argmax(-1) == expected["class_logits"].argmax(-1)).mean() > 0.9


def printed_scores(stdout: str) -> list[dict[int, float]]:
    """The class scores each sample's lines print (``index<TAB>score``), sample by sample."""
    samples: list[dict[int, float]] = []
    for line in stdout.splitlines():
        if re.fullmatch(r"sample \d+:", line) or not samples:
            samples.append({})
        found = re.fullmatch(r"\s*(\d+)\t(-?\d+\.\d{4})", line)
        if found:
            samples[-1][int(found[1])] = float(found[2])
    return [sample for sample in samples if sample]


def assert_printed(stdout: str, expected: np.ndarray, variant: str) -> None:
    """Every sample's printed scores (every class: --top-k covers them) against Keras."""
    printed = printed_scores(stdout)
    assert len(printed) == len(expected), stdout
    assert all(sorted(scores) == list(range(expected.shape[1])) for scores in printed), stdout
    found = np.array([[scores[i] for i in sorted(scores)] for scores in printed])
    assert_close(found, expected, variant, rounding=PRINTED)


def test_invoke_infer_prints_every_sample_of_a_npz_and_a_npy(fusion: Built, tones: Built,
                                                             tmp_path: Path) -> None:
    several = run_invoke("infer", "--artifact", str(fusion.build / "tflite" / "fusion_int8.tflite"),
                         "--arrays", str(fusion.npz), "--top-k", "3", check=True)
    assert [line for line in several.stdout.splitlines() if line.startswith("sample")] == [
        f"sample {index}:" for index in range(6)]
    assert_printed(several.stdout, fusion.keras()["label"], "int8")
    # One sample without a batch axis: a .npz of per-sample arrays, a .npy for one input.
    one = {name: array[2] for name, array in fusion.samples.items()}
    np.savez(tmp_path / "one.npz", **one)
    single = run_invoke("infer", "--artifact", str(fusion.build / "onnx" / "fusion_fp32.onnx"),
                        "--arrays", str(tmp_path / "one.npz"), "--top-k", "3", check=True)
    assert "sample" not in single.stdout and len(single.stdout.splitlines()) == 3
    assert_printed(single.stdout, fusion.keras({n: a[None] for n, a in one.items()})["label"],
                   "fp32")
    np.save(tmp_path / "clip.npy", tones.samples["waveform"][0])
    clip = run_invoke("infer", "--artifact", str(tones.build / "tflite" / "tones_fp32.tflite"),
                      "--arrays", str(tmp_path / "clip.npy"), check=True)
    assert_printed(clip.stdout, tones.keras()["tone"][:1], "fp32")


def wrong_files(folder: Path, fusion: Built) -> list[tuple[Path, str]]:
    """Files the two-input model cannot take, each with the message it gets."""
    images, vectors = fusion.samples["image"], fusion.samples["vector"]
    cases = {
        "missing.npz": ({"image": images},
                        "has no array 'vector' for the model input 'vector' (expected shape "
                        "(4,) for one sample or (N, 4) for N samples"),
        "misnamed.npz": ({"image": images, "vectr": vectors},
                         "has no array 'vector' for the model input 'vector'"),
        "shape.npz": ({"image": images, "vector": np.zeros((6, 5), np.float32)},
                      "array 'vector' in {path} has shape (6, 5); the model input 'vector' "
                      "expects (4,) for one sample or (N, 4) for N samples"),
        "counts.npz": ({"image": images, "vector": vectors[:4]},
                       "the input arrays have different sample counts"),
        "words.npz": ({"image": images, "vector": np.array(["a", "b", "c", "d"])},
                      "holds <U1 values; the model input 'vector' takes numbers"),
    }
    made = []
    for name, (arrays, message) in cases.items():
        np.savez(folder / name, **arrays)
        made.append((folder / name, message.format(path=folder / name)))
    np.save(folder / "one.npy", vectors)
    made.append((folder / "one.npy", "is a .npy file, which holds one array; the model has 2 "
                                     "inputs ('image' (8, 8, 3), 'vector' (4,))"))
    (folder / "text.npz").write_text("not arrays")
    made.append((folder / "text.npz", f"cannot read input file {folder / 'text.npz'} as a .npz"))
    # Hostile files numpy only fails on when a member is read, or with a zip error
    np.savez(folder / "objects.npz", image=images, vector=np.array([{"a": 1}] * 6, dtype=object))
    made.append((folder / "objects.npz", f"cannot read input file {folder / 'objects.npz'} as a "
                                         ".npz file of arrays: Object arrays cannot be loaded"))
    (folder / "truncated.npz").write_bytes((folder / "missing.npz").read_bytes()[:60])
    made.append((folder / "truncated.npz",
                 f"cannot read input file {folder / 'truncated.npz'} as a .npz"))
    return made


def test_invoke_infer_refuses_wrong_files_naming_file_input_and_shape(
        fusion: Built, tones: Built, tmp_path: Path) -> None:
    artifact = fusion.build / "tflite" / "fusion_int8.tflite"
    for path, message in wrong_files(tmp_path, fusion):
        result = run_invoke("infer", "--artifact", str(artifact), "--arrays", str(path))
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert message in result.stderr and str(path) in result.stderr, result.stderr
        assert not result.stdout
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    for built in (fusion, tones):
        name = built.build.name
        refused = run_invoke("infer", "--artifact", str(built.build / "tflite" /
                                                         f"{name}_fp32.tflite"),
                             "--image", str(image))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert "does not take one image" in refused.stderr, refused.stderr
    flags = run_invoke("infer", "--artifact", str(artifact), "--arrays", str(image))
    assert flags.returncode != 0 and "--arrays takes a .npz or .npy file" in flags.stderr
    neither = run_invoke("infer", "--artifact", str(artifact))
    assert neither.returncode != 0 and "give one of --image IMAGE or --arrays" in neither.stderr


@pytest.fixture(scope="module")
def bundles(fusion: Built, tones: Built, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Path]:
    """Extracted bundles, as `invoke bundle` writes them: tflite int8 of both models, onnx int8
    of the two-input one."""
    folder = tmp_path_factory.mktemp("bundles")
    extracted = {}
    for built, target in ((fusion, "tflite"), (fusion, "onnx"), (tones, "tflite")):
        name = built.build.name
        run_invoke("bundle", "--model", name, "--target", target, "--platform", "linux/x86_64",
                   "--python", "3.11", "--out", str(built.build.parent), "--dist",
                   str(folder / "dist"), check=True)
        archive = folder / "dist" / f"{name}-{target}-int8-linux_x86_64.tar.gz"
        bundle = verify_archive(archive).bundle
        assert bundle["model"]["inputs"] == [
            {"name": n, "shape": list(a.shape[1:]), "dtype": "float32"}
            for n, a in built.samples.items()]
        assert bundle["model"]["input_shape"] is None
        extracted[f"{name}-{target}"] = extract_archive(archive, folder / f"{name}-{target}")
    return extracted


def run_py(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The bundle's run.py, run as on the device (this host's LiteRT, onnxruntime, numpy)."""
    return subprocess.run([sys.executable, str(root / "run.py"), *args], capture_output=True,
                          text=True, cwd=root.parent)


def test_bundle_run_py_prints_every_output_for_a_npz_and_a_npy(
        bundles: dict[str, Path], fusion: Built, tones: Built, tmp_path: Path) -> None:
    for key in ("fusion-tflite", "fusion-onnx"):
        ran = run_py(bundles[key], str(fusion.npz), "--top-k", "3")
        assert ran.returncode == 0, ran.stderr
        assert_printed(ran.stdout, fusion.keras()["label"], "int8")
    np.save(tmp_path / "clips.npy", tones.samples["waveform"])
    clips = run_py(bundles["tones-tflite"], str(tmp_path / "clips.npy"))
    assert clips.returncode == 0, clips.stderr
    assert "note: --top-k 5 is more than the model's 2 classes" in clips.stderr
    assert_printed(clips.stdout, tones.keras()["tone"], "int8")


def test_bundle_run_py_refuses_wrong_files(bundles: dict[str, Path], fusion: Built,
                                           tmp_path: Path) -> None:
    for path, message in wrong_files(tmp_path, fusion):
        if path.name in ("counts.npz", "text.npz", "one.npy", "objects.npz", "truncated.npz"):
            message = {"counts.npz": "every input needs the same number of samples",  # worded
                       "text.npz": f"cannot read {path} as a .npz file of arrays",  # for the device
                       "objects.npz": f"cannot read {path} as a .npz file of arrays",
                       "truncated.npz": f"cannot read {path} as a .npz file of arrays",
                       "one.npy": "holds one array; the model has 2 inputs (image, vector)"
                       }[path.name]
        refused = run_py(bundles["fusion-tflite"], str(path))
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert message in refused.stderr and not refused.stdout, (path, refused.stderr)
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    refused = run_py(bundles["fusion-onnx"], str(image))
    assert refused.returncode == 2 and "this model does not take one image (its inputs: " \
        "'image' (8, 8, 3), 'vector' (4,))" in refused.stderr, refused.stderr
