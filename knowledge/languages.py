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


class LanguageMap:
    """Article id -> language, for one KB version; what a search asks is computed once per language."""

    def __init__(self, version: int, languages: dict[str, str]):
        self.version = version
        self.languages = languages
        counts: dict[str, int] = {}
        for lang in languages.values():
            counts[lang] = counts.get(lang, 0) + 1
        self._counts = counts
        self._others: dict[str, frozenset[str]] = {}

    @classmethod
    def build(cls, version: int, articles: Iterable[ArticleDraft], default: str) -> LanguageMap:
        return cls(version, {a.id: article_language(a, default) for a in articles})

    def available(self) -> tuple[str, ...]:
        """The languages the KB has entries in, most entries first."""
        return tuple(sorted(self._counts, key=lambda x: (-self._counts[x], x)))

    def has(self, language: str) -> bool:
        return language in self._counts

    def widen(self, fetch: int, exclude: frozenset[str]) -> int:
        """How many dense neighbours to fetch so that about ``fetch`` of them are not excluded
        (a search in a language with few entries looks further down the list), at most 20 times more."""
        if not exclude or not self.languages:
            return fetch
        kept = len(self.languages) - len(exclude)
        return fetch * min(20, -(-len(self.languages) // max(1, kept)))

    def other_than(self, language: str) -> frozenset[str]:
        """The entries not in ``language`` (those a search in that language leaves out)."""
        others = self._others.get(language)
        if others is None:  # a race computes it twice, harmlessly
            others = self._others[language] = frozenset(a for a, x in self.languages.items() if x != language)
        return others
