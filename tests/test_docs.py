"""The documentation site builds with ``mkdocs build --strict`` (every page in the navigation,
no broken link or anchor), and README, its front page, stays a front page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_invoke

README = ROOT / "README.md"


def mkdocs_or_skip() -> None:
    """Skip saying what is missing, or fail under REQUIRE_DOCS=1 or CI=true (CI installs the
    `docs` extra)."""
    try:
        import material  # noqa: F401  (mkdocs-material's package)
        import mkdocs  # noqa: F401
    except ImportError as missing:
        reason = (f"mkdocs or mkdocs-material is not installed ({missing}): "
                  "pip install -c constraints.txt -e '.[docs]'")
        if os.environ.get("REQUIRE_DOCS") == "1" or os.environ.get("CI") == "true":
            pytest.fail(f"the documentation build is required here but {reason}")
        pytest.skip(reason)


def test_the_documentation_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs_or_skip()
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    built = tmp_path / "site"
    for page in ("targets/edgetpu", "reference/settings", "status", "benchmarks"):
        assert (built / page / "index.html").is_file(), page
    # Offline: the theme is told not to fetch web fonts.
    assert "fonts.googleapis.com" not in (built / "index.html").read_text()
    shutil.rmtree(built)


def test_readme_is_a_front_page_whose_links_reach_the_docs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "pip install -c constraints.txt -e '.[tflite]' && invoke convert" in text
    assert "pip install -c constraints.txt -e '.[tflite,test,ray,mediapipe,docs]' && invoke test" in text
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 15
    for link in links:
        assert (ROOT / link).is_file(), link


def test_every_file_the_docs_name_as_evidence_exists() -> None:
    """The tests, benchmarks and modules the pages cite for their claims are there."""
    cited = set()
    for page in [README, *(ROOT / "docs").rglob("*.md")]:
        cited |= set(re.findall(r"\b(?:converters|tests|benchmarks|examples|docker)/[\w./-]*\w\.\w+",
                                page.read_text()))
    assert len(cited) >= 30
    assert sorted(path for path in cited if not (ROOT / path).exists()) == []


def test_every_task_is_in_the_commands_page() -> None:
    listed = json.loads(run_invoke("--list", "--list-format", "json", check=True).stdout)
    names = [task["name"] for task in listed["tasks"]]
    assert {"convert", "bundle-keygen", "edgetpu-check"} <= set(names)
    page = (ROOT / "docs" / "commands.md").read_text()
    assert [name for name in names if f"| `{name}` |" not in page] == []


def test_no_project_internal_words_in_readme_or_docs() -> None:
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text()
        # "seed" as the project's origin, not the --seed flag or a seeded split
        assert not re.search(r"\bthe seed\b|seed's|default_vs_seed", text), page
        assert not re.search(r"\bissue #?\d+|\bsession \d+", text, re.IGNORECASE), page
        assert "shared/edgetpu-truth" not in text, page
