"""The one table of settings: invoke.yaml, the flags and their precedence all come from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.commands.settings import flag_rows, render_markdown, render_yaml, resolve, table
from converters.errors import ConfigError
from converters.jobs import parse_jobs
from tests.conftest import ROOT, run_invoke


def test_invoke_yaml_is_the_table_rendered() -> None:
    assert (ROOT / "invoke.yaml").read_text() == render_yaml(), (
        "invoke.yaml differs from converters/commands/settings.py: regenerate it with "
        "python -c 'from converters.commands.settings import render_yaml; print(render_yaml(), end=\"\")'"
        " > invoke.yaml")


def test_invoke_yaml_reads_back_as_every_default() -> None:
    """Each rendered line is YAML for its default (a long name must not glue the comment on)."""
    import yaml

    convert = yaml.safe_load(render_yaml())["convert"]
    for setting in table():
        if setting.name in convert:
            expected = list(setting.default) if isinstance(setting.default, tuple) else setting.default
            assert convert[setting.name] == expected, setting.name
    # model, force and device are per-command choices (device's project default is devices)
    assert set(convert) == {s.name for s in table()} - {"model", "force", "device"}


def test_the_settings_reference_page_is_the_table_rendered() -> None:
    page = ROOT / "docs" / "reference" / "settings.md"
    assert page.read_text() == render_markdown(), (
        "docs/reference/settings.md differs from the settings table: regenerate it with "
        "python -c 'from converters.commands.settings import render_markdown; "
        "print(render_markdown(), end=\"\")' > docs/reference/settings.md")
    assert "| `--max-accuracy-drop` | `max_accuracy_drop` | `0.01` | every target |" in page.read_text()
    assert "`--min-tpu-ops`" in page.read_text()


def test_every_flag_of_the_table_is_a_convert_flag_with_its_help() -> None:
    shown = " ".join(run_invoke("convert", "-h", check=True).stdout.split())
    for setting in flag_rows():
        assert setting.flag_name in shown, setting.name
        assert " ".join(setting.help.split()[:4]) in shown, setting.name
    assert len({s.name for s in table()}) == len(table())


def test_precedence_flag_then_invoke_yaml_then_default() -> None:
    assert resolve("jobs", "3", {"jobs": 2}) == 3
    assert resolve("jobs", None, {"jobs": 2}) == 2  # None: the flag was not given
    assert resolve("jobs", None, {"jobs": None}) == parse_jobs("auto")  # null: the default
    assert resolve("allow_flex", False, {"allow_flex": True}) is True  # a switch not given
    assert resolve("allow_flex", True, {}) is True
    assert resolve("models", None, {"models": "one.h5"}) == ("one.h5",)


@pytest.mark.parametrize("name,flag,configured,message", [
    ("opset", "0", None, "--opset must be between 13 and 18, got 0"),
    ("num_segments", "0", None, "--num-segments must be between 1 and 64, got 0"),
    ("workspace_mb", "0", None, "--workspace-mb must be between 1 and 1048576, got 0"),
    ("seed", None, 1.5, "--seed (invoke.yaml: seed) must be a whole number, got 1.5"),
    ("allow_flex", None, "yes", "--allow-flex (invoke.yaml: allow_flex) must be true or false"),
    ("models", None, {"a": 1}, "invoke.yaml's models must be a list of paths"),
])
def test_invalid_values_are_refused_never_replaced_by_a_default(
        name: str, flag: str | None, configured: object, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve(name, flag, {name: configured})
    assert message in str(refused.value)


def test_boolean_in_invoke_yaml_is_honoured_by_convert(tmp_path: Path, tiny_h5: Path,
                                                       tiny_dataset: Path) -> None:
    """allow_class_mismatch: true in a config file lets a 3-class model meet 2 class folders."""
    two = tmp_path / "two"
    for name in ("a", "b"):
        (two / name).mkdir(parents=True)
        for image in sorted((tiny_dataset / name).iterdir())[:4]:
            (two / name / image.name).write_bytes(image.read_bytes())
    config = tmp_path / "config.yaml"
    config.write_text("convert:\n  allow_class_mismatch: true\n  quant: fp32\n  runner: local\n")
    result = run_invoke("-f", str(config), "convert", "--model", str(tiny_h5), "--dataset",
                        str(two), "--out", str(tmp_path / "out"), "--latency-runs", "1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name,flag,configured,message", [
    ("quant", "", {}, '--quant is empty: give a value, or leave the flag out for the default'),
    ("out", None, {"out": ""}, 'invoke.yaml\'s out is empty: give a value, or null for the '
                               'default ("build")'),
    ("seed", None, {"calibraton_size": 5}, "invoke.yaml's convert section has an unknown key "
                                           "'calibraton_size' (did you mean 'calibration_size'?)"),
    ("seed", None, {"zzz": 1, "seed": 1, "yyy": 2}, "unknown key 'yyy' and 1 more"),
    ("seed", None, ["seed"], "invoke.yaml's convert section must be a mapping of settings"),
])
def test_empty_values_and_unknown_keys_are_refused(name: str, flag: str | None,
                                                   configured: object, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve(name, flag, configured)  # type: ignore[arg-type]
    assert message in str(refused.value)
    assert resolve("intermediate_tensors", None, {"intermediate_tensors": ""}) == ""  # its default
