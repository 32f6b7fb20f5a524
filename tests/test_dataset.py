from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converters.config import Preprocessing, PreprocessingMode
from converters.errors import DatasetError
from converters.inputs import dataset
from tests.conftest import write_images


def test_class_folders_give_sorted_labels_and_count_non_images(tmp_path: Path) -> None:
    write_images(tmp_path, {"tulip": 2, "daisy": 3})
    (tmp_path / "daisy" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("top-level file")
    listing = dataset.discover(tmp_path)
    assert listing.class_names == ("daisy", "tulip")
    assert [e.label for e in listing.entries] == [0, 0, 0, 1, 1]
    assert listing.skipped_files == 2


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    write_images(tmp_path, {"x": 3})
    for file in (tmp_path / "x").iterdir():
        file.rename(tmp_path / file.name)
    (tmp_path / "x").rmdir()
    listing = dataset.discover(tmp_path)
    assert listing.class_names == ()
    assert {e.label for e in listing.entries} == {dataset.NO_LABEL}


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "JPEG"), (".png", "PNG"), (".bmp", "BMP"),
                                        (".gif", "GIF"), (".webp", "WEBP")])
def test_every_supported_format_loads_resized_and_converted(tmp_path: Path, suffix: str,
                                                            fmt: str) -> None:
    path = tmp_path / f"image{suffix}"
    Image.new("RGB", (40, 20), (200, 100, 50)).save(path, format=fmt)
    rgb = dataset.load_image(path, 8, 10, 3)
    gray = dataset.load_image(path, 8, 10, 1)
    assert rgb.shape == (8, 10, 3) and rgb.dtype == np.uint8
    assert gray.shape == (8, 10, 1)
    assert abs(int(rgb[4, 5, 0]) - 200) < 12  # lossy formats stay close to the colour


def test_unreadable_image_is_named_and_skipped(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    write_images(tmp_path, {"a": 2})
    broken = tmp_path / "a" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    listing = dataset.discover(tmp_path)
    images, labels, unreadable = dataset.load_images(listing.entries, (8, 8, 3), "loading")
    assert unreadable == [str(broken)]
    assert images.shape == (2, 8, 8, 3) and list(labels) == [0, 0]
    assert str(broken) in capsys.readouterr().err


def test_no_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match="holds no images"):
        dataset.discover(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        dataset.discover(tmp_path / "missing")


def test_split_is_seeded_disjoint_and_shrinks_in_proportion(tmp_path: Path) -> None:
    entries = tuple(dataset.ImageEntry(tmp_path / f"{i}.png", i % 2) for i in range(30))
    first = dataset.split(entries, 10, 15, seed=3)
    again = dataset.split(entries, 10, 15, seed=3)
    other = dataset.split(entries, 10, 15, seed=4)
    assert first == again and first != other
    assert len(first.calibration) == 10 and len(first.validation) == 15
    assert not set(first.calibration) & set(first.validation)
    small = dataset.split(entries[:10], 100, 200, seed=0)
    assert (len(small.calibration), len(small.validation)) == (3, 7)
    with pytest.raises(DatasetError, match="at least 2"):
        dataset.split(entries[:1], 1, 1, seed=0)


def test_preprocessing_modes() -> None:
    pixels = np.array([[[0, 255, 51]]], np.uint8)
    unit = dataset.preprocess(pixels, Preprocessing(PreprocessingMode.UNIT))
    np.testing.assert_allclose(unit, [[[0, 1, 0.2]]], atol=1e-6)
    signed = dataset.preprocess(pixels, Preprocessing(PreprocessingMode.SIGNED))
    np.testing.assert_allclose(signed, [[[-1, 1, -0.6]]], atol=1e-6)
    raw = dataset.preprocess(pixels, Preprocessing(PreprocessingMode.RAW))
    np.testing.assert_allclose(raw, [[[0, 255, 51]]])
    mean_std = Preprocessing(PreprocessingMode.MEAN_STD, (10.0, 20.0, 30.0), (2.0, 5.0, 3.0))
    np.testing.assert_allclose(dataset.preprocess(pixels, mean_std), [[[-5, 47, 7]]])
    with pytest.raises(DatasetError, match="one value per channel"):
        dataset.preprocess(pixels, Preprocessing(PreprocessingMode.MEAN_STD, (1.0,), (1.0,)))
