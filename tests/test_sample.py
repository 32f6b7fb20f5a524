from pathlib import Path

import pytest

from converters.errors import ConfigError
from converters.fsutil import sha256_tree
from converters.inputs.sample import CLASSES, SAMPLE_MODEL, write_dataset
from tests.conftest import ROOT, run_invoke
from tests.test_cli import assert_user_error


def test_sample_dataset_is_deterministic_and_matches_the_committed_one(tmp_path: Path) -> None:
    write_dataset(tmp_path / "one", count_per_class=80)
    write_dataset(tmp_path / "two", count_per_class=80)
    assert sha256_tree(tmp_path / "one") == sha256_tree(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(CLASSES)
    assert sha256_tree(tmp_path / "one") == sha256_tree(ROOT / "dataset")


def test_committed_sample_model_exists() -> None:
    assert (ROOT / "model" / "sample.h5").is_file()


def test_sample_keeps_an_existing_model_unless_forced_and_refuses_empty_counts(
        tmp_path: Path) -> None:
    from converters.inputs.sample import check_request

    mine = tmp_path / "models" / "sample.h5"
    mine.parent.mkdir()
    mine.write_bytes(b"my own model")
    refused = run_invoke("sample", "--model-dir", str(mine.parent), "--dataset",
                         str(tmp_path / "images"), "--per-class", "1")
    assert_user_error(refused, f"{mine} already exists: refusing to overwrite it with the sample "
                      "model. Pass another --model-dir, or --force")
    assert mine.read_bytes() == b"my own model" and not (tmp_path / "images").exists()
    for count in ("0", "-3", "10001"):
        empty = run_invoke("sample", "--model-dir", str(tmp_path / "new"), "--dataset",
                           str(tmp_path / "images"), "--per-class", count)
        assert_user_error(empty, f"--per-class must be between 1 and 10000 (held-out images per "
                          f"class), got {count}")
    assert not (tmp_path / "images").exists() and not (tmp_path / "new").exists()
    check_request(SAMPLE_MODEL, 80, force=False)  # the checkout's own sample: regenerated
    (tmp_path / "link.h5").symlink_to(mine)
    with pytest.raises(ConfigError, match="link.h5 already exists"):
        check_request(tmp_path / "link.h5", 80, force=False)
    check_request(mine, 80, force=True)
