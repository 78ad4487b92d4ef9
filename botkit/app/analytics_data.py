"""The operator report as the page and ``botkit report`` give it: the figures of
:func:`botkit.analytics.build_report` on the conversation store, each group of unanswered
questions linked to the open FAQ proposal it matches (training.gaps, in the project's KB
database). One function for both, so ``/api/analytics`` and ``report --json`` stay equal."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from botkit.analytics import ProposalRef, ReportRange, build_report, link_proposals
from botkit.errors import BotkitError
from botkit.project import Project
from botkit.store import ConversationStore

log = logging.getLogger(__name__)


def open_proposals(db_path: Path) -> list[ProposalRef]:
    """The open FAQ proposals in the KB database ``db_path`` (none when it does not exist yet)."""
    if not db_path.exists():
        return []
    from training.gaps import ProposalStore

    with ProposalStore(db_path) as store:
        return [ProposalRef(p.id, p.title, p.questions, p.count) for p in store.list("proposed")]


def project_proposals(project: Project) -> list[ProposalRef]:
    """The open FAQ proposals beside the project's knowledge base: in its SQLite file, or in
    PostgreSQL when the knowledge base is there (BOTKIT_DATABASE_URL)."""
    from botkit.app.compose import build_knowledge_store
    from training.gaps import proposals_for

    store = build_knowledge_store(project)
    if not store.shared_index:
        return open_proposals(project.db_path)
    with proposals_for(store) as proposals:
        return [ProposalRef(p.id, p.title, p.questions, p.count) for p in proposals.list("proposed")]


async def analytics_report(project: Project, store: ConversationStore, rng: ReportRange) -> dict[str, Any]:
    """The report of ``store`` for ``rng``, linked to the project's open FAQ proposals. Proposals
    that cannot be read leave the links out (logged); the figures never depend on them."""
    report = await build_report(store, rng)
    try:
        proposals = await asyncio.to_thread(project_proposals, project)
    except (BotkitError, OSError) as exc:
        log.warning("analytics: the FAQ proposals in %s could not be read (%s); groups are not linked",
                    project.db_path, exc)
        proposals = []
    return link_proposals(report, proposals)


__all__ = ["analytics_report", "open_proposals", "project_proposals"]
