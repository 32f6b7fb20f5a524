"""``--executor ray`` on a real two-node Ray cluster on this machine's loopback.

The module's fixture starts a head node (1 CPU) and a second node (1 CPU and the custom resource
``edgetpu_compiler``), each with ``ray start --block`` in its own session and temp dir, both
sharing a token made for this test (Ray 2.60 turns token authentication on), and stops them by
pid at the end. The builds use the tiny models of conftest.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from converters import build, cache, targets
from converters.config import Executor
from converters.errors import ToolMissingError
from converters.images import ImageDefinition
from converters.stages.base import StageSpec
from converters.targets import PlanContext, Target
from tests.conftest import ROOT, make_config, quick_flags, tiny_model, write_images

# Not imported here: Ray reads its authentication settings when first imported, and the
# driver's environment gets them from the cluster fixture (``joined``) first.
if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed: pip install -c constraints.txt -e '.[ray]'",
                allow_module_level=True)

RAY = Path(sys.executable).parent / "ray"
SAMPLES = ROOT / "tests" / "data" / "edgetpu"
ARTIFACT_SUFFIXES = (".tflite", ".onnx")


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]  # what a driver needs to join (the token)
    head_node: str
    compiler_node: str
    processes: tuple[subprocess.Popen[bytes], ...]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def descendants(pids: list[int]) -> list[int]:
    """Every process below ``pids`` (read from /proc), so that only our cluster is stopped."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cluster_nodes(address: str, env: dict[str, str]) -> list[dict[str, object]]:
    probe = (f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); "
             "print(json.dumps([n for n in ray.nodes() if n['Alive']]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120, check=True)
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


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


def start_node(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen([str(RAY), "start", *argv, "--disable-usage-stats",
                                 "--object-store-memory=200000000", "--block"],
                                stdout=handle, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def stop(processes: tuple[subprocess.Popen[bytes], ...]) -> None:
    """SIGTERM each ``ray start --block`` (it stops its node), then SIGKILL what is left below it."""
    below = descendants([p.pid for p in processes])
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Token authentication (on by default since Ray 2.5x) with a token made for this cluster.
    join = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    base = {**os.environ, **join, "PYTHONPATH": str(ROOT)}
    head_tmp = Path(tempfile.mkdtemp(prefix="tec-ray-head-"))
    node_tmp = Path(tempfile.mkdtemp(prefix="tec-ray-node-"))
    compiler_path = fake_compiler(node_tmp / "bin")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(start_node(
            ["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
             f"--temp-dir={head_tmp}", "--include-dashboard=false"], base, head_tmp / "start.log"))
        wait_for_port(port, processes[0], head_tmp / "start.log")
        node_env = {**base, "PATH": f"{compiler_path}{os.pathsep}{base['PATH']}"}
        processes.append(start_node(
            [f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
             "--resources", json.dumps({"edgetpu_compiler": 1}), f"--temp-dir={node_tmp}"],
            node_env, node_tmp / "start.log"))
        nodes = wait_for_nodes(address, join, 2)
        head = next(str(n["NodeID"]) for n in nodes if "edgetpu_compiler" not in n["Resources"])  # type: ignore[operator]
        compiler = next(str(n["NodeID"]) for n in nodes if "edgetpu_compiler" in n["Resources"])  # type: ignore[operator]
        yield Cluster(address, join, head, compiler, tuple(processes))
    finally:
        stop(tuple(processes))
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(node_tmp, ignore_errors=True)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(120):
        if process.poll() is not None:
            raise AssertionError(f"ray start --head exited:\n{log.read_text()[-3000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"the Ray head did not open port {port}:\n{log.read_text()[-3000:]}")


def wait_for_nodes(address: str, env: dict[str, str], count: int) -> list[dict[str, object]]:
    for _ in range(30):
        nodes = cluster_nodes(address, env)
        if len(nodes) >= count:
            return nodes
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} has {len(nodes)} nodes, not {count}")


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
    return {p.stem: json.loads(p.read_text()) for p in (build_dir / cache.STAMP_DIR).glob("*.json")
            if p.name != cache.BUILD_INFO}


def test_two_models_tflite_and_onnx_on_ray_give_the_local_bytes(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path) -> None:
    models, images = two_models
    local = build.convert(make_config(models, images, tmp_path / "local",
                                      targets=("tflite", "onnx")), ["test"])
    on_ray = build.convert(make_config(models, images, tmp_path / "ray", targets=("tflite", "onnx"),
                                       executor=Executor.RAY, ray_address=joined.address), ["test"])
    assert on_ray.problems == () and on_ray.ran == local.ran
    built = artifacts(tmp_path / "ray")
    assert len(built) == 2 * (4 + 2)  # two models x (4 TFLite modes + ONNX fp32 and int8)
    assert built == artifacts(tmp_path / "local")
    nodes = set()
    for plan in on_ray.plans:
        assert cache.verify_build_dir(plan.build_dir)[1] == []
        for name, stamp in stamps(plan.build_dir).items():
            if name != "report":  # the report runs on the driver
                assert stamp["executor"] == "ray"
                nodes.add(stamp["ray_node"])
    assert nodes <= {joined.head_node, joined.compiler_node}


def test_edgetpu_compile_runs_on_the_node_that_offers_the_compiler(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path) -> None:
    models, images = two_models
    result = build.convert(make_config(models[0], images, tmp_path / "out", targets=("edgetpu",),
                                       executor=Executor.RAY, ray_address=joined.address), ["test"])
    compiled = stamps(result.plans[0].build_dir)["edgetpu-compile"]
    assert compiled["ray_node"] == joined.compiler_node and not compiled["skipped"]
    record = json.loads((result.plans[0].build_dir / compiled_record(compiled)).read_text())
    assert record["ran"] is True  # the stand-in was on that node's PATH (and not on the driver's)
    assert shutil.which("edgetpu_compiler") is None


def compiled_record(stamp: dict[str, object]) -> str:
    return next(name for name in stamp["outputs"] if name.endswith(".json"))  # type: ignore[attr-defined]


def test_a_job_whose_resource_no_node_offers_fails_at_once_saying_how_to_add_one(
        joined: Cluster, two_models: tuple[list[Path], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def plan(context: PlanContext) -> list[StageSpec]:
        return [StageSpec("annealed", "anneal", "annealer", {}, deps=("export",),
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
    assert cache.verify_build_dir(out / models[0].stem)[1] == []


def kill_a_worker_running_a_stage(cluster: Cluster, build: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the Ray worker process (on either node) whose stage process is running a stage;
    its stage process dies with it (PR_SET_PDEATHSIG)."""
    deadline = time.time() + 300
    while time.time() < deadline and build.poll() is None:
        below = descendants([p.pid for p in cluster.processes])
        stage = next((pid for pid in below if "converters run-job" in command_line(pid)), None)
        if stage is not None:
            time.sleep(2)  # well inside the job: TensorFlow is still importing
            try:
                stat = (Path("/proc") / str(stage) / "stat").read_text()
            except OSError:
                continue  # that stage process ended meanwhile: wait for the next
            os.kill(int(stat.rsplit(")", 1)[1].split()[1]), signal.SIGKILL)  # its parent: the worker
            return True
        time.sleep(0.2)
    return False
