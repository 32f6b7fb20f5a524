"""The Edge TPU target's own task: ``invoke edgetpu-check`` (tasks.py adds it to the namespace)."""

from __future__ import annotations

from pathlib import Path

from invoke import Context

from converters import console
from converters.commands.cli import cli_task, required, user_errors


@cli_task(name="edgetpu-check", help={
    "model": "an int8 .tflite file",
    "json": "print the full result as JSON instead of tables",
    "edgetpu_split": "write X_head.tflite (Edge TPU) and X_tail.tflite (CPU) next to the model, "
                     "cut where the prediction leaves the Edge TPU, and X_split.json",
})
def edgetpu_check(c: Context, model: str = "", json: bool = False,
                  edgetpu_split: bool = False) -> None:
    """Predict which ops of an int8 .tflite map to the Edge TPU (no compiler needed).

    Exits non-zero when the model cannot compile at all (not quantized, batch > 1), or when
    --edgetpu-split cannot split it.
    """
    with user_errors():
        required("edgetpu-check", model=model)
        from converters.targets.edgetpu.check import check_model
        from converters.targets.edgetpu.report import print_precheck

        result = check_model(Path(model))
        print_precheck(result, as_json=json)
        if result["blocking"]:
            from converters.errors import ConversionError

            raise ConversionError(f"{model} cannot be compiled for the Edge TPU: "
                                  + "; ".join(result["blocking"]))
        if edgetpu_split:
            split_and_print(Path(model))


def split_and_print(model: Path) -> None:
    """``edgetpu-check --edgetpu-split``: write and validate the head/tail pair."""
    from converters.errors import ConversionError
    from converters.targets.edgetpu.split import split_lines, split_model

    record = split_model(model)
    for line in split_lines(record):
        console.info(line)
    if not record["split"] and record["needed"]:
        raise ConversionError(f"{model} was not split: {record['reason']}")
