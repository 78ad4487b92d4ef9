"""The knowledge-base editor: ``/kb`` and its JSON API under ``/api/kb/`` (role ``operator``).

Routes:

=============================================  ===============================================
``GET    /kb``                                 the page
``GET    /api/kb/articles?q=&tag=&limit=``     list (by tag), or search with ``q`` (the bot's own search)
``POST   /api/kb/articles``                    create: ``{id?, title, body, tags, questions}``
``GET    /api/kb/articles/{id}``               one article, with its ``rev`` and ``managed`` (files own it)
``PUT    /api/kb/articles/{id}``               update: the same fields plus the ``rev`` that was edited
``DELETE /api/kb/articles/{id}?rev=N``         delete (its history is kept)
``GET    /api/kb/articles/{id}/history``       revisions, deleted articles included
``GET    /api/kb/articles/{id}/diff?from=&to=`` unified diff between two revisions (``to``: latest)
``POST   /api/kb/articles/{id}/rollback``      ``{to, rev?}``: restore a revision as a new one
``POST   /api/kb/import``                      multipart files; all or nothing
``GET    /api/kb/proposals?status=``           proposed FAQ entries (training.gaps), default: open ones
``POST   /api/kb/proposals/{id}/accept``       ``{questions?, body?|answer?, id?, title?, tags?}``: goes live
``POST   /api/kb/proposals/{id}/reject``       ``{note?}``
=============================================  ===============================================

Every write goes through :class:`~knowledge.base.KnowledgeBase` with the operator's name as
the author, so the index is synced before the answer is sent and the very next customer
question sees the change. Writes from this server are serialised by one lock, and the ``rev``
check is made again inside the write's transaction (``expect``), which the store serialises
across processes (SQLite's write lock, PostgreSQL's advisory lock): so the check and the write
are one step even with several workers (409 when the article changed since it was opened).
KB calls embed text, so they run in a thread.

An entry that came from ``botkit kb import`` is owned by its file: every article answer has
``managed`` (its file and line, the revision the import left, and ``state``: ``in_step``,
``edited`` here since, or ``kept_over_file``), and list items ``from_file`` and
``edited_since_import``. An edit made here is not overwritten by the next import
(knowledge.imports): it stands while the file is unchanged; if the file changed too, the
import reports a conflict and imports nothing for that entry.

Errors: 400 ``{"error", "field", "reason"}`` for invalid input, 404 for unknown ids, 409 for
conflicts, 400 ``{"error", "problems": [{file, line, message}]}`` for a rejected import.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web

from botkit.app.accounts import Identity
from botkit.app.http import Refused, api_error, api_json, error_response, page_response, static_route
from botkit.app.keys import KB, PROJECT, USER
from botkit.app.signin import require, setup_auth
from botkit.errors import ArticleNotFound, ImportFailed, KnowledgeError
from botkit.store import ConflictError
from knowledge.base import KnowledgeBase
from knowledge.imports import ImportBase
from knowledge.ingest import MAX_QUESTIONS, MAX_TITLE, make_draft, read_sources, slugify
from knowledge.types import ID_PATTERN, Article, ArticleDraft, Revision

log = logging.getLogger(__name__)
T = TypeVar("T")
STATIC = Path(__file__).resolve().parent / "static"
FIELDS = {"id", "title", "body", "tags", "questions", "rev"}
MAX_BODY_CHARS = 200_000
MAX_TAGS, MAX_TAG_CHARS, MAX_QUESTION_CHARS = 50, 60, 500
MAX_UPLOAD_FILES, MAX_UPLOAD_BYTES = 200, 32 * 1024 * 1024
MAX_LIMIT = 50


@dataclass
class Editor:
    kb: KnowledgeBase | None
    lock: asyncio.Lock
    root: Path | None = None  # the project's folder: source files are shown relative to it

    def need_kb(self) -> KnowledgeBase:
        if self.kb is None:
            raise Refused(503, "this server has no editable knowledge base (its retriever is not a KnowledgeBase)")
        return self.kb

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)


EDITOR = web.AppKey("kb_editor", Editor)


# -- JSON shapes -------------------------------------------------------------------------------

def article_summary(a: Article) -> dict[str, Any]:
    return {"id": a.id, "title": a.title, "kind": a.kind, "tags": list(a.tags), "rev": a.rev,
            "questions": len(a.questions), "updated_at": a.updated_at, "updated_by": a.updated_by}


def article_json(a: Article) -> dict[str, Any]:
    return {**article_summary(a), "body": a.body, "questions": list(a.questions), "source": a.source}


def managed_json(a: Article, base: ImportBase | None, root: Path | None = None) -> dict[str, Any] | None:
    """Whether files own this entry (it came from ``botkit kb import``) and where it stands against
    them: ``in_step`` (it has the file's content as last imported), ``edited`` (changed here since
    that import: the next import keeps the change while the file is unchanged, and reports a
    conflict if the file changed too) or ``kept_over_file`` (a conflict was settled with --ours:
    this version stays until the file changes again, which is a conflict again)."""
    if base is None:
        return None
    file, _, line = base.source.rpartition(":")
    file = file if line.isdigit() else base.source
    if root is not None and Path(file).is_relative_to(root):
        file = str(Path(file).relative_to(root))  # kb/faq.csv, as the operator knows it
    state = ("in_step" if a.hash == base.content_hash else "edited" if a.rev != base.rev else "kept_over_file")
    return {"file": file, "line": int(line) if line.isdigit() else None,
            "import_rev": base.rev, "imported_at": base.at, "state": state}


async def _shown(editor: "Editor", kb: KnowledgeBase, a: Article) -> dict[str, Any]:
    """An article as the editor gets it: its fields and whether files own it (``managed``)."""
    return {**article_json(a), "managed": managed_json(a, await editor.run(kb.store.import_base, a.id), editor.root)}


def revision_json(r: Revision) -> dict[str, Any]:
    return {"rev": r.rev, "kb_version": r.kb_version, "at": r.at, "author": r.author, "action": r.action,
            "title": r.title, "tags": list(r.tags), "questions": list(r.questions), "note": r.note}


# -- validation --------------------------------------------------------------------------------

def _str_list(value: Any, field: str, sep: str, max_items: int, max_chars: int) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(sep)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused(400, f"{field} must be a list of strings", field)
    items = tuple(v.strip() for v in value if v.strip())
    if len(items) > max_items:
        raise Refused(400, f"{len(items)} {field}; at most {max_items}", field)
    for item in items:
        if len(item) > max_chars:
            raise Refused(400, f"one of the {field} is {len(item)} characters; at most {max_chars}", field)
    return items


def draft_from(body: dict[str, Any], article_id: str | None, source: str | None) -> ArticleDraft:
    """Validate an editor request into a draft; Refused(400) names the field and the reason."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise Refused(400, f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(FIELDS))})",
                      unknown[0])
    for key in ("id", "title", "body"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise Refused(400, f"{key} must be text, got {type(body[key]).__name__}", key)
    title = (body.get("title") or "").strip()
    text = (body.get("body") or "").strip()
    tags = _str_list(body.get("tags"), "tags", ",", MAX_TAGS, MAX_TAG_CHARS)
    questions = _str_list(body.get("questions"), "questions", "\n", MAX_QUESTIONS, MAX_QUESTION_CHARS)
    if not title and not questions:
        raise Refused(400, "a title is required (or, for an FAQ entry, at least one question)", "title")
    if len(title) > MAX_TITLE:
        raise Refused(400, f"title is {len(title)} characters; at most {MAX_TITLE}", "title")
    if not text:
        raise Refused(400, "the body is empty: write the article (or the FAQ answer)", "body")
    if len(text) > MAX_BODY_CHARS:
        raise Refused(400, f"body is {len(text)} characters; at most {MAX_BODY_CHARS}", "body")
    if article_id is None:
        article_id = (body.get("id") or "").strip() or None
    elif body.get("id") not in (None, "", article_id):
        raise Refused(400, "an article's id cannot be changed; create a new article instead", "id")
    if article_id is not None and not ID_PATTERN.match(article_id):
        raise Refused(400, f"bad id {article_id!r}: use letters, digits, '.', '_' or '-' "
                           "(at most 128, starting with a letter or digit)", "id")
    # A new article without an id gets one from its title later (under the write lock); the
    # importer's rules are checked with a stand-in id meanwhile.
    fields = {"id": article_id or "new-article", "title": title, "body": text, "tags": list(tags),
              "questions": list(questions)}
    try:
        draft = make_draft(fields, source or "kb editor")
    except ValueError as exc:  # the importer's rules, kept in one place
        message = str(exc)
        field = next((f for f in ("id", "title", "body", "tags", "questions") if f in message), None)
        raise Refused(400, message, field) from None
    return draft if article_id else replace(draft, id="")


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise Refused(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the request body must be a JSON object")
    return body


def _int(value: Any, field: str, required: bool = True) -> int | None:
    if value is None or value == "":
        if required:
            raise Refused(400, f"{field} is required (the revision number)", field)
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise Refused(400, f"{field} must be a revision number, got {value!r:.40}", field) from None
    if isinstance(value, bool) or number < 0:
        raise Refused(400, f"{field} must be a revision number, got {value!r:.40}", field)
    return number


def _conflict(current: Article, sent: int) -> Refused:
    return Refused(409, f"{current.id!r} was changed by {current.updated_by} at {current.updated_at} "
                        f"(it is at revision {current.rev}; you edited revision {sent}). "
                        "Reload it and apply your change again.", current=article_json(current))


# -- handlers ----------------------------------------------------------------------------------

def _handler(fn: Any) -> Any:
    """Operator-only API handler; Refused and KB errors become JSON answers (botkit.app.http.error_response)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        editor = request.app[EDITOR]
        try:
            return await fn(request, editor, editor.need_kb(), request[USER])
        except Exception as exc:  # noqa: BLE001 - error_response answers what it knows, re-raised otherwise
            answer = error_response(exc, request)  # e.g. a locked database: 503 with retry
            if answer is None:
                raise
            return answer

    wrapped.__name__ = fn.__name__
    return require("operator")(wrapped)


@require("operator")
async def editor_page(request: web.Request) -> web.StreamResponse:
    return page_response(request, STATIC / "editor.html")


@_handler
async def list_articles(request: web.Request, editor: Editor, kb: KnowledgeBase,
                        ident: Identity) -> web.StreamResponse:
    q = request.query.get("q", "").strip()
    tag = request.query.get("tag", "").strip() or None
    limit = min(MAX_LIMIT, _int(request.query.get("limit"), "limit", required=False) or 20) or 1
    everything = await editor.run(kb.store.list)
    bases = await editor.run(kb.store.import_bases)

    def summary(a: Article) -> dict[str, Any]:
        managed = managed_json(a, bases.get(a.id))
        return {**article_summary(a), "from_file": managed is not None,
                "edited_since_import": managed is not None and managed["state"] == "edited"}

    tags = sorted({t for a in everything for t in a.tags}, key=str.lower)
    if not q:
        articles = [summary(a) for a in everything if tag is None or tag in a.tags]
        return api_json({"query": "", "tag": tag, "kb_version": await editor.run(kb.store.kb_version),
                         "tags": tags, "articles": articles})
    result = await editor.run(kb.search, q, MAX_LIMIT if tag else limit)
    by_id = {a.id: a for a in everything}
    found = []
    for hit in result.hits:
        article = by_id.get(hit.article_id)
        if article is None or (tag is not None and tag not in article.tags):
            continue
        found.append({**summary(article), "score": round(hit.score, 4), "passage": hit.passage})
    return api_json({"query": q, "tag": tag, "kb_version": result.kb_version, "tags": tags,
                     "threshold": result.threshold, "articles": found[:limit]})


@_handler
async def get_article(request: web.Request, editor: Editor, kb: KnowledgeBase,
                      ident: Identity) -> web.StreamResponse:
    return api_json({"article": await _shown(editor, kb, await editor.run(kb.store.get, request.match_info["id"]))})


async def _free_id(editor: Editor, kb: KnowledgeBase, title: str) -> str:
    base = slugify(title)[:120]
    candidate, n = base, 1
    while await editor.run(kb.store.find, candidate) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


@_handler
async def create_article(request: web.Request, editor: Editor, kb: KnowledgeBase,
                         ident: Identity) -> web.StreamResponse:
    draft = draft_from(await _json_body(request), None, "kb editor")
    async with editor.lock:
        if not draft.id:
            draft = replace(draft, id=await _free_id(editor, kb, draft.title))
        elif await editor.run(kb.store.find, draft.id) is not None:
            raise Refused(409, f"an article with id {draft.id!r} exists already; open it to edit it", "id")
        try:  # checked again in the write's transaction: another worker's editor may have just made it
            summary = await editor.run(kb.upsert, [draft], ident.name, "created in the kb editor", {draft.id: None})
        except ConflictError:
            raise Refused(409, f"an article with id {draft.id!r} exists already; open it to edit it", "id") from None
        article = await editor.run(kb.store.get, draft.id)
    log.info("%s created article %s (kb version %d)", ident.name, draft.id, summary.kb_version)
    return api_json({"article": await _shown(editor, kb, article), "kb_version": summary.kb_version,
                     "changed": True}, 201)


@_handler
async def update_article(request: web.Request, editor: Editor, kb: KnowledgeBase,
                         ident: Identity) -> web.StreamResponse:
    article_id = request.match_info["id"]
    body = await _json_body(request)
    sent = _int(body.get("rev"), "rev")
    assert sent is not None
    async with editor.lock:
        current = await editor.run(kb.store.find, article_id)
        if current is None:
            await editor.run(kb.store.history, article_id)  # 404 when it never existed
            raise Refused(409, f"{article_id!r} was deleted after you opened it; "
                               "save it as a new article or roll it back from its history")
        if current.rev != sent:
            raise _conflict(current, sent)
        draft = draft_from(body, article_id, current.source)
        try:  # the rev checked again in the write's transaction: another worker's editor may have saved
            summary = await editor.run(kb.upsert, [draft], ident.name, "edited in the kb editor", {article_id: sent})
        except ConflictError:
            now = await editor.run(kb.store.find, article_id)
            if now is None:
                raise Refused(409, f"{article_id!r} was deleted after you opened it; "
                                   "save it as a new article or roll it back from its history") from None
            raise _conflict(now, sent) from None
        article = await editor.run(kb.store.get, article_id)
    if summary.changed:
        log.info("%s updated article %s (kb version %d)", ident.name, article_id, summary.kb_version)
    return api_json({"article": await _shown(editor, kb, article), "kb_version": summary.kb_version,
                     "changed": summary.changed})


@_handler
async def delete_article(request: web.Request, editor: Editor, kb: KnowledgeBase,
                         ident: Identity) -> web.StreamResponse:
    article_id = request.match_info["id"]
    sent = _int(request.query.get("rev"), "rev", required=False)
    async with editor.lock:
        current = await editor.run(kb.store.get, article_id)
        if sent is not None and current.rev != sent:
            raise _conflict(current, sent)
        try:  # the rev checked again in the write's transaction (another worker's editor)
            summary = await editor.run(kb.delete, article_id, ident.name, sent)
        except ConflictError:
            raise _conflict(await editor.run(kb.store.get, article_id), sent or 0) from None
    log.info("%s deleted article %s (kb version %d)", ident.name, article_id, summary.kb_version)
    return api_json({"deleted": article_id, "kb_version": summary.kb_version})


@_handler
async def history(request: web.Request, editor: Editor, kb: KnowledgeBase,
                  ident: Identity) -> web.StreamResponse:
    article_id = request.match_info["id"]
    revisions = await editor.run(kb.store.history, article_id)
    current = await editor.run(kb.store.find, article_id)
    return api_json({"id": article_id, "current_rev": current.rev if current else None,
                     "revisions": [revision_json(r) for r in revisions]})


@_handler
async def diff(request: web.Request, editor: Editor, kb: KnowledgeBase,
               ident: Identity) -> web.StreamResponse:
    article_id = request.match_info["id"]
    from_rev = _int(request.query.get("from"), "from")
    to_rev = _int(request.query.get("to"), "to", required=False)
    text = await editor.run(kb.store.diff, article_id, from_rev, to_rev)
    return api_json({"id": article_id, "from": from_rev, "to": to_rev, "diff": text})


@_handler
async def rollback(request: web.Request, editor: Editor, kb: KnowledgeBase,
                   ident: Identity) -> web.StreamResponse:
    article_id = request.match_info["id"]
    body = await _json_body(request)
    to_rev = _int(body.get("to"), "to")
    sent = _int(body.get("rev"), "rev", required=False)
    async with editor.lock:
        current = await editor.run(kb.store.find, article_id)
        if sent is not None and current is not None and current.rev != sent:
            raise _conflict(current, sent)
        try:
            summary = await editor.run(kb.rollback, article_id, to_rev, ident.name, sent)
        except ConflictError:  # the rev checked again in the write's transaction (another worker's editor)
            raise _conflict(await editor.run(kb.store.get, article_id), sent or 0) from None
        except ArticleNotFound:
            raise
        except KnowledgeError as exc:
            raise Refused(400, str(exc), "to") from None
        article = await editor.run(kb.store.get, article_id)
    log.info("%s rolled article %s back to revision %s", ident.name, article_id, to_rev)
    return api_json({"article": await _shown(editor, kb, article), "kb_version": summary.kb_version,
                     "changed": summary.changed})


async def _receive_files(request: web.Request, folder: Path,
                         max_file_bytes: int) -> tuple[list[Path], list[dict[str, Any]]]:
    """Save the uploaded files under ``folder`` (flat, by their base name)."""
    if not request.content_type.startswith("multipart/"):
        raise Refused(400, "send the files as multipart/form-data (field name: files)", "files")
    reader = await request.multipart()
    paths: list[Path] = []
    problems: list[dict[str, Any]] = []
    total = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):  # a nested multipart: not something a file input sends
            await part.release()
            continue
        raw = part.filename
        if raw is None:  # a plain form field
            await part.release()
            continue
        name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
        if not name or name.startswith(".") or any(ord(c) < 32 for c in name) or len(name) > 200:
            problems.append({"file": raw[:200], "line": None, "message": "unusable file name"})
            await part.release()
            continue
        if any(p.name == name for p in paths):
            problems.append({"file": name, "line": None, "message": "uploaded twice (two files with this name)"})
            await part.release()
            continue
        if len(paths) >= MAX_UPLOAD_FILES:
            raise Refused(413, f"too many files; at most {MAX_UPLOAD_FILES} per import", "files")
        size, too_big, target = 0, False, folder / name
        with target.open("wb") as out:
            while chunk := await part.read_chunk(256 * 1024):
                size += len(chunk)
                total += len(chunk)
                if total > MAX_UPLOAD_BYTES:
                    raise Refused(413, f"the upload is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB; "
                                       "import the files in smaller batches", "files")
                if size > max_file_bytes:
                    too_big = True
                    continue  # keep draining this part, write nothing more
                out.write(chunk)
        if too_big:
            problems.append({"file": name, "line": None, "message":
                             f"file is over the limit of {max_file_bytes / 1e6:.1f} MB "
                             "(split it, or raise knowledge.max_file_bytes in bot.yaml)"})
            target.unlink(missing_ok=True)
            continue
        paths.append(target)
    return paths, problems


@_handler
async def import_files(request: web.Request, editor: Editor, kb: KnowledgeBase,
                       ident: Identity) -> web.StreamResponse:
    with tempfile.TemporaryDirectory(prefix="botkit-import-") as tmp:
        folder = Path(tmp)
        paths, problems = await _receive_files(request, folder, kb.config.max_file_bytes)
        if not paths and not problems:
            raise Refused(400, "no files were uploaded", "files")

        def shown(path: str) -> str:  # the uploaded name, never the server's temporary path
            return Path(path).name if path.startswith(tmp) else path

        drafts: list[ArticleDraft] = []
        if paths:
            try:
                drafts = await editor.run(read_sources, paths, kb.config.max_file_bytes, False)
            except ImportFailed as exc:
                problems += [{"file": shown(p.path), "line": p.line, "message": p.message.replace(tmp + "/", "")}
                             for p in exc.problems]
        if problems:
            problems.sort(key=lambda p: (p["file"], p["line"] or 0))
            n = len(problems)
            return api_error(400, f"import rejected, nothing was imported ({n} problem{'s' if n != 1 else ''})",
                             problems=problems, field="files", reason="the files have problems")
        drafts = [replace(d, source=f"upload:{shown((d.source or '').rsplit(':', 1)[0])}:"
                                    f"{(d.source or '').rsplit(':', 1)[-1]}") for d in drafts]
        async with editor.lock:
            summary = await editor.run(kb.upsert, drafts, ident.name,
                                       f"web import of {len(drafts)} entries from {len(paths)} file(s)")
    log.info("%s imported %d entries from %d files (kb version %d)", ident.name, len(drafts), len(paths),
             summary.kb_version)
    return api_json({"kb_version": summary.kb_version, "created": list(summary.created),
                     "updated": list(summary.updated), "unchanged": list(summary.unchanged),
                     "files": [p.name for p in paths]})


# -- proposed FAQ entries (training.gaps) -------------------------------------------------------

def _proposals(kb: KnowledgeBase) -> Any:
    from training.gaps import proposals_for

    return proposals_for(kb.store)  # beside the KB: its SQLite file, or PostgreSQL


def _proposal_handler(fn: Any) -> Any:
    async def wrapped(request: web.Request, editor: Editor, kb: KnowledgeBase, ident: Identity) -> web.StreamResponse:
        store = await editor.run(_proposals, kb)
        try:  # a ProposalError carries its status (unknown id 404, already reviewed 409)
            return await fn(request, editor, kb, ident, store)
        finally:
            store.close()

    wrapped.__name__ = fn.__name__
    return _handler(wrapped)


@_proposal_handler
async def list_proposals(request: web.Request, editor: Editor, kb: KnowledgeBase, ident: Identity,
                         store: Any) -> web.StreamResponse:
    status = request.query.get("status", "proposed").strip() or "proposed"
    items = await editor.run(store.list, None if status == "all" else status)
    return api_json({"status": status, "proposals": [p.to_json() for p in items]})


@_proposal_handler
async def accept_proposal(request: web.Request, editor: Editor, kb: KnowledgeBase, ident: Identity,
                          store: Any) -> web.StreamResponse:
    pid = request.match_info["id"]
    body = await _json_body(request) if request.can_read_body else {}
    proposal = await editor.run(store.get, pid)
    fields = {"id": body.get("id"), "title": body.get("title") or "",
              "body": body.get("body", body.get("answer", proposal.answer)),
              "questions": body.get("questions", list(proposal.questions)),
              "tags": body.get("tags", ["from-conversations"])}
    if not fields["title"]:
        qs = fields["questions"] if isinstance(fields["questions"], list) else str(fields["questions"]).split("\n")
        fields["title"] = (str(qs[0]) if qs else proposal.title).strip().rstrip("?!. ")[:MAX_TITLE] or proposal.title
    draft = draft_from(fields, None, f"proposal:{pid}")
    if not draft.questions:
        raise Refused(400, "an FAQ entry needs at least one question", "questions")
    async with editor.lock:
        if not draft.id:
            draft = replace(draft, id=await _free_id(editor, kb, draft.title))
        elif await editor.run(kb.store.find, draft.id) is not None:
            raise Refused(409, f"an article with id {draft.id!r} exists already; choose another id", "id")
        accepted = await editor.run(lambda: store.accept(pid, kb, ident.name, draft=draft))
        article = await editor.run(kb.store.get, draft.id)
    log.info("%s accepted proposal %s as FAQ entry %s", ident.name, pid, draft.id)
    return api_json({"proposal": accepted.to_json(), "article": article_json(article)})


@_proposal_handler
async def reject_proposal(request: web.Request, editor: Editor, kb: KnowledgeBase, ident: Identity,
                          store: Any) -> web.StreamResponse:
    pid = request.match_info["id"]
    body = await _json_body(request) if request.can_read_body else {}
    note = body.get("note") or ""
    if not isinstance(note, str):
        raise Refused(400, "note must be text", "note")
    rejected = await editor.run(store.reject, pid, ident.name, note)
    log.info("%s rejected proposal %s", ident.name, pid)
    return api_json({"proposal": rejected.to_json()})


def setup_kb_editor(app: web.Application) -> None:
    """Mount the knowledge-base editor (and the shared sign-in pages) on the server's app."""
    setup_auth(app)
    if EDITOR in app:
        return
    kb = app.get(KB)
    project = app.get(PROJECT)
    app[EDITOR] = Editor(kb if isinstance(kb, KnowledgeBase) else None, asyncio.Lock(),
                         project.root if project is not None else None)
    r = app.router
    r.add_get("/kb", editor_page)
    static_route(app, "/static/kb", STATIC, {"editor.js", "editor.css"})
    r.add_get("/api/kb/articles", list_articles)
    r.add_post("/api/kb/articles", create_article)
    r.add_post("/api/kb/import", import_files)
    base = "/api/kb/articles/{id}"
    r.add_get(base, get_article)
    r.add_put(base, update_article)
    r.add_delete(base, delete_article)
    r.add_get(base + "/history", history)
    r.add_get(base + "/diff", diff)
    r.add_post(base + "/rollback", rollback)
    r.add_get("/api/kb/proposals", list_proposals)
    r.add_post("/api/kb/proposals/{id}/accept", accept_proposal)
    r.add_post("/api/kb/proposals/{id}/reject", reject_proposal)


__all__ = ["EDITOR", "Editor", "draft_from", "setup_kb_editor"]
