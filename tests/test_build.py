"""The build system: stage cache, manifest, verification, reproducibility, kill safety, lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from converters.cache import stage_cache
from converters.config import DEFAULT_QUANTIZATIONS, Quantization
from converters.fsutil import read_json, sha256_file
from converters.pipeline import build
from tests.conftest import (
    INFO_NOISE,
    ROOT,
    make_config,
    quick_flags,
    run_invoke,
    tiny_model,
    write_images,
)

ALL_STAGES = ["export", "data", "reference", "tflite-fp32", "validate-tflite-fp32",
              "tflite-fp16", "validate-tflite-fp16", "tflite-dynamic", "validate-tflite-dynamic",
              "tflite-int8", "validate-tflite-int8", "tflite-int8-mixed",
              "validate-tflite-int8-mixed", "report"]  # int8-mixed: automatic, run if needed


@pytest.fixture()
def workspace(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private copy of a model and a dataset that a test may change."""
    model = tmp_path / "m.h5"
    tiny_model().save(model)  # type: ignore[attr-defined]
    dataset = tmp_path / "images"
    write_images(dataset, {"a": 8, "b": 8, "c": 8})
    return model, dataset, tmp_path / "build"


def test_rebuild_skips_fresh_stages_and_dataset_change_rebuilds_only_consumers(
        workspace: tuple[Path, Path, Path]) -> None:
    model, dataset, out = workspace
    first = build.convert(make_config(model, dataset, out), ["test"])
    assert first.ran["m"] == ALL_STAGES
    noop = build.convert(make_config(model, dataset, out), ["test"])
    assert noop.ran["m"] == [] and noop.skipped["m"] == ALL_STAGES

    write_images(dataset, {"a": 3}, seed=7)  # three images of class a redrawn: the dataset changed
    changed = build.convert(make_config(model, dataset, out), ["test"])
    # Every TFLite mode is written again: its metadata carries the dataset's class names and
    # preprocessing (and fp16/dynamic's per-op error is measured on calibration images).
    assert set(changed.skipped["m"]) == {"export"}
    assert {"tflite-int8", "tflite-fp16", "data"} <= set(changed.ran["m"])

    tiny_model(seed=5).save(model)  # type: ignore[attr-defined]
    remodelled = build.convert(make_config(model, dataset, out), ["test"])
    assert remodelled.ran["m"] == ALL_STAGES
    forced = build.convert(make_config(model, dataset, out, force=True), ["test"])
    assert forced.ran["m"] == ALL_STAGES


# What deciding that nothing changed, and listing the tasks, must not load: the conversion and
# numeric libraries (numpy alone is 0.1 s of a 0.5 s no-op rebuild).
HEAVY = ("tensorflow", "keras", "numpy", "matplotlib", "PIL", "onnx", "flatbuffers", "paramiko")


def imported_modules(*invoke_args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules a real ``invoke ARGS`` command imports (python -X importtime)."""
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "invoke", "--search-root", str(ROOT),
         *invoke_args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert probe.returncode == 0, probe.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in probe.stderr.splitlines()
                if line.startswith("import time:")}
    return imported, probe


def test_noop_build_imports_no_conversion_or_numeric_library(
        workspace: tuple[Path, Path, Path]) -> None:
    model, dataset, out = workspace
    flags = ["--model", str(model), *quick_flags(dataset, out)]
    run_invoke("convert", *flags, check=True)
    imported, probe = imported_modules("convert", *flags)
    assert "converters.pipeline.build" in imported  # the probe does see our imports
    assert not {name for name in imported if name.split(".")[0] in HEAVY}
    assert "▶" not in probe.stdout and probe.stdout.count("is up to date") == len(ALL_STAGES)


def test_listing_the_tasks_imports_no_library_beyond_invoke() -> None:
    imported, probe = imported_modules("--list")
    assert "convert" in probe.stdout and "converters.commands.settings" in imported
    assert not {name for name in imported if name.split(".")[0] in (*HEAVY, "rich")}


def test_build_output_has_no_native_info_lines(workspace: tuple[Path, Path, Path]) -> None:
    """The default modes and int8-mixed print only the build's own lines. fp16, dynamic and
    int8-mixed are made by ai-edge-quantizer, whose LiteRT interpreters announce their XNNPACK
    delegate through LiteRT's own logger (TF_CPP_MIN_LOG_LEVEL does not quieten it), whose
    calibration warns that keeping every tensor is for debugging, and which shows progress
    bars for 100 tensors or more to quantize even when asked not to."""
    import keras

    _, dataset, out = workspace
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Flatten()(inputs)
    for _ in range(55):  # a kernel and a bias each to quantize
        x = keras.layers.Dense(16, activation="tanh")(x)
    model = out.parent / "deep.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(model)
    result = run_invoke("convert", "--model", str(model), *quick_flags(dataset, out), "--quant",
                        "fp32,fp16,dynamic,int8,int8-mixed", check=True)
    output = result.stdout + result.stderr
    assert all(f"✔ deep: tflite-{mode} (" in output for mode in ("fp16", "dynamic", "int8-mixed"))
    for noise in (*INFO_NOISE, "Applying Transformations", "Running Calibration", "it/s]"):
        assert noise not in output


def test_text_written_onto_a_progress_bars_line_is_kept(capfd: pytest.CaptureFixture[str]) -> None:
    """ai-edge-quantizer's progress bars are dropped whole; a warning that lands on a bar's
    line (the bar has no line end yet) still reaches the user."""
    from converters import console

    bar = "Applying Transformations to tensors:: {:3d}%|#   | {}/132 [00:00<?, ?it/s]"
    with console.native_noise_filtered():
        os.write(2, ("\r" + bar.format(0, 0) + "\r" + bar.format(10, 13)).encode())
        os.write(2, b"WARNING:absl:Quantized data for tensor t is overriding\n")
        os.write(2, ("\r" + bar.format(100, 132) + "\n").encode())
    err = capfd.readouterr().err
    assert "WARNING:absl:Quantized data for tensor t is overriding" in err
    assert bar.format(0, 0) not in err and bar.format(100, 132) not in err


def test_manifest_records_provenance_and_verify_names_a_changed_file(
        workspace: tuple[Path, Path, Path]) -> None:
    model, dataset, out = workspace
    run_invoke("convert", "--model", str(model), *quick_flags(dataset, out), check=True)
    manifest = read_json(out / "m" / "manifest.json")
    artifact = manifest["artifacts"]["tflite/m_int8.tflite"]
    assert artifact["sha256"] == sha256_file(out / "m" / "tflite" / "m_int8.tflite")
    assert artifact["stage"] == "tflite-int8" and len(artifact["key"]) == 64
    assert manifest["inputs"]["model"]["sha256"] == sha256_file(model)
    command = manifest["command"]
    assert "convert" in command and command[command.index("--threads") + 1] == "1"
    assert manifest["started"] and manifest["finished"]
    stage = manifest["stages"]["tflite-int8"]
    assert stage["environment"]["tensorflow"].startswith("tensorflow")
    assert stage["runner"] == "local" and stage["started"] <= stage["finished"]
    assert run_invoke("verify", "--out", str(out)).returncode == 0

    target = out / "m" / "tflite" / "m_fp16.tflite"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    result = run_invoke("verify", "--out", str(out))
    assert result.returncode != 0 and "m_fp16.tflite" in result.stderr
    assert "m_int8" not in result.stderr and "Traceback" not in result.stderr


def test_same_inputs_give_byte_identical_artifacts(workspace: tuple[Path, Path, Path]) -> None:
    model, dataset, out = workspace
    for name in ("one", "two"):  # each build converts in its own stage process
        build.convert(make_config(model, dataset, out / name), ["test"])
    differing = []
    for mode in DEFAULT_QUANTIZATIONS:
        relative = f"m/tflite/m_{mode.value}.tflite"
        if sha256_file(out / "one" / relative) != sha256_file(out / "two" / relative):
            differing.append(relative)
    assert differing == [], f"not deterministic: {differing}"


def _wait_for(process: subprocess.Popen[str], text: str, seen: list[str]) -> None:
    assert process.stdout is not None
    deadline = time.time() + 300
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"process ended before printing {text!r}:\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"timed out waiting for {text!r}")


def _start_convert(model: Path, dataset: Path, out: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert", "--model",
         str(model), *quick_flags(dataset, out), *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (read from /proc; no procps needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command_line:
            found.append(int(entry.name))
    return found


def _resnet(path: Path) -> Path:
    """A ResNet50 (64x64, 95 MB): its fp32 conversion takes long enough to be killed mid-stage
    (about 6 s; a MobileNetV2's now takes under a second)."""
    import keras

    keras.utils.set_random_seed(0)
    keras.applications.ResNet50(input_shape=(64, 64, 3), weights=None, classes=3).save(path)
    return path


def test_sigkill_mid_stage_leaves_no_partial_artifact_and_next_run_completes(
        workspace: tuple[Path, Path, Path]) -> None:
    _, dataset, out = workspace
    model = _resnet(out.parent / "mobile.keras")
    fp32_only = ("--quant", "fp32")  # the stage killed; the other modes would only add time
    process = _start_convert(model, dataset, out, *fp32_only)
    seen: list[str] = []
    _wait_for(process, "▶ mobile: tflite-fp32", seen)
    time.sleep(1.5)  # inside the fp32 conversion
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    folder = out / "mobile"
    assert (folder / ".staging" / "tflite-fp32").exists(), "the kill did not land mid-stage"
    assert not (folder / "tflite" / "mobile_fp32.tflite").exists()
    manifest = read_json(folder / "manifest.json")
    assert "tflite/mobile_fp32.tflite" not in manifest["artifacts"]
    # What the stamps record is intact; the build is marked incomplete, naming the stale stages.
    _, problems = stage_cache.verify_build_dir(folder)
    assert len(problems) == 1 and "did not finish" in problems[0], problems
    assert "tflite-fp32" in problems[0]
    time.sleep(0.5)
    assert _processes_mentioning(str(folder / ".jobs")) == [], "a stage process outlived the build"

    rerun = run_invoke("convert", "--model", str(model), *quick_flags(dataset, out), *fp32_only)
    assert rerun.returncode == 0, rerun.stderr
    assert "export is up to date" in rerun.stdout  # finished stages were kept
    assert not (folder / ".staging").exists()
    assert run_invoke("verify", "--out", str(out)).returncode == 0


def test_concurrent_builds_on_one_directory_wait_for_the_lock(
        workspace: tuple[Path, Path, Path]) -> None:
    model, dataset, out = workspace
    first = _start_convert(model, dataset, out)
    seen: list[str] = []
    _wait_for(first, "▶ m: export", seen)
    second = _start_convert(model, dataset, out)
    second_output, _ = second.communicate(timeout=600)
    first_output, _ = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, first_output + second_output
    assert "waiting for the build that holds" in second_output
    # The second build started after the first finished, so it found everything up to date.
    assert "▶" not in second_output
    assert stage_cache.verify_build_dir(out / "m")[1] == []


def test_several_models_in_parallel_and_models_list_in_config(
        workspace: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, dataset, out = workspace
    other = tmp_path / "other.keras"
    tiny_model(seed=3).save(other)  # type: ignore[attr-defined]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"convert:\n  models: ['{model}', '{other}']\n  quant: fp32,int8\n")
    result = run_invoke("-f", str(config_file), "convert", *quick_flags(dataset, out), "--jobs",
                        "2")
    assert result.returncode == 0, result.stderr
    for stem in ("m", "other"):
        report = read_json(out / stem / "report.json")
        assert [a["variant"] for a in report["artifacts"]] == ["fp32", "int8"]


def test_the_stage_process_ends_fast_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    """The stage process ends without the interpreter's teardown once its jobs are done (1.1 s
    with TensorFlow and MediaPipe loaded), yet what libraries registered to run at exit still
    runs: TensorFlow's autograph removes the files it generated, so TMPDIR is left empty, and
    the build's outputs and exit code are as before."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = run_invoke("convert", "--model", str(ROOT / "model" / "sample.h5"),
                        *quick_flags(ROOT / "dataset", tmp_path / "out"),
                        env={"TMPDIR": str(temporary)})
    assert result.returncode == 0, result.stderr
    assert read_json(tmp_path / "out" / "sample" / "report.json")["artifacts"]
    assert sorted(path.name for path in temporary.iterdir()) == []


FREED_BY_A_STAGE = """
import ctypes, os
from converters.pipeline.executor import release_freed_memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
page = os.sysconf("SC_PAGE_SIZE")
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * page
block = 64 * 1024  # below malloc's mmap threshold: from the heap, as most small allocations are
blocks = [libc.malloc(block) for _ in range(3200)]  # 200 MiB
for address in blocks:
    ctypes.memset(address, 1, block)
for address in blocks[:-1]:  # the last one stays, so the heap's top cannot shrink by itself
    libc.free(address)
before = resident()
release_freed_memory()
print(before - resident())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux")
def test_heap_memory_a_stage_freed_goes_back_to_the_system() -> None:
    """glibc keeps freed heap memory in the process: without handing it back, what one stage
    freed stays resident under every later stage of the job. 200 MiB freed in the heap's middle
    leave the resident set when the stage process releases it."""
    result = subprocess.run([sys.executable, "-c", FREED_BY_A_STAGE], capture_output=True,
                            text=True, cwd=ROOT, check=True)
    assert int(result.stdout) > 150 * 2**20


def test_one_at_a_time_the_models_share_one_stage_process(
        workspace: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-j 1 on the local runner: every model's job runs in one stage process (TensorFlow is
    imported once), and its artifacts are byte for byte those of a process per model (-j 2)."""
    import numpy as np

    from converters.pipeline import stage_jobs

    model, dataset, _ = workspace
    other = tmp_path / "other.keras"
    tiny_model(seed=3).save(other)  # type: ignore[attr-defined]
    broken = tmp_path / "broken.keras"
    nan_weights = tiny_model(seed=4)
    nan_weights.set_weights([np.full_like(w, np.nan) for w in nan_weights.get_weights()])  # type: ignore[attr-defined]
    nan_weights.save(broken)  # type: ignore[attr-defined]
    started: list[list[str]] = []
    real = stage_jobs.run_streaming

    def counted(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str]]:
        started.append(argv)
        return real(argv, env=env)

    monkeypatch.setattr(stage_jobs, "run_streaming", counted)
    modes = (Quantization.FP32, Quantization.INT8)
    build.convert(make_config([model, other], dataset, tmp_path / "together", jobs=1,
                              quantizations=modes), ["test"])
    assert len(started) == 1 and sum(arg.endswith(".json") for arg in started[0]) == 2
    build.convert(make_config([model, other], dataset, tmp_path / "apart", jobs=2,
                              quantizations=modes), ["test"])
    assert len(started) == 3  # a process per model
    for stem in ("m", "other"):
        names = sorted(p.name for p in (tmp_path / "together" / stem / "tflite").glob("*.tflite"))
        assert names == [f"{stem}_fp32.tflite", f"{stem}_int8.tflite"]
        for name in names:
            assert sha256_file(tmp_path / "together" / stem / "tflite" / name) == \
                sha256_file(tmp_path / "apart" / stem / "tflite" / name), name
    # The first model fails: the process stops there, as separate processes would, and the
    # error names it; the next model's (forced) job does not run, and no job file stays.
    stamp = stage_cache.read_stamp(tmp_path / "together" / "other", "tflite-fp32")
    with pytest.raises(Exception, match=r"broken\.keras.*non-finite") as failure:
        build.convert(make_config([broken, other], dataset, tmp_path / "together", jobs=1,
                                  quantizations=modes, force=True), ["test"])
    assert type(failure.value).__name__ == "ModelError"
    assert len(started) == 4
    assert stage_cache.read_stamp(tmp_path / "together" / "other", "tflite-fp32") == stamp
    assert not list((tmp_path / "together" / "other").glob(".jobs/*.json"))


def test_models_fill_the_job_slots_before_variants_are_split(
        workspace: tuple[Path, Path, Path]) -> None:
    """Every stage process imports TensorFlow: locally, -j N runs N models in one process each,
    and splits a model's variants into processes of their own only when slots are left."""
    from converters.config import Executor

    model, dataset, out = workspace
    assert not build.split_per_variant(make_config(model, dataset, out, jobs=1), models=1)
    assert build.split_per_variant(make_config(model, dataset, out, jobs=2), models=1)
    assert not build.split_per_variant(make_config(model, dataset, out, jobs=2), models=2)
    assert build.split_per_variant(make_config(model, dataset, out, jobs=4), models=3)
    on_ray = make_config(model, dataset, out, jobs=2, executor=Executor.RAY)
    assert build.split_per_variant(on_ray, models=2)  # variants spread a model over the nodes


def test_clean_dry_run_lists_and_clean_removes(workspace: tuple[Path, Path, Path]) -> None:
    model, dataset, out = workspace
    shutil.rmtree(out, ignore_errors=True)
    build.convert(make_config(model, dataset, out, quantizations=(Quantization.FP32,)), ["test"])
    dry = run_invoke("clean", "--out", str(out), "--dry-run")
    assert dry.returncode == 0 and f"would remove {out / 'm'}" in dry.stdout
    assert (out / "m" / "tflite" / "m_fp32.tflite").exists()
    assert run_invoke("clean", "--out", str(out)).returncode == 0
    assert not out.exists()
    assert os.path.exists(model)


def test_jobs_split_per_mode_with_parallelism(workspace: tuple[Path, Path, Path]) -> None:
    from converters.pipeline.plan import plan_model
    from converters.runners.local import LocalRunner

    model, dataset, out = workspace
    config = make_config(model, dataset, out)
    plan = plan_model(config, model, {"tflite": LocalRunner(), "host": LocalRunner()})
    tf_stages = [s for s in plan.stages if s.image != "host"]
    single = build.group_jobs(plan, tf_stages, split_groups=False)
    assert [(j.name, len(j.specs), j.needs) for j in single] == [("tflite", 13, [])]
    # one process converts every mode before it validates any (a validation's runtimes stay
    # loaded), and the automatic int8-mixed still follows the int8 validation it reads
    assert [s.name for s in single[0].specs] == [
        "export", "data", "reference", "tflite-fp32", "tflite-fp16", "tflite-dynamic",
        "tflite-int8", "validate-tflite-fp32", "validate-tflite-fp16", "validate-tflite-dynamic",
        "validate-tflite-int8", "tflite-int8-mixed", "validate-tflite-int8-mixed"]
    split = build.group_jobs(plan, tf_stages, split_groups=True)
    prepare, *modes, mixed = split
    assert [s.name for s in prepare.specs] == ["export", "data", "reference"]
    assert [j.name for j in modes] == ["tflite-fp32", "tflite-fp16", "tflite-dynamic",
                                       "tflite-int8"]
    fp32 = modes[0]
    assert fp32.needs == [prepare]
    # fp16/dynamic are derived from the fp32 artifact; int8 reports its per-op error against it
    assert all(set(j.needs) == {prepare, fp32} and len(j.needs) == 2 for j in modes[1:])
    assert [s.name for s in modes[3].specs] == ["tflite-int8", "validate-tflite-int8"]
    # the automatic int8-mixed reads plain int8's validation
    assert mixed.name == "tflite-int8-mixed" and set(mixed.needs) == {prepare, fp32, modes[3]}

    build.convert(make_config(model, dataset, out / "serial"), ["test"])
    build.convert(make_config(model, dataset, out / "parallel", jobs=2), ["test"])
    for mode in DEFAULT_QUANTIZATIONS:
        relative = f"m/tflite/m_{mode.value}.tflite"
        assert sha256_file(out / "serial" / relative) == sha256_file(out / "parallel" / relative)
    assert read_json(out / "parallel" / "m" / "report.json")["artifacts"][3]["variant"] == "int8"


def test_stage_processes_import_tensorflow_without_matplotlib_and_can_still_plot() -> None:
    """Keras' optional plotting import is skipped while TensorFlow loads in a stage process;
    matplotlib itself stays importable afterwards (the report plots with it)."""
    script = ("import sys\n"
              "from converters.pipeline.executor import import_tensorflow_quietly\n"
              "import_tensorflow_quietly()\n"
              "assert 'keras' in sys.modules and 'matplotlib' not in sys.modules, 'mpl loaded'\n"
              "import matplotlib\n"
              "matplotlib.use('Agg')\n"
              "import matplotlib.pyplot as plt\n"
              "plt.figure()\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
