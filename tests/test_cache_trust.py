"""The shared cache as a trust boundary (converters/pipeline/shared_cache.py): only a cache is pruned,
links are never followed, hostile entries are refused without a traceback or a hang, signed
entries, read-only and full caches, and `invoke verify`'s cross-checks. Each test failed on the
code before its fix."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from converters.cache import stage_cache
from converters.cache.tree_archive import extract_tree_archive, write_tree_archive
from converters.config import Quantization
from converters.fsutil import read_json, sha256_file, write_json_atomic
from converters.pipeline import build
from converters.pipeline.plan import ModelPlan
from converters.pipeline.shared_cache import DIGEST, ENTRY, MARKER, SIGNATURE, SharedCache
from tests.conftest import make_config, quick_flags, run_invoke
from tests.test_cli import assert_user_error

KEY = "ab" + "0" * 62  # a stage key's shape


def fake_entry(shard_parent: Path, key: str = KEY, payload: bytes = b"x" * 1000) -> Path:
    """An entry of the exact layout a cache writes (its archive is not a real stage's)."""
    entry = shard_parent / key[:2] / key
    entry.mkdir(parents=True)
    (entry / ENTRY).write_bytes(payload)
    (entry / DIGEST).write_text(sha256_file(entry / ENTRY) + "\n")
    return entry


# --- prune: only a cache, only entries, never through a link ---------------------------------

def test_prune_refuses_a_folder_that_is_not_a_cache(tmp_path: Path) -> None:
    folder = tmp_path / "P"
    for name in ("db", "js", ".a", "src"):
        (folder / name).mkdir(parents=True)
    (folder / "db" / "important.sql").write_text("x\n")
    result = run_invoke("cache-prune", "--cache-dir", str(folder), "--max-size", "0")
    assert_user_error(result, f"--cache-dir {folder} is not a shared stage cache",
                      "db/important.sql", "Nothing was changed")
    assert sorted(p.name for p in folder.iterdir()) == [".a", "db", "js", "src"]
    assert (folder / "db" / "important.sql").read_text() == "x\n"
    assert not (folder / MARKER).exists()


def test_prune_removes_only_entries_of_a_marked_cache(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    entry = fake_entry(root)
    (root / MARKER).write_text("cache\n")
    (root / "db").mkdir()
    (root / "db" / "important.sql").write_text("x\n")  # a shard's name, not a cache's entry
    (root / KEY[:2] / "notes.txt").write_text("mine\n")
    result = run_invoke("cache-prune", "--cache-dir", str(root), "--max-size", "0", check=True)
    assert "removed 1 entries" in result.stdout and "left 2 item(s)" in result.stdout
    assert not entry.exists()
    assert (root / "db" / "important.sql").read_text() == "x\n"
    assert (root / KEY[:2] / "notes.txt").read_text() == "mine\n"


def test_a_cache_written_before_the_marker_is_adopted(tmp_path: Path) -> None:
    root = tmp_path / "old-cache"
    entries = [fake_entry(root, f"{n:02x}" + "1" * 62) for n in range(3)]
    result = run_invoke("cache-prune", "--cache-dir", str(root), "--max-size", "1100", check=True)
    assert "removed 2 entries" in result.stdout and "adopted as a cache" in result.stdout
    assert sum(entry.exists() for entry in entries) == 1
    assert (root / MARKER).is_file()


def test_prune_never_follows_a_link(tmp_path: Path) -> None:
    root, outside = tmp_path / "cache", tmp_path / "outside"
    (root / MARKER).parent.mkdir()
    (root / MARKER).write_text("cache\n")
    victim_shard = fake_entry(outside / "shard").parent  # outside/shard/ab/<key>
    (root / "ab").symlink_to(victim_shard, target_is_directory=True)  # a linked shard
    victim_entry = fake_entry(outside / "entry", "cd" + "2" * 62)
    (root / "cd").mkdir()
    (root / "cd" / victim_entry.name).symlink_to(victim_entry, target_is_directory=True)
    result = run_invoke("cache-prune", "--cache-dir", str(root), "--max-size", "0", check=True)
    assert "removed 0 entries" in result.stdout and "left 2 item(s)" in result.stdout
    assert sorted(p.name for p in victim_shard.iterdir()) == [KEY]
    assert (victim_shard / KEY / ENTRY).read_bytes() == b"x" * 1000
    assert (victim_entry / ENTRY).is_file() and (root / "cd" / victim_entry.name).is_symlink()


# --- a build's --cache-dir ------------------------------------------------------------------

def fp32_convert(model: Path, dataset: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_invoke("convert", "--model", str(model), *quick_flags(dataset, out), "--quant", "fp32",
                      *extra)


def test_a_file_or_a_foreign_folder_as_cache_dir_is_refused_before_any_stage(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path) -> None:
    a_file = tmp_path / "stage_cache.txt"
    a_file.write_text("not a folder\n")
    refused = fp32_convert(tiny_h5, tiny_dataset, tmp_path / "out", "--cache-dir", str(a_file))
    assert_user_error(refused, f"--cache-dir {a_file} is a file, not a folder")
    assert a_file.read_text() == "not a folder\n" and not (tmp_path / "out").exists()
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    foreign = fp32_convert(tiny_h5, tiny_dataset, tmp_path / "out", "--cache-dir", str(home))
    assert_user_error(foreign, f"--cache-dir {home} is not a shared stage cache", "photos")
    assert [p.name for p in home.iterdir()] == ["photos"] and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def fp32_cache(tmp_path_factory: pytest.TempPathFactory, tiny_h5: Path,
               tiny_dataset: Path) -> tuple[build.BuildResult, Path]:
    """An fp32 build that filled a cache: (its result, the cache)."""
    root = tmp_path_factory.mktemp("fp32-cache")
    result = build.convert(make_config(tiny_h5, tiny_dataset, root / "out", cache_dir=root / "cache",
                                       quantizations=(Quantization.FP32,)), ["test"])
    return result, root / "cache"


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount real tmpfs file systems of a given size (root may mount them here; they can be
    remounted read-only, which stops root too, unlike chmod)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mount_point = tmp_path / f"mount-{len(mounted)}"
        mount_point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(mount_point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def warnings_about(output: str, what: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:") and what in line]


def test_a_read_only_cache_is_read_and_not_written(
        fp32_cache: tuple[build.BuildResult, Path], tmpfs: Callable[[str], Path], tiny_h5: Path,
        tiny_dataset: Path, tmp_path: Path) -> None:
    mount_point = tmpfs("4m")
    shared = mount_point / "cache"
    shutil.copytree(fp32_cache[1], shared)
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    # fp16 is not in the cache: it runs, and is not stored (one warning for the whole build)
    result = run_invoke("convert", "--model", str(tiny_h5), *quick_flags(tiny_dataset, tmp_path / "o"),
                        "--quant", "fp32,fp16", "--cache-dir", str(shared))
    assert result.returncode == 0, result.stderr
    assert "tflite-fp32 restored from the shared cache" in result.stdout
    assert "export restored from the shared cache" in result.stdout
    (warning,) = warnings_about(result.stderr, str(shared))
    assert "not writable here (Read-only file system)" in warning and "none are stored" in warning
    assert run_invoke("verify", "--out", str(tmp_path / "o")).returncode == 0


def test_a_full_cache_is_a_warning_and_the_build_succeeds_again_and_again(
        tmpfs: Callable[[str], Path], tiny_h5: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    shared = tmpfs("128k") / "cache"  # the build's entries take about 470 KiB
    for attempt in ("first", "no-op"):
        result = fp32_convert(tiny_h5, tiny_dataset, tmp_path / "out", "--cache-dir", str(shared))
        assert result.returncode == 0, (attempt, result.stderr)
        assert "Traceback" not in result.stderr
        (warning,) = warnings_about(result.stderr, f"cannot write to the shared cache {shared}")
        assert "No space left on device" in warning
    assert not [p for p in shared.rglob("*") if p.name.startswith(".tmp-")]  # nothing half-written


# --- hostile entries: never a traceback, a hang, or unbounded reading ------------------------

def restore_into_copy(first: build.BuildResult, cache_dir: Path, stage: str,
                      tmp_path: Path) -> tuple[bool, ModelPlan]:
    """Restore ``stage`` from ``cache_dir`` into a copy of the first build's folder without it."""
    plan = first.plans[0]
    copy = tmp_path / "copy"
    shutil.copytree(plan.build_dir, copy)
    copied = replace(plan, build_dir=copy)
    for relative in plan.stage(stage).outputs:
        shutil.rmtree(copy / relative, ignore_errors=True)
        (copy / relative).unlink(missing_ok=True)
    stage_cache.remove_stamp(copy, stage)
    return SharedCache(cache_dir).restore(copied, plan.stage(stage)), copied


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError("the restore hung")


@pytest.mark.parametrize("planted", ["non-utf8-digest", "fifo-archive", "digest-is-dev-zero",
                                     "archive-is-a-link"])
def test_a_hostile_entry_file_is_discarded_with_a_warning(
        fp32_cache: tuple[build.BuildResult, Path], tmp_path: Path, planted: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    first, original = fp32_cache
    cache_dir = tmp_path / "cache"
    shutil.copytree(original, cache_dir)
    entry = SharedCache(cache_dir).entry(first.plans[0].keys["tflite-fp32"])
    if planted == "non-utf8-digest":
        (entry / DIGEST).write_bytes(b"\xff\xfe" * 40)
    elif planted == "fifo-archive":
        (entry / ENTRY).unlink()
        os.mkfifo(entry / ENTRY)
    elif planted == "digest-is-dev-zero":
        (entry / DIGEST).unlink()
        (entry / DIGEST).symlink_to("/dev/zero")
    else:
        (entry / ENTRY).rename(tmp_path / "elsewhere.tar")
        (entry / ENTRY).symlink_to(tmp_path / "elsewhere.tar")
    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        restored, copied = restore_into_copy(first, cache_dir, "tflite-fp32", tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not restored and not os.path.lexists(entry)  # discarded: the next build stores it anew
    (warning,) = warnings_about(capsys.readouterr().err, f"{entry} is corrupted")
    assert "removed; the stage runs" in warning
    assert stage_cache.read_stamp(copied.build_dir, "tflite-fp32") is None


def rewrite_entry(entry: Path, change: dict[str, bytes | str], work: Path) -> None:
    """Rewrite an entry consistently, as someone who can write the cache but has no key could:
    ``change`` maps a relative path to new bytes, or to a link target; the stamp's hashes, the
    archive and its sha256 are recomputed (symbolic links go into the archive as links)."""
    unpacked = work / "unpacked"
    with (entry / ENTRY).open("rb") as handle:
        extract_tree_archive(handle, unpacked)
    for relative, value in change.items():
        target = unpacked / relative
        target.unlink()
        if isinstance(value, bytes):
            target.write_bytes(value)
        else:
            target.symlink_to(value)
    (stamp_path,) = (unpacked / stage_cache.STAMP_DIR).glob("*.json")
    stamp = read_json(stamp_path)
    for relative in stamp["outputs"]:
        stamp["outputs"][relative] = stage_cache.output_record(unpacked, relative)
    write_json_atomic(stamp_path, stamp)
    buffer = io.BytesIO()
    if any(isinstance(value, str) for value in change.values()):
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in sorted(unpacked.rglob("*")):
                archive.add(path, path.relative_to(unpacked).as_posix(), recursive=False)
    else:
        write_tree_archive(buffer, unpacked, [p.name for p in unpacked.iterdir()])
    (entry / ENTRY).write_bytes(buffer.getvalue())
    (entry / DIGEST).write_text(sha256_file(entry / ENTRY) + "\n")


def test_an_entry_holding_a_link_is_refused(fp32_cache: tuple[build.BuildResult, Path],
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, original = fp32_cache
    cache_dir = tmp_path / "cache"
    shutil.copytree(original, cache_dir)
    plan = first.plans[0]
    data_files = sorted(p.name for p in (plan.build_dir / "data").iterdir())
    entry = SharedCache(cache_dir).entry(plan.keys["data"])
    # data/<second> becomes a link to data/<first>: consistent stamp, archive and sha256
    rewrite_entry(entry, {f"data/{data_files[1]}": data_files[0]}, tmp_path / "work")
    capsys.readouterr()
    restored, copied = restore_into_copy(first, cache_dir, "data", tmp_path)
    assert not restored
    assert "is a link: only files and folders are accepted" in capsys.readouterr().err
    assert not any(os.path.lexists(copied.build_dir / relative)
                   for relative in plan.stage("data").outputs)
    assert not [p for p in copied.build_dir.rglob("*") if p.is_symlink()]
    assert not os.path.lexists(entry)


def test_outputs_holding_a_link_are_not_stored_and_verify_flags_the_link(
        fp32_cache: tuple[build.BuildResult, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = fp32_cache
    plan = first.plans[0]
    out = tmp_path / "out"
    shutil.copytree(plan.build_dir, out / plan.stem, symlinks=True)
    folder = out / plan.stem / "data"
    first_file, second_file = sorted(folder.iterdir())[:2]
    shutil.copyfile(first_file, second_file)  # same bytes as the file it will link to
    build_dir = out / plan.stem
    stage_cache.write_stamp(build_dir, plan.stage("data"), plan.keys["data"], 0.0, {}, "local",
                      plan.dep_keys(plan.stage("data")))
    second_file.unlink()
    second_file.symlink_to(first_file.name)  # hashes as before: only the link betrays it
    assert stage_cache.is_fresh(build_dir, plan.stage("data"), plan.keys["data"])
    capsys.readouterr()
    assert not SharedCache(tmp_path / "cache").store(build_dir, plan.stage("data"), plan.keys["data"])
    assert f"{second_file} is a link" in capsys.readouterr().err
    result = run_invoke("verify", "--out", str(out))
    assert_user_error(result, f"{second_file}: a symbolic link (to {first_file.name})")


def test_verify_cross_checks_the_sha256_report_json_records(
        fp32_cache: tuple[build.BuildResult, Path], tmp_path: Path) -> None:
    first, _ = fp32_cache
    plan = first.plans[0]
    out = tmp_path / "out"
    shutil.copytree(plan.build_dir, out / plan.stem)
    assert run_invoke("verify", "--out", str(out)).returncode == 0
    report_path = out / plan.stem / "report.json"
    report = read_json(report_path)
    artifact = report["artifacts"][0]
    honest = artifact["sha256"]
    artifact["sha256"] = "0" * 64
    write_json_atomic(report_path, report)
    result = run_invoke("verify", "--out", str(out))
    path = out / plan.stem / artifact["path"]
    assert_user_error(result, f"{path}: report.json records sha256 000000000000…, the manifest "
                              f"{honest[:12]}…")


# --- signed entries ---------------------------------------------------------------------------

def test_a_reader_restores_only_entries_signed_by_the_writer(
        tiny_h5: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    keys, cache_dir = tmp_path / "keys", tmp_path / "cache"
    run_invoke("bundle-keygen", "--out", str(keys), check=True)
    writer = fp32_convert(tiny_h5, tiny_dataset, tmp_path / "writer", "--cache-dir", str(cache_dir),
                          "--cache-sign-key", str(keys / "bundle-signing.pem"))
    assert writer.returncode == 0, writer.stderr
    built = tmp_path / "writer" / "tiny"
    (artifact,) = [relative for relative in read_json(stage_cache.stamp_path(built, "tflite-fp32"))[
        "outputs"] if relative.endswith(".tflite")]
    honest = (built / artifact).read_bytes()
    stamp = read_json(stage_cache.stamp_path(built, "tflite-fp32"))
    entry = SharedCache(cache_dir).entry(stamp["key"])
    assert (entry / SIGNATURE).stat().st_size == 64
    # Someone who can write the cache but has no private key rewrites the fp32 artifact's entry.
    rewrite_entry(entry, {artifact: honest[:-16] + b"\0" * 16}, tmp_path / "work")

    reader = fp32_convert(tiny_h5, tiny_dataset, tmp_path / "reader", "--cache-dir", str(cache_dir),
                          "--cache-public-key", str(keys / "bundle-signing.pub.pem"))
    assert reader.returncode == 0, reader.stderr
    (warning,) = warnings_about(reader.stderr, "shared cache entry")
    assert f"{entry} is not signed by the --cache-public-key key" in warning
    assert "export restored from the shared cache" in reader.stdout  # signed entries still are
    assert "tflite-fp32 restored" not in reader.stdout
    assert (tmp_path / "reader" / "tiny" / artifact).read_bytes() == honest

    # Without the public key the rewritten bytes would have been restored: the threat is real.
    trusting = fp32_convert(tiny_h5, tiny_dataset, tmp_path / "trusting", "--cache-dir",
                            str(cache_dir))
    assert trusting.returncode == 0, trusting.stderr
    assert (tmp_path / "trusting" / "tiny" / artifact).read_bytes() == honest[:-16] + b"\0" * 16


def test_a_signed_entry_moved_to_another_key_is_not_restored(
        tiny_h5: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    keys, cache_dir = tmp_path / "keys", tmp_path / "cache"
    run_invoke("bundle-keygen", "--out", str(keys), check=True)
    private, public = keys / "bundle-signing.pem", keys / "bundle-signing.pub.pem"
    result = build.convert(make_config(tiny_h5, tiny_dataset, tmp_path / "out", cache_dir=cache_dir,
                                       quantizations=(Quantization.FP32,), cache_sign_key=private),
                           ["test"])
    assert cache_dir.is_dir() and result.plans[0].keys
    missing = run_invoke("convert", "--model", str(tiny_h5), *quick_flags(tiny_dataset, tmp_path / "o"),
                         "--cache-public-key", str(public))
    assert_user_error(missing, "--cache-public-key", "add --cache-dir DIR")
    plan = result.plans[0]
    shared = SharedCache(cache_dir)
    fp32, fp32_validation = shared.entry(plan.keys["tflite-fp32"]), \
        shared.entry(plan.keys["validate-tflite-fp32"])
    for name in (ENTRY, DIGEST, SIGNATURE):  # a validly signed entry under another stage's key
        shutil.copyfile(fp32 / name, fp32_validation / name)
    reader = fp32_convert(tiny_h5, tiny_dataset, tmp_path / "reader", "--cache-dir", str(cache_dir),
                          "--cache-public-key", str(public))
    assert reader.returncode == 0, reader.stderr
    assert f"{fp32_validation} is not signed by the --cache-public-key key" in reader.stderr
    assert "validate-tflite-fp32 restored" not in reader.stdout
