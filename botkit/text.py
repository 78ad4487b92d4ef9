"""Plain-text helpers shared by the responders and the prompt builder."""

from __future__ import annotations

import re

MAX_PASSAGE_CHARS = 1200


def trim_passage(text: str, limit: int = MAX_PASSAGE_CHARS) -> str:
    """Cut at a paragraph or sentence end so a long passage stays readable."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    if cut < limit // 2:
        cut = max(text.rfind(". ", 0, limit) + 1, limit // 2)
    return text[:cut].rstrip() + " …"


def clean_markdown(text: str) -> str:
    """Drop Markdown emphasis/code marks that read badly on plain-text channels."""
    return re.sub(r"(\*\*|__|`)", "", text)
