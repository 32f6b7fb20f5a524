"""``--executor ray`` on a real two-node Ray cluster on this machine's loopback.

The module's fixture starts a head node (1 CPU) and a second node (1 CPU and the custom resource
``edgetpu_compiler``), each its own ``ray start --block`` with its own temp dir
(tests/ray_cluster.py), and stops them by pid at the end. The builds use conftest's tiny models.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from converters import targets
from converters.cache import stage_cache
from converters.config import Executor, Quantization
from converters.errors import ConfigError, DatasetError, ToolMissingError
from converters.pipeline import build
from converters.pipeline.shared_cache import SharedCache
from converters.runners.images import ImageDefinition
from converters.stages.base import StageParams, StageSpec
from converters.targets import PlanContext, Target
from tests.conftest import (
    ROOT,
    make_config,
    quick_flags,
    run_invoke,
    save_function_model,
    terminal_ctrl_c,
    tiny_model,
    write_images,
)
from tests.ray_cluster import (
    Cluster,
    NodeSpec,
    command_line,
    descendants,
    free_port,
    loopback_cluster,
    parent_pid,
)
from tests.test_cli import assert_user_error

# Not imported here: Ray reads its authentication settings when first imported, and the
# driver's environment gets them from the cluster fixture (``joined``) first.
if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed: pip install -c constraints.txt -e '.[ray]'",
                allow_module_level=True)

SAMPLES = ROOT / "tests" / "data" / "edgetpu"
ARTIFACT_SUFFIXES = (".tflite", ".onnx")
COMPILER_RESOURCE = "edgetpu_compiler"


def fake_compiler(folder: Path) -> Path:
    """A stand-in ``edgetpu_compiler``: a TEST DOUBLE FOR PLACEMENT ONLY. The real compiler cannot
    be installed on these machines (FACTS.md); this script only lets the compile stage run on the
    node whose PATH has it. It copies the int8 model as the "compiled" one and prints Coral's
    documented sample output (tests/data/edgetpu/, written from the docs, not captured)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "edgetpu_compiler"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import pathlib, shutil, sys
        samples = pathlib.Path({str(SAMPLES)!r})
        if "--version" in sys.argv:
            print("Edge TPU Compiler version 16.0.384591198 (stand-in for a Ray placement test)")
            sys.exit(0)
        out = pathlib.Path(sys.argv[sys.argv.index("--out_dir") + 1])
        model = pathlib.Path(sys.argv[-1])
        shutil.copy(model, out / model.name.replace(".tflite", "_edgetpu.tflite"))
        shutil.copy(samples / "success.log", out / model.name.replace(".tflite", "_edgetpu.log"))
        print((samples / "success.stdout").read_text(), end="")
        """))
    script.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head node (1 CPU) and a node with 1 CPU, the compiler resource and the stand-in compiler
    on its PATH (only there)."""
    compiler = fake_compiler(tmp_path_factory.mktemp("compiler-node") / "bin")
    with loopback_cluster([NodeSpec(1), NodeSpec(1, {COMPILER_RESOURCE: 1}, compiler)],
                          ROOT) as started:
        yield started


@pytest.fixture()
def joined(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """This test process as a driver of the cluster (the token in its environment)."""
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    return cluster


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("ray-inputs")
    models = []
    for name, size, seed in (("small", 16, 0), ("other", 12, 1)):
        models.append(root / f"{name}.h5")
        tiny_model(size=size, seed=seed).save(models[-1])  # type: ignore[attr-defined]
    write_images(root / "images", {"a": 8, "b": 8, "c": 8})
    return models, root / "images"


def artifacts(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.suffix in ARTIFACT_SUFFIXES}


def stamps(build_dir: Path) -> dict[str, dict[str, object]]:
    return {p.stem: json.loads(p.read_text()) for p in (build_dir / stage_cache.STAMP_DIR).glob("*.json")
            if p.name != stage_cache.BUILD_INFO}


def test_two_models_tflite_and_onnx_on_ray_give_the_local_bytes(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path) -> None:
    models, images = two_models
    local = build.convert(make_config(models, images, tmp_path / "local",
                                      targets=("tflite", "onnx")), ["test"])
    on_ray = build.convert(make_config(models, images, tmp_path / "ray", targets=("tflite", "onnx"),
                                       executor=Executor.RAY, ray_address=joined.address), ["test"])
    assert on_ray.problems == () and on_ray.ran == local.ran
    built = artifacts(tmp_path / "ray")
    # two models x (4 TFLite modes + ONNX fp32 and int8), and the automatic int8-mixed of the
    # models whose plain int8 is over the bound on these 12 validation images
    mixed = [path for path in built if path.endswith("_int8-mixed.tflite")]
    assert len(built) - len(mixed) == 2 * (4 + 2)
    assert all((tmp_path / "ray" / path.split("/")[0] / "report.json").read_text().count(
        '"variant": "int8-mixed"') for path in mixed)  # each one reported
    assert built == artifacts(tmp_path / "local")
    nodes = set()
    for plan in on_ray.plans:
        assert stage_cache.verify_build_dir(plan.build_dir)[1] == []
        for name, stamp in stamps(plan.build_dir).items():
            if name != "report":  # the report runs on the driver
                assert stamp["executor"] == "ray"
                nodes.add(stamp["ray_node"])
    assert nodes <= {joined.node_without(COMPILER_RESOURCE), joined.node_with(COMPILER_RESOURCE)}
    # Nothing stale: no cluster is joined (this address has none) and nothing runs.
    noop = build.convert(make_config(models, images, tmp_path / "ray", targets=("tflite", "onnx"),
                                     executor=Executor.RAY, ray_address="127.0.0.1:1"), ["test"])
    assert noop.ran == {"small": [], "other": []}


def test_a_wrong_auth_token_is_named(cluster: Cluster, two_models: tuple[list[Path], Path],
                                     tmp_path: Path) -> None:
    models, images = two_models
    result = run_invoke("convert", "--model", str(models[0]), *quick_flags(images, tmp_path),
                        "--executor", "ray", "--ray-address", cluster.address,
                        env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32})
    assert_user_error(result, f"the Ray cluster at {cluster.address} refused this build's "
                      "authentication token: set RAY_AUTH_TOKEN")


def test_edgetpu_compile_runs_on_the_node_that_offers_the_compiler(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path) -> None:
    models, images = two_models
    result = build.convert(make_config(models[0], images, tmp_path / "out", targets=("edgetpu",),
                                       executor=Executor.RAY, ray_address=joined.address), ["test"])
    compiled = stamps(result.plans[0].build_dir)["edgetpu-compile"]
    assert compiled["ray_node"] == joined.node_with(COMPILER_RESOURCE) and not compiled["skipped"]
    record = json.loads((result.plans[0].build_dir / compiled_record(compiled)).read_text())
    assert record["ran"] is True  # the stand-in was on that node's PATH (and not on the driver's)
    assert shutil.which("edgetpu_compiler") is None


def compiled_record(stamp: dict[str, object]) -> str:
    return next(name for name in stamp["outputs"] if name.endswith(".json"))  # type: ignore[attr-defined]


def test_a_failed_variant_is_contained_on_ray_as_in_a_local_build(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path) -> None:
    import tensorflow as tf

    _, images = two_models
    model = save_function_model(tmp_path / "sine", tf.math.sin)  # SIN has no int8 kernel
    # -j 2: one job per variant, so edgetpu-compile (its own job, on the compiler's node) needs
    # the job whose strict int8 conversion fails, and runs all the same.
    settings = {"targets": ("tflite", "edgetpu"), "jobs": 2,
                "quantizations": (Quantization.FP32, Quantization.INT8)}
    local = build.convert(make_config(model, images, tmp_path / "local", **settings), ["test"])
    on_ray = build.convert(make_config(model, images, tmp_path / "ray", executor=Executor.RAY,
                                       ray_address=joined.address, cache_dir=tmp_path / "cache",
                                       **settings), ["test"])
    # Two root failures: the Edge TPU int8 calibrates itself when the tflite int8 (whose ranges
    # it would reuse) failed, and fails on its own, for the same reason: one line names both
    assert on_ray.problems == local.problems and len(on_ray.problems) == 1
    assert re.search(r"sine: tflite-int8, edgetpu-int8 failed: .*cannot be quantized to int8: "
                     r"SIN \(1\)", on_ray.problems[0])
    build_dir = on_ray.plans[0].build_dir
    report = json.loads((build_dir / "report.json").read_text())
    expected = json.loads((tmp_path / "local" / "sine" / "report.json").read_text())
    assert report["not_built"] == expected["not_built"]
    failed = {(n["target"], n["variant"]): n["reason"] for n in report["not_built"] if n["failed"]}
    assert "SIN (1)" in failed[("tflite", "int8")]
    assert [(a["target"], a["variant"]) for a in report["artifacts"]] == [("tflite", "fp32")]
    assert not (build_dir / "tflite" / "sine_int8.tflite").exists()
    for name in ("tflite-int8", "validate-tflite-int8", "edgetpu-int8", "edgetpu-compile"):
        assert stage_cache.read_stamp(build_dir, name) is None
    assert stage_cache.read_failure(build_dir, "tflite-int8")["upstream"] is None  # type: ignore[index]
    assert stage_cache.read_failure(build_dir, "edgetpu-int8")["upstream"] is None  # type: ignore[index]
    compile_failure = stage_cache.read_failure(build_dir, "edgetpu-compile")  # recorded on its node
    assert compile_failure is not None and compile_failure["upstream"] == "edgetpu-int8"
    assert stage_cache.verify_build_dir(build_dir)[1] == []
    # The shared cache holds what succeeded, not the failed stages nor the report listing them.
    shared, keys = SharedCache(tmp_path / "cache"), on_ray.plans[0].keys
    assert (shared.entry(keys["tflite-fp32"]) / "entry.tar").is_file()
    assert not any(shared.entry(keys[name]).exists()
                   for name in ("tflite-int8", "edgetpu-int8", "edgetpu-compile", "report"))

    # From the command line: the failed stages run again; a non-zero exit naming them, no
    # traceback.
    again = run_invoke("convert", "--model", str(model), *quick_flags(images, tmp_path / "ray"),
                       "--target", "tflite,edgetpu", "--quant", "fp32,int8", "--jobs", "2",
                       "--executor", "ray", "--ray-address", joined.address,
                       env=joined.env)
    output = again.stdout + again.stderr
    assert again.returncode != 0 and "Traceback" not in output, output[-4000:]
    assert "will be retried" not in output  # a contained failure is a result, not a retry
    assert "sine: tflite-int8 failed:" in output and "SIN (1)" in output
    assert "sine: tflite-int8 job submitted to Ray" in output  # it ran again (on Ray)
    assert "sine: tflite-fp32 is up to date" in output

    # Once int8 may keep SIN in float, the re-run succeeds and its failure record is gone.
    fallback = build.convert(make_config(model, images, tmp_path / "ray", executor=Executor.RAY,
                                         ray_address=joined.address, allow_float_fallback=True,
                                         **settings), ["test"])
    assert "tflite-int8" in fallback.ran["sine"]
    assert stage_cache.read_failure(build_dir, "tflite-int8") is None
    assert (build_dir / "tflite" / "sine_int8.tflite").is_file()
    report = json.loads((build_dir / "report.json").read_text())
    assert ("tflite", "int8") in [(a["target"], a["variant"]) for a in report["artifacts"]]


def test_a_model_wide_failure_on_ray_stops_the_build_naming_the_driver_paths(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path) -> None:
    models, _ = two_models
    images = tmp_path / "two-classes"
    write_images(images, {"a": 8, "b": 8})  # the model has 3 classes: the data stage refuses
    with pytest.raises(DatasetError) as failure:
        build.convert(make_config(models[0], images, tmp_path / "out", executor=Executor.RAY,
                                  ray_address=joined.address), ["test"])
    message = str(failure.value)
    assert f"dataset {images.resolve()} has 2 class folders" in message, message
    assert f"model {models[0].resolve()} has 3 output classes" in message
    assert "tec-job-" not in message  # not the node's temporary copies


def test_a_job_whose_resource_no_node_offers_fails_at_once_saying_how_to_add_one(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def plan(context: PlanContext) -> list[StageSpec]:
        return [StageSpec("annealed", "anneal", "annealer", StageParams(), deps=("export",),
                          outputs=("annealed.json",))]

    needy = Target("needy", plan, {"anneal": "tests.nowhere:anneal"},
                   images=(ImageDefinition("annealer", "docker/none.Dockerfile",
                                           resources=(("quantum_annealer", 1),)),))
    monkeypatch.setitem(targets._registered, "needy", needy)
    models, images = two_models
    out = tmp_path / "out"
    with pytest.raises(ToolMissingError) as failure:
        build.convert(make_config(models[0], images, out, targets=("needy",),
                                  executor=Executor.RAY, ray_address=joined.address), ["test"])
    message = str(failure.value)
    assert "needs the Ray resource quantum_annealer, which no node" in message
    port = joined.address.rsplit(":", 1)[1]  # Ray names the head by this machine's address
    assert re.search(rf"ray start --address \S+:{port} --resources '{{\"quantum_annealer\": 1}}'$",
                     message), message
    assert not out.exists()  # failed before any task ran: nothing was built


def test_a_worker_killed_mid_task_is_retried_and_the_build_completes(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path) -> None:
    models, images = two_models
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert",
            "--model", str(models[0]), *quick_flags(images, out), "--executor", "ray",
            "--ray-address", joined.address]
    env = {**os.environ, **joined.env, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "build.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        killed = kill_a_worker_running_a_stage(joined, process)
        assert process.wait(timeout=600) == 0, (tmp_path / "build.log").read_text()[-4000:]
    assert killed, "no stage process was seen running on the cluster"
    assert "will be retried" in (tmp_path / "build.log").read_text()  # Ray's word for the retry
    local = build.convert(make_config(models[0], images, tmp_path / "local"), ["test"])
    assert artifacts(out) == artifacts(tmp_path / "local") and local.problems == ()
    assert stage_cache.verify_build_dir(out / models[0].stem)[1] == []


def kill_a_worker_running_a_stage(cluster: Cluster, build: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the Ray worker process (on either node) whose stage process is running a stage;
    its stage process dies with it (PR_SET_PDEATHSIG)."""
    while (stage := wait_for_stage_process(cluster, build)) is not None:
        time.sleep(2)  # well inside the job: TensorFlow is still importing
        try:
            worker = parent_pid(stage)
        except OSError:
            continue  # that stage process ended meanwhile: wait for the next
        os.kill(worker, signal.SIGKILL)
        return True
    return False


def test_ctrl_c_on_the_driver_cancels_the_running_tasks(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path) -> None:
    models, images = two_models
    argv = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert",
            "--model", str(models[0]), *quick_flags(images, tmp_path / "out"), "--executor", "ray",
            "--ray-address", joined.address]
    env = {**os.environ, **joined.env, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "build.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=terminal_ctrl_c)
        assert wait_for_stage_process(joined, process) is not None, "no stage process started"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    output = (tmp_path / "build.log").read_text()
    assert process.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    deadline = time.time() + 60
    while wait_for_stage_process(joined, None) is not None and time.time() < deadline:
        time.sleep(1)
    assert wait_for_stage_process(joined, None) is None  # the task was cancelled on its node


def wait_for_stage_process(cluster: Cluster, build: subprocess.Popen[bytes] | None) -> int | None:
    """A stage process running on the cluster: wait for one while ``build`` runs, or (None)
    look once."""
    deadline = time.time() + 300
    while True:
        below = descendants([p.pid for p in cluster.processes])
        stage = next((pid for pid in below if "converters run-job" in command_line(pid)), None)
        if stage is not None or build is None or build.poll() is not None or time.time() > deadline:
            return stage
        time.sleep(0.2)


def test_ray_address_without_executor_ray_is_refused(two_models: tuple[list[Path], Path],
                                                     tmp_path: Path) -> None:
    models, images = two_models
    with pytest.raises(ConfigError, match="--ray-address 127.0.0.1:1 applies to --executor ray"):
        make_config(models[0], images, tmp_path, ray_address="127.0.0.1:1")


def test_an_address_where_nothing_listens_fails_at_once(two_models: tuple[list[Path], Path],
                                                        tmp_path: Path) -> None:
    models, images = two_models
    address = f"127.0.0.1:{free_port()}"
    # Refused by the converter's own probe ("nothing answers"), before ray.init, which would retry
    # for minutes without answering Ctrl-C.
    with pytest.raises(ToolMissingError, match=f"cannot join the Ray cluster at {address}: nothing "
                                               "answers"):
        build.convert(make_config(models[0], images, tmp_path / "out", executor=Executor.RAY,
                                  ray_address=address), ["test"])
