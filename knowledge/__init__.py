"""The knowledge base: articles and FAQ entries, chunked, embedded and indexed for retrieval."""

from knowledge.types import Article, ArticleDraft, Hit, Revision, SearchResult

__all__ = ["Article", "ArticleDraft", "Hit", "KnowledgeBase", "Revision", "SearchResult"]


def __getattr__(name: str):  # the heavy parts (faiss, torch) load only when used
    if name == "KnowledgeBase":
        from knowledge.base import KnowledgeBase

        return KnowledgeBase
    raise AttributeError(name)
