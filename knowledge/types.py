"""Boundary data of the knowledge base: frozen dataclasses, no dicts flowing through."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Literal

from botkit.types import Hit, SearchResult

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ChunkKind = Literal["question", "passage"]
__all__ = ["Article", "ArticleDraft", "Chunk", "ChunkDraft", "Hit", "Revision", "SearchResult", "content_hash"]


def content_hash(*parts: object) -> str:
    """A stable hash of JSON-serialisable parts (used for change detection)."""
    data = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class ArticleDraft:
    """An article or FAQ entry as written by an operator or read from a file.

    An entry with ``questions`` (several phrasings of one question) is an FAQ entry whose
    ``body`` is the answer; one without is an article.
    """

    id: str
    title: str
    body: str
    tags: tuple[str, ...] = ()
    questions: tuple[str, ...] = ()
    source: str | None = None  # "file:line" it came from, for messages and audits

    @property
    def kind(self) -> Literal["faq", "article"]:
        return "faq" if self.questions else "article"

    @property
    def hash(self) -> str:
        return content_hash(self.title, self.body, list(self.tags), list(self.questions))


@dataclass(frozen=True)
class Article(ArticleDraft):
    rev: int = 0
    updated_at: str = ""
    updated_by: str = ""


@dataclass(frozen=True)
class Revision:
    """One change to one article: who, when, what, and the content after it."""

    article_id: str
    rev: int
    kb_version: int
    at: str
    author: str
    action: Literal["create", "update", "delete", "rollback"]
    title: str
    body: str
    tags: tuple[str, ...]
    questions: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class ChunkDraft:
    ord: int
    kind: ChunkKind
    heading: str  # "Title > Section" path, empty for FAQ questions
    text: str  # what a reader is shown
    embed_text: str  # what is embedded (text with its heading path for context)

    @property
    def hash(self) -> str:
        return content_hash(self.kind, self.embed_text)


@dataclass(frozen=True)
class Chunk:
    chunk_id: int
    article_id: str
    ord: int
    kind: ChunkKind
    heading: str
    text: str
    embed_text: str
    text_hash: str
