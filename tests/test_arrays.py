"""Array datasets: a .npz file or a folder of .npy/.npz samples, matched to inputs by name."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from converters.errors import DatasetError
from converters.inputs import arrays
from converters.inputs.model import TensorInfo

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


def test_dataset_values_a_cast_would_change_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "clips.npz"
    clips = np.ones((3, 8, 1))
    clips[1, 4, 0] = np.nan
    np.savez(path, waveform=clips)
    with pytest.raises(DatasetError, match=r"array 'waveform' in dataset .*clips.npz holds 1 "
                                           r"non-finite value\(s\) \(NaN or Inf; the first, nan, "
                                           r"at index \(1, 4, 0\)\)"):
        arrays.read(path, AUDIO)
    ids = (TensorInfo("ids", (2,), "int32"),)
    np.savez(path, ids=np.array([[1, 2**63]], np.uint64))
    with pytest.raises(DatasetError, match="holds values from 1 to 9223372036854775808, outside "
                                           "the range of the model input's int32 "
                                           r"\(-2147483648 to 2147483647\)"):
        arrays.read(path, ids)
    np.savez(path, ids=np.array([[1.0, 2.5]]))
    with pytest.raises(DatasetError, match=r"holds fractional values; the model input takes "
                                           r"whole numbers \(int32\)"):
        arrays.read(path, ids)
    np.savez(path, ids=np.array([[1.0, 2.0]]), labels=np.array([0]))
    assert arrays.read(path, ids).arrays["ids"].tolist() == [[1, 2]]


def test_the_array_budget_counts_a_whole_sample_folder_and_skips_labels_unread(
        tmp_path: Path) -> None:
    from converters.inputs import array_files

    for index in range(3):
        np.save(tmp_path / f"{index}.npy", np.zeros((8, 1), np.float32))
    budget = array_files.Budget(1, "--max-array-mb N")
    budget.used = (1 << 20) - 2 * 32  # room for two more 32-byte samples, not three
    with pytest.raises(array_files.ArrayFileError, match=r"the array in .*2.npy declares shape "
                                                         r"\(8, 1\) of float32: 32 bytes once "
                                                         r"read \(with the arrays before it, "
                                                         r"1.0 MiB\), over the limit of 1 MiB"):
        for index in range(3):
            array_files.load(tmp_path / f"{index}.npy", budget)
    with zipfile.ZipFile(tmp_path / "inputs.npz", "w") as archive:
        archive.writestr("waveform.npy", (tmp_path / "0.npy").read_bytes())
        archive.writestr("labels.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': "
                         b"False, 'shape': (100000, 100000), }" + b" " * 57 + b"\n")
    assert arrays.read_inputs(tmp_path / "inputs.npz", AUDIO)["waveform"].shape == (1, 8, 1)
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as archive:
        archive.writestr("waveform", b"raw bytes, not an array")
    with pytest.raises(DatasetError, match=r"cannot read input file .*raw.npz as a .npz file of "
                                           "arrays: the magic string is not correct"):
        arrays.read_inputs(tmp_path / "raw.npz", AUDIO)


def test_the_bundled_reader_bound_is_the_settings_default() -> None:
    """array_files.py ships alone in bundles with its own copy of the default bound."""
    from converters import defaults
    from converters.inputs import array_files

    assert array_files.DEFAULT_MAX_ARRAY_MB == defaults.MAX_ARRAY_MB
