"""Split articles into retrievable chunks along their own structure.

Markdown headings start new sections; a section is packed paragraph by paragraph up to
``max_chars``; only a paragraph longer than that is split, at sentence ends (and, for a
run-on "sentence", at whitespace). Each chunk is embedded with its heading path
("Title > Section > Subsection") so a short paragraph keeps its context. FAQ entries give
one chunk per phrasing of the question, plus the answer.
"""

from __future__ import annotations

import re

from knowledge.types import ArticleDraft, ChunkDraft

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def split_sections(body: str) -> list[tuple[list[str], str]]:
    """(heading path, text) for each Markdown section, skipping headings inside code fences."""
    sections: list[tuple[list[str], str]] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text:
            sections.append(([h for _, h in stack], text))
        lines.clear()

    for line in body.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, m.group(2).strip()))
        else:
            lines.append(line)
    flush()
    return sections


def _split_long(text: str, max_chars: int) -> list[str]:
    """Split one over-long paragraph at sentence ends, then at whitespace."""
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > max_chars:  # a run-on sentence: cut at the last space that fits
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            head, sentence = sentence[:cut].strip(), sentence[cut:].strip()
            if current:
                pieces.append(current)
                current = ""
            pieces.append(head)
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def pack_paragraphs(text: str, max_chars: int) -> list[str]:
    """Group whole paragraphs into pieces of at most max_chars."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    current = ""
    for para in paragraphs:
        parts = [para] if len(para) <= max_chars else _split_long(para, max_chars)
        for part in parts:
            if current and len(current) + 2 + len(part) > max_chars:
                pieces.append(current)
                current = part
            else:
                current = f"{current}\n\n{part}" if current else part
    if current:
        pieces.append(current)
    return pieces


def chunk_article(draft: ArticleDraft, max_chars: int = 900) -> list[ChunkDraft]:
    chunks: list[ChunkDraft] = []

    def add(kind: str, heading: str, text: str, embed_text: str) -> None:
        chunks.append(ChunkDraft(len(chunks), kind, heading, text, embed_text))  # type: ignore[arg-type]

    for question in draft.questions:
        add("question", "", question, question)
    for path, text in split_sections(draft.body):
        heading = " > ".join([draft.title, *path])
        for piece in pack_paragraphs(text, max_chars):
            add("passage", heading, piece, f"{heading}\n{piece}")
    if not chunks:  # an article whose body is empty still answers to its title
        add("passage", draft.title, draft.title, draft.title)
    return chunks
