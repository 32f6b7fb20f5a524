"""The shared stage cache (--cache-dir): restore across build folders, corruption, concurrent
writers, skipped stages, and cache-prune."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from converters.cache import stage_cache
from converters.config import Quantization
from converters.errors import ConfigError
from converters.fsutil import sha256_file
from converters.pipeline import build
from converters.pipeline.shared_cache import DIGEST, ENTRY, SharedCache, open_shared_cache, parse_size
from converters.stages.base import StageSpec
from tests.conftest import make_config, run_invoke

ARTIFACTS = (".tflite", ".onnx", ".npy", ".json", ".html", ".md")


@pytest.fixture(scope="module")
def built_once(tmp_path_factory: pytest.TempPathFactory, tiny_h5: Path,
               tiny_dataset: Path) -> tuple[build.BuildResult, Path]:
    root = tmp_path_factory.mktemp("shared-cache")
    result = build.convert(make_config(tiny_h5, tiny_dataset, root / "first",
                                       cache_dir=root / "cache"), ["test"])
    return result, root / "cache"


@pytest.fixture()
def first_build(built_once: tuple[build.BuildResult, Path],
                tmp_path: Path) -> tuple[build.BuildResult, Path]:
    """One build, and a copy (this test's own) of the cache it filled."""
    result, cache_dir = built_once
    shutil.copytree(cache_dir, tmp_path / "cache")
    return result, tmp_path / "cache"


def outputs(build_dir: Path, suffixes: tuple[str, ...] = ARTIFACTS) -> dict[str, str]:
    """Every stage output's hash, from the build folder's files (not its stamps)."""
    return {p.relative_to(build_dir).as_posix(): sha256_file(p) for p in sorted(build_dir.rglob("*"))
            if p.is_file() and p.suffix in suffixes and p.name != stage_cache.MANIFEST
            and stage_cache.STAMP_DIR not in p.parts}


def entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.glob("??/*") if not p.name.startswith("."))


def test_a_second_build_folder_restores_every_stage_with_the_same_bytes(
        first_build: tuple[build.BuildResult, Path], tiny_h5: Path, tiny_dataset: Path,
        tmp_path: Path) -> None:
    first, cache_dir = first_build
    stages = first.ran["tiny"]
    assert len(entries(cache_dir)) == len(stages)  # every stage stored
    second = build.convert(make_config(tiny_h5, tiny_dataset, tmp_path / "second",
                                       cache_dir=cache_dir), ["test"])
    assert second.ran == {"tiny": []} and second.restored == {"tiny": stages}
    first_dir, second_dir = first.plans[0].build_dir, second.plans[0].build_dir
    assert outputs(second_dir) == outputs(first_dir) and len(outputs(first_dir)) > 10
    assert stage_cache.verify_build_dir(second_dir)[1] == []
    for name in stages:  # the stamp of the build that ran it, and where it came from
        original = stage_cache.read_stamp(first_dir, name)
        restored = stage_cache.read_stamp(second_dir, name)
        assert original is not None and restored is not None
        assert {k: v for k, v in restored.items() if not k.startswith("restored")} == original
        assert restored["restored_from_cache"].startswith(str(cache_dir.resolve()))
    # A third "CI run" from the command line, a new folder again: nothing runs.
    third = run_invoke("convert", "--model", str(tiny_h5), "--dataset", str(tiny_dataset), "--out",
                       str(tmp_path / "third"), "--cache-dir", str(cache_dir), "--calibration-size",
                       "8", "--validation-size", "12", "--latency-runs", "3", "--threads", "1",
                       "--runner", "local")
    assert third.returncode == 0, third.stderr
    assert "▶" not in third.stdout and third.stdout.count("restored from the shared cache") == len(stages)
    assert outputs(tmp_path / "third" / "tiny") == outputs(first_dir)


def test_a_corrupted_entry_is_detected_removed_and_the_stage_rebuilt(
        first_build: tuple[build.BuildResult, Path], tiny_h5: Path, tiny_dataset: Path,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, cache_dir = first_build
    key = first.plans[0].keys["tflite-int8"]
    archive = SharedCache(cache_dir).entry(key) / ENTRY
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the stored outputs
    archive.write_bytes(bytes(data))
    capsys.readouterr()
    second = build.convert(make_config(tiny_h5, tiny_dataset, tmp_path / "second",
                                       cache_dir=cache_dir), ["test"])
    shown = capsys.readouterr()
    assert f"{key[:2]}/{key} is corrupted (its archive's sha256" in shown.out + shown.err
    # What depends on the int8 runs again too (its validation, the automatic int8-mixed, the
    # report): they must say what happened to the int8 here, not in the stored build
    downstream = ["tflite-int8"]
    for spec in second.plans[0].stages:
        if set(spec.deps) & set(downstream):
            downstream.append(spec.name)
    assert {"validate-tflite-int8", "report"} <= set(downstream)
    assert second.ran == {"tiny": downstream}
    assert not set(downstream) & set(second.restored["tiny"])
    rebuilt = outputs(second.plans[0].build_dir, (".tflite",))  # the records hold timings
    assert rebuilt == outputs(first.plans[0].build_dir, (".tflite",)) and len(rebuilt) == 4
    entry = SharedCache(cache_dir).entry(key)  # stored again, valid, by the second build
    assert sha256_file(entry / ENTRY) == (entry / DIGEST).read_text().strip()


def _store(cache_dir: str, build_dir: str, spec: dict[str, object], key: str,
           start: Any, stored: Any) -> None:
    start.wait()  # every writer starts at once
    shared = open_shared_cache(Path(cache_dir))  # each writer finds or makes the cache
    stored.put(shared.store(Path(build_dir), StageSpec.from_dict(spec), key))


def test_concurrent_writers_of_one_key_leave_one_valid_entry(
        first_build: tuple[build.BuildResult, Path], tmp_path: Path) -> None:
    first, _ = first_build
    plan = first.plans[0]
    spec = plan.stage("data")  # four files in a folder
    cache_dir = tmp_path / "shared"
    writers = 6
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(writers), context.Queue()
    processes = [context.Process(target=_store, args=(str(cache_dir), str(plan.build_dir),
                                                      spec.to_dict(), plan.keys["data"], start,
                                                      results)) for _ in range(writers)]
    for process in processes:
        process.start()
    stored = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sum(stored) == 1  # one rename won; the others found the entry there and dropped theirs
    (entry,) = entries(cache_dir)
    assert sha256_file(entry / ENTRY) == (entry / DIGEST).read_text().strip()
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temporary left
    restored = tmp_path / "restored"
    shutil.copytree(plan.build_dir, restored)
    shutil.rmtree(restored / "data")
    assert SharedCache(cache_dir).restore(replace(plan, build_dir=restored), spec)
    assert outputs(restored) == outputs(plan.build_dir)


def test_a_stage_that_could_not_run_here_is_not_stored(
        tiny_h5: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    if shutil.which("edgetpu_compiler"):
        pytest.skip("edgetpu_compiler is installed: the compile stage runs here")
    result = build.convert(make_config(tiny_h5, tiny_dataset, tmp_path / "out", targets=("edgetpu",),
                                       quantizations=(Quantization.INT8,),
                                       cache_dir=tmp_path / "cache"), ["test"])
    plan = result.plans[0]
    assert stage_cache.read_stamp(plan.build_dir, "edgetpu-compile")["skipped"]  # type: ignore[index]
    stored = {entry.name for entry in entries(tmp_path / "cache")}
    assert plan.keys["edgetpu-compile"] not in stored
    assert plan.keys["edgetpu-int8"] in stored


def test_cache_prune_removes_least_recently_used_first(
        first_build: tuple[build.BuildResult, Path]) -> None:
    first, cache_dir = first_build
    shared = SharedCache(cache_dir)
    keys = first.plans[0].keys
    for age, name in enumerate(first.ran["tiny"]):  # export used last, report longest ago
        os.utime(shared.entry(keys[name]), (1_000_000 - age, 1_000_000 - age))
    newest = shared.entry(keys["export"])
    keep = sum(p.stat().st_size for p in newest.iterdir())
    result = run_invoke("cache-prune", "--cache-dir", str(cache_dir), "--max-size", str(keep))
    assert result.returncode == 0, result.stderr
    assert entries(cache_dir) == [newest]
    assert f"removed {len(first.ran['tiny']) - 1} entries" in result.stdout
    missing = run_invoke("cache-prune", "--max-size", "1G")
    assert missing.returncode != 0 and "pass --cache-dir" in missing.stderr + missing.stdout


def test_sizes_parse_with_binary_units() -> None:
    assert parse_size("500M") == 500 * 2**20
    assert parse_size("2G") == 2 * 2**30
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("4096") == 4096
    with pytest.raises(ConfigError, match="500M or 2G"):
        parse_size("lots")
