"""Stages of the Edge TPU target: the pre-check (``edgetpu-check``, in the tflite image) and the
compiler (``edgetpu-compile``, in the edgetpu image or wherever ``edgetpu_compiler`` is on PATH).

Where the compiler is not available the compile stage records that it did not run and why; the
int8 model, the pre-check and the report are still produced and the build exits non-zero
(:func:`build_problems`). Its key includes the compiler's version (or its absence), so the stage
runs again once a compiler is there.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters import console
from converters.errors import ConversionError
from converters.fsutil import read_json, write_bytes_atomic, write_json_atomic, write_text_atomic
from converters.stages.base import StageContext, StageParams, StageSkipped, StageSpec
from converters.targets.base import CORE_IMAGE
from converters.targets.edgetpu.compiler import (
    COMPILER,
    CompileOptions,
    parse_output,
    runtime_version_needed,
)

COMPILER_TOOL = COMPILER
COMPILED_DIR = "edgetpu/compiled"
COMPILE_RECORD = "edgetpu/compile.json"
SPLIT_DIR = "edgetpu/split"
NOT_RUN_HELP = (
    "edgetpu_compiler is not available: build the edgetpu image with `invoke images --target "
    "edgetpu --base bootstrap` on an x86-64 host that reaches Coral's repository "
    "(https://packages.cloud.google.com), or install edgetpu-compiler there "
    "(coral.ai/docs/edgetpu/compiler), then run the same invoke convert again"
)
OUTPUT_TAIL_LINES = 15


@dataclass(frozen=True, kw_only=True)
class CheckParams(StageParams):
    artifact: str  # the int8 model
    output: str  # the pre-check record


@dataclass(frozen=True, kw_only=True)
class CompileParams(StageParams):
    artifact: str  # the int8 model
    options: dict[str, Any]  # CompileOptions.as_dict()
    output_dir: str
    record: str
    precheck: str  # the pre-check record the failure message points to
    split_record: str | None = None  # --edgetpu-split: the split whose head is compiled too


@dataclass(frozen=True, kw_only=True)
class SplitParams(StageParams):
    artifact: str  # the int8 model to split
    output_dir: str


def int8_artifact(stem: str) -> str:
    return f"edgetpu/{stem}_int8.tflite"


def precheck_record(stem: str) -> str:
    return f"edgetpu/{stem}_int8_precheck.json"


def precheck(context: StageContext) -> None:
    """Stage ``edgetpu-check``: the predicted op mapping of the int8 model, no compiler needed."""
    from converters.targets.edgetpu import check as edgetpu_check

    params = CheckParams.of(context)
    artifact = context.read(params.artifact)
    result = edgetpu_check.check_file(artifact)
    result["model"] = params.artifact
    write_json_atomic(context.write(params.output), result)
    console.info(f"Edge TPU pre-check: {result['tpu_ops']} of {result['total_ops']} ops predicted "
                 "on the Edge TPU" + ("" if result["compiles"] else
                                      f"; will not compile: {'; '.join(result['blocking'])}"))


def compile_model(context: StageContext) -> None:
    """Stage ``edgetpu-compile``: run the compiler, keep its outputs and its parsed verdict."""
    params = CompileParams.of(context)
    options = CompileOptions(**{**params.options,
                                "intermediate_tensors": tuple(params.options["intermediate_tensors"])})
    out_dir = context.write(params.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = context.write(params.record)
    compiler = shutil.which(COMPILER)
    if compiler is None:
        write_json_atomic(record_path, {"ran": False, "reason": NOT_RUN_HELP,
                                        "options": options.as_dict()})
        raise StageSkipped(f"the Edge TPU compile did not run (the int8 model and the pre-check "
                           f"are built): {NOT_RUN_HELP}")
    model = context.read(params.artifact)
    argv, stdout, verdict = run_compiler(model, options, out_dir, params.precheck)
    write_text_atomic(out_dir / "compiler_output.txt", stdout)
    carry_metadata(model, out_dir)
    head = split_head(context)
    head_verdict = run_compiler(head, options, out_dir, params.precheck)[2] if head else None
    write_json_atomic(record_path, {
        "ran": True,
        "command": argv,
        "options": options.as_dict(),
        **verdict,
        "runtime_version_needed": runtime_version_needed(verdict["compiler_version"], options),
        "compiled_models": sorted(p.name for p in out_dir.glob("*_edgetpu.tflite")),
        "logs": [p.name for p in sorted(out_dir.glob("*.log"))],
        "split_head": head_verdict,
    })
    console.info(f"Edge TPU: {verdict['tpu_ops']} of {verdict['total_ops']} ops mapped, "
                 f"{verdict['edgetpu_subgraphs']} Edge TPU subgraph(s)")


def carry_metadata(source: Path, out_dir: Path) -> None:
    """Give the compiled model the int8 model's metadata (name, normalization, labels) where
    the compiler did not keep it; its ops and tensors stay as the compiler wrote them."""
    from converters.targets.tflite import metadata

    for compiled in out_dir.glob(source.stem + "_edgetpu.tflite"):
        with_metadata = metadata.carried(source.read_bytes(), compiled.read_bytes())
        if with_metadata is not None:
            write_bytes_atomic(compiled, with_metadata)
            console.info(f"{compiled.name}: the int8 model's metadata written into it")


def run_compiler(model: Path, options: CompileOptions, out_dir: Path,
                 precheck: str) -> tuple[list[str], str, dict[str, Any]]:
    """(argv, output, parsed verdict) of one compile; a failed compile raises ConversionError."""
    argv = options.argv(str(model), str(out_dir))
    console.info("$ " + " ".join(argv))
    try:
        completed = subprocess.run(argv, capture_output=True, text=True,
                                   timeout=options.timeout_sec + 60)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{COMPILER} did not finish within {options.timeout_sec + 60} s on "
                              f"{model}: raise --compiler-timeout") from None
    stdout = completed.stdout + completed.stderr
    print(stdout, end="", flush=True)
    log = out_dir / model.name.replace(".tflite", "_edgetpu.log")
    verdict = parse_output(stdout, log.read_text(errors="replace") if log.exists() else "",
                           completed.returncode)
    if not verdict["succeeded"]:
        tail = "\n".join(f"  | {line}" for line in stdout.splitlines()[-OUTPUT_TAIL_LINES:])
        raise ConversionError(
            f"Edge TPU compilation of {model} failed: {'; '.join(verdict['failures'])}. The "
            f"pre-check's prediction is in {precheck}.\n"
            f"command: {' '.join(argv)}\nlast lines of its output:\n{tail}")
    return argv, stdout, verdict


def split_head(context: StageContext) -> Path | None:
    """The ``--edgetpu-split`` head to compile as well, when the split was written."""
    record = CompileParams.of(context).split_record
    if record is None:
        return None
    path = context.read(record)
    split = read_json(path)
    return path.parent / split["head"] if split["split"] else None


def build_problems(build_dir: Path, min_tpu_ops: float | None) -> list[str]:
    """Why a compiled Edge TPU build must still exit non-zero: too few ops on the Edge TPU
    (--min-tpu-ops), or that share unknown."""
    path = build_dir / COMPILE_RECORD
    if not path.exists():
        return []
    record = read_json(path)
    if not record["ran"]:
        return []  # the skipped stage says so (the executor's "skipped" outcome)
    fraction = record.get("tpu_fraction")
    if min_tpu_ops is not None and fraction is None:
        return [f"{build_dir.name}: --min-tpu-ops {min_tpu_ops:.0%} cannot be checked: the "
                "compiler's output gives no Edge TPU op count (no counts, no op table, no log); "
                f"see {build_dir / COMPILED_DIR / 'compiler_output.txt'}"]
    if min_tpu_ops is not None and fraction is not None and fraction < min_tpu_ops:
        return [f"{build_dir.name}: only {fraction:.0%} of the ops map to the Edge TPU, below "
                f"--min-tpu-ops {min_tpu_ops:.0%}; see the CPU ops and their reasons in "
                f"{build_dir / 'report.md'}"]
    return []


def split_record(stem: str) -> str:
    from converters.targets.edgetpu.split import RECORD_SUFFIX

    return f"{SPLIT_DIR}/{stem}_int8{RECORD_SUFFIX}"


def split_stage(artifact: str) -> StageSpec:
    """``--edgetpu-split``: the Edge TPU head and the CPU tail of the int8 model."""
    return StageSpec("edgetpu-split", "edgetpu-split", CORE_IMAGE,
                     SplitParams(artifact=artifact, output_dir=SPLIT_DIR),
                     deps=("edgetpu-int8",), outputs=(SPLIT_DIR,),
                     tools=("ai-edge-litert", "numpy", "flatbuffers"), group="edgetpu-int8")


def split_report_params(stem: str, enabled: bool) -> dict[str, str]:
    return {"split": split_record(stem)} if enabled else {}


def split(context: StageContext) -> None:
    """Stage ``edgetpu-split``: write, validate and record the head/tail pair."""
    from converters.targets.edgetpu.split import split_lines, split_model

    params = SplitParams.of(context)
    out_dir = context.write(params.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for line in split_lines(split_model(context.read(params.artifact), out_dir)):
        console.info(line)
