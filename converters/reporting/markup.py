"""Small text helpers shared by report.md and report.html: table cells and inline code."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

_INLINE_CODE = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")


def md_cell(text: str) -> str:
    """A markdown table cell: a ``|`` would end the cell, a newline the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub-flavoured markdown table, every header and cell escaped."""
    lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |",
             "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def inline_html(text: str) -> str:
    """Escape ``text`` for HTML and turn markdown's `code` spans and **strong** emphasis into
    <code> and <strong> elements."""
    return _STRONG.sub(r"<strong>\1</strong>", _INLINE_CODE.sub(r"<code>\1</code>", html.escape(text)))


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal, or n/a."""
    return "n/a" if value is None else f"{100 * value:.1f} %"
