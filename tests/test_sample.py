from pathlib import Path

from converters.fsutil import sha256_tree
from converters.sample import CLASSES, write_dataset
from tests.conftest import ROOT


def test_sample_dataset_is_deterministic_and_matches_the_committed_one(tmp_path: Path) -> None:
    write_dataset(tmp_path / "one", count_per_class=80)
    write_dataset(tmp_path / "two", count_per_class=80)
    assert sha256_tree(tmp_path / "one") == sha256_tree(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(CLASSES)
    assert sha256_tree(tmp_path / "one") == sha256_tree(ROOT / "dataset")


def test_committed_sample_model_exists() -> None:
    assert (ROOT / "model" / "sample.h5").is_file()
