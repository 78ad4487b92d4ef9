"""Which language each knowledge-base entry is in, so a search can answer in the customer's.

An entry's language is, in order: its ``lang:<code>`` tag (what ``lang: zh`` in a Markdown
file's front matter, or a ``lang`` column in a CSV, becomes on import: a tag, so the store,
the KB editor and ``botkit kb list`` need nothing new); else the script of its title and
body when that script names a language (a Chinese article is Chinese without saying so);
else the project's ``language`` (bot.yaml), the language of everything else.

:class:`LanguageMap` is rebuilt when the KB version changes (one read of the articles);
``KnowledgeBase.search`` asks it which entries to leave out for a query's language.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from botkit.language import detect_language
from knowledge.types import ArticleDraft

LANG_TAG = "lang:"


def lang_tag(code: str) -> str:
    return f"{LANG_TAG}{code}"


def article_language(article: ArticleDraft, default: str) -> str:
    """An entry's language: its ``lang:`` tag, else its script's language, else ``default``."""
    for tag in article.tags:
        if tag.startswith(LANG_TAG) and len(tag) > len(LANG_TAG):
            return tag[len(LANG_TAG):].split("-")[0].lower()
    sample = " ".join((article.title, *article.questions[:3], article.body[:400]))
    return detect_language(sample, default).language


@dataclass(frozen=True)
class LanguageMap:
    """Article id -> language, for one KB version."""

    version: int
    languages: dict[str, str]

    @classmethod
    def build(cls, version: int, articles: Iterable[ArticleDraft], default: str) -> LanguageMap:
        return cls(version, {a.id: article_language(a, default) for a in articles})

    def available(self) -> tuple[str, ...]:
        """The languages the KB has entries in, most entries first."""
        counts: dict[str, int] = {}
        for lang in self.languages.values():
            counts[lang] = counts.get(lang, 0) + 1
        return tuple(sorted(counts, key=lambda x: (-counts[x], x)))

    def has(self, language: str) -> bool:
        return language in self.languages.values()

    def widen(self, fetch: int, exclude: frozenset[str]) -> int:
        """How many dense neighbours to fetch so that about ``fetch`` of them are not excluded
        (a search in a language with few entries looks further down the list), at most 20 times more."""
        if not exclude or not self.languages:
            return fetch
        kept = len(self.languages) - len(exclude)
        return fetch * min(20, -(-len(self.languages) // max(1, kept)))

    def other_than(self, language: str) -> frozenset[str]:
        """The entries not in ``language`` (those a search in that language leaves out)."""
        return frozenset(a for a, lang in self.languages.items() if lang != language)
