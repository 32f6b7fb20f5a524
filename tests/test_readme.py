"""README's examples run as written, in the order written, on the bundled sample."""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_invoke

README = ROOT / "README.md"
EXIT_COMMENT = re.compile(r"#\s*exit (\d+)")


def quick_start_commands() -> list[str]:
    """The quick start's ``invoke convert``, then the fenced block that follows "in this order"."""
    text = README.read_text()
    after = text.split("Then, in this order", 1)[1]
    block = after.split("```bash\n", 1)[1].split("```", 1)[0]
    return ["invoke convert", *[line for line in block.splitlines() if line.strip()]]


def test_the_readme_names_the_examples_this_test_runs() -> None:
    commands = quick_start_commands()
    assert "pip install -c constraints.txt -e '.[tflite]' && invoke convert" in README.read_text()
    assert any(c.startswith("invoke edgetpu-check") for c in commands)
    edgetpu_convert = next(i for i, c in enumerate(commands) if "--target edgetpu" in c)
    assert edgetpu_convert < next(i for i, c in enumerate(commands) if "edgetpu-check" in c)


@pytest.mark.quick
def test_readme_examples_work_in_the_order_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "model", tmp_path / "model")
    shutil.copytree(ROOT / "dataset", tmp_path / "dataset")
    for command in quick_start_commands():
        words = shlex.split(command, comments=True)
        assert words[0] == "invoke", command
        expected = EXIT_COMMENT.search(command)
        # Outside the checkout, stage processes must still import this checkout's converters.
        result = run_invoke(*words[1:], cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
        assert result.returncode == (int(expected.group(1)) if expected else 0), (
            command, result.stdout[-2000:], result.stderr[-2000:])
        assert "Traceback" not in result.stderr, command
    report = json.loads((tmp_path / "build" / "sample" / "report.json").read_text())
    built = {(a["target"], a["variant"]) for a in report["artifacts"]}
    assert {("tflite", "int8"), ("tflite", "fp32"), ("edgetpu", "int8")} <= built
