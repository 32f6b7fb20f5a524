"""Array datasets: a .npz file or a folder of .npy/.npz samples, matched to inputs by name."""

from pathlib import Path

import numpy as np
import pytest

from converters import arrays
from converters.errors import DatasetError
from converters.model import TensorInfo

AUDIO = (TensorInfo("waveform", (8, 1)),)
TWO = (TensorInfo("image", (4, 4, 3)), TensorInfo("vector", (2,)))


def test_npz_file_by_input_name_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, vector=np.ones((5, 2)), image=np.zeros((5, 4, 4, 3), np.uint8),
             labels=np.arange(5))
    assert arrays.is_array_dataset(path)
    found = arrays.read(path, TWO)
    assert list(found.arrays) == ["image", "vector"] and found.count == 5
    assert found.arrays["image"].dtype == np.float32 and found.arrays["image"].shape == (5, 4, 4, 3)
    assert found.labels is not None and found.labels.tolist() == [0, 1, 2, 3, 4]
    assert found.names[2] == "data.npz[2]"


def test_a_one_input_model_takes_a_files_only_array(tmp_path: Path) -> None:
    path = tmp_path / "clips.npz"
    np.savez(path, clips=np.ones((3, 8, 1)))
    assert arrays.read(path, AUDIO).arrays["waveform"].shape == (3, 8, 1)


def test_folder_of_npy_and_npz_samples(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    for index in range(3):
        np.save(folder / f"{index}.npy", np.full((8, 1), index, np.float32))
    assert arrays.is_array_dataset(folder)
    found = arrays.read(folder, AUDIO)
    assert found.arrays["waveform"][:, 0, 0].tolist() == [0, 1, 2] and found.labels is None
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    for index in range(4):
        np.savez(labelled / f"{index}.npz", image=np.zeros((1, 4, 4, 3)), vector=np.ones(2),
                 label=index % 2)
    found = arrays.read(labelled, TWO)
    assert found.arrays["image"].shape == (4, 4, 4, 3)  # a batch of one per file is accepted
    assert found.labels is not None and found.labels.tolist() == [0, 1, 0, 1]


def test_errors_name_the_input_and_the_shape_expected(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, image=np.zeros((5, 4, 4, 3)), other=np.zeros((5, 2)))
    with pytest.raises(DatasetError, match=r"no array 'vector' for the model input 'vector' "
                                           r"\(expected shape \(N, 2\) for N samples\); arrays "
                                           r"found: image, other"):
        arrays.read(path, TWO)
    np.savez(path, image=np.zeros((5, 4, 4, 1)), vector=np.zeros((5, 2)))
    with pytest.raises(DatasetError, match=r"array 'image' .* has shape \(5, 4, 4, 1\); the model "
                                           r"input 'image' expects \(N, 4, 4, 3\)"):
        arrays.read(path, TWO)
    np.savez(path, image=np.zeros((5, 4, 4, 3)), vector=np.zeros((4, 2)))
    with pytest.raises(DatasetError, match="different sample counts"):
        arrays.read(path, TWO)
    np.savez(path, image=np.zeros((5, 4, 4, 3)), vector=np.zeros((5, 2)), labels=np.zeros(5))
    with pytest.raises(DatasetError, match="labels .* must be integers"):
        arrays.read(path, TWO)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read dataset .*broken.npz as a .npz file"):
        arrays.check(tmp_path / "broken.npz")
    # A zip cut short, and object arrays (numpy fails only when the member is read)
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match="cannot read dataset .*cut.npz as a .npz file"):
        arrays.read(tmp_path / "cut.npz", TWO)
    np.savez(path, image=np.zeros((5, 4, 4, 3)), vector=np.array([{}] * 5, dtype=object))
    with pytest.raises(DatasetError, match="cannot read dataset .*data.npz as a .npz file of "
                                           "arrays: Object arrays cannot be loaded"):
        arrays.read(path, TWO)


def test_a_folder_labels_every_sample_or_none(tmp_path: Path) -> None:
    for index in range(2):
        extra = {"label": 1} if index == 0 else {}
        np.savez(tmp_path / f"{index}.npz", waveform=np.zeros((8, 1)), **extra)
    with pytest.raises(DatasetError, match="label every sample or none"):
        arrays.read(tmp_path, AUDIO)
