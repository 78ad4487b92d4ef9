"""``botkit init``, ``botkit kb ...`` and ``botkit eval retrieval``: the project and its knowledge base."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from botkit.app.cli.common import _author, _kb, _print_json, _store
from botkit.app.cli.kb_import import add_import_arguments, cmd_kb_import
from botkit.errors import BotkitError
from botkit.project import init_project


def _article_json(a: Any) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "title": a.title, "tags": list(a.tags), "questions": list(a.questions),
            "body": a.body, "rev": a.rev, "updated_at": a.updated_at, "updated_by": a.updated_by, "source": a.source}


SAMPLE_PROJECT = Path(__file__).resolve().parent.parent / "sample_project"


def cmd_init(args: argparse.Namespace) -> int:
    import shutil

    from connectors.webchat.config import WebChatConfig

    if args.sample and not (Path(args.dir) / "bot.yaml").exists():  # (a project: init_project refuses it)
        # Never over a file of the user's: refuse before anything is written.
        sample = [f.relative_to(SAMPLE_PROJECT) for f in SAMPLE_PROJECT.rglob("*") if f.is_file()]
        taken = [str(f) for f in sample if (Path(args.dir) / f).exists()]
        if taken:
            them = "it" if len(taken) == 1 else "them"
            raise BotkitError(f"{args.dir} already has {', '.join(taken)}; the sample would overwrite {them}: "
                              "choose a new directory, or init without --sample")
    project = init_project(args.dir, args.name, channel_models={"webchat": WebChatConfig})
    where = f"--project {shlex.quote(args.dir)} " if args.dir != "." else ""
    if not args.sample:
        print(f"created {project.root / 'bot.yaml'} (every key, with its default and what it means); put articles "
              f"in {project.root / 'kb'} and run `botkit {where}kb import`")
        return 0
    shutil.copytree(SAMPLE_PROJECT, project.root, dirs_exist_ok=True)
    print(f"created {project.root / 'bot.yaml'}, a sample knowledge base in {project.root / 'kb'} (4 articles, "
          f"3 FAQ entries) and conversation tests in {project.root / 'tests/conversations.yaml'}; importing it "
          f"(the first run loads the embedding model, about 10 s)", flush=True)
    args.project = str(project.root)
    with _kb(args) as kb:
        summary = kb.import_paths(project.source_paths(), _author(args))
    cd = f"  cd {shlex.quote(args.dir)}\n" if args.dir != "." else ""
    print(f"imported {len(summary.created)} entries (knowledge base version {summary.kb_version}). Next:\n{cd}"
          "  botkit test tests/conversations.yaml\n"
          "  botkit ask \"how long does delivery take?\"\n"
          "  botkit serve            # the web chat on http://localhost:8080/chat")
    return 0


def cmd_kb_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        articles = store.list(args.tag)
        version = store.kb_version()
    if args.json:
        _print_json({"kb_version": version, "articles": [
            {"id": a.id, "kind": a.kind, "title": a.title, "tags": list(a.tags), "rev": a.rev,
             "updated_at": a.updated_at} for a in articles]})
        return 0
    width = max((len(a.id) for a in articles), default=2)
    for a in articles:
        print(f"{a.id:<{width}}  {a.kind:<7}  rev {a.rev:<3}  {a.title}")
    print(f"{len(articles)} entries, knowledge base version {version}", file=sys.stderr)
    return 0


def cmd_kb_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if args.rev is not None:
            r = store.revision(args.id, args.rev)
            data = {"id": r.article_id, "rev": r.rev, "action": r.action, "title": r.title, "tags": list(r.tags),
                    "questions": list(r.questions), "body": r.body, "at": r.at, "author": r.author}
        else:
            data = _article_json(store.get(args.id))
    if args.json:
        _print_json(data)
        return 0
    print(f"# {data['title']}\nid: {data['id']}  rev: {data['rev']}  tags: {', '.join(data['tags'])}")
    for q in data["questions"]:
        print(f"question: {q}")
    print()
    print(data["body"])
    return 0


def cmd_kb_history(args: argparse.Namespace) -> int:
    with _store(args) as store:
        history = store.history(args.id)
    if args.json:
        _print_json([{"rev": r.rev, "kb_version": r.kb_version, "at": r.at, "author": r.author,
                      "action": r.action, "title": r.title, "note": r.note} for r in history])
        return 0
    for r in history:
        print(f"rev {r.rev:<3} {r.at}  {r.action:<8} by {r.author:<12} kb v{r.kb_version}  {r.title}"
              + (f"  ({r.note})" if r.note else ""))
    return 0


def cmd_kb_diff(args: argparse.Namespace) -> int:
    with _store(args) as store:
        diff = store.diff(args.id, args.from_rev, args.to_rev)
    print(diff or "(no differences)")
    return 0


def cmd_kb_rollback(args: argparse.Namespace) -> int:
    with _kb(args) as kb:
        summary = kb.rollback(args.id, args.to, _author(args))
    if summary.changed:
        print(f"{args.id} rolled back to the content of revision {args.to}; "
              f"knowledge base version {summary.kb_version}")
    else:
        print(f"{args.id} already has the content of revision {args.to}; nothing changed")
    return 0


def cmd_kb_delete(args: argparse.Namespace) -> int:
    with _kb(args) as kb:
        summary = kb.delete(args.id, _author(args))
    print(f"deleted {args.id}; knowledge base version {summary.kb_version} "
          f"(undo: botkit kb rollback {args.id} --to <rev>)")
    return 0


def cmd_kb_search(args: argparse.Namespace) -> int:
    query = " ".join(args.query)
    with _kb(args) as kb:
        result = kb.search(query, args.k)
    if args.json:
        _print_json({
            "query": result.query, "kb_version": result.kb_version, "threshold": result.threshold,
            "answered": result.answered, "confidence": result.confidence, "min_confidence": result.min_confidence,
            "latency_ms": round(result.latency_ms, 3),
            "hits": [{"id": h.article_id, "title": h.title, "kind": h.kind, "score": h.score,
                      "dense_score": h.dense_score, "lexical_score": h.lexical_score, "heading": h.heading,
                      "passage": h.passage} for h in result.hits],
        })
        return 0
    if not result.answered:
        print(f"no good answer (confidence {result.confidence:.2f} < min_confidence {result.min_confidence})"
              if result.hits and result.confidence is not None else
              f"no good answer (best score {result.hits[0].score:.3f} < threshold {result.threshold})"
              if result.hits else "no good answer (the knowledge base is empty)")
    for i, h in enumerate(result.hits, 1):
        print(f"{i}. [{h.score:.3f}] {h.title}  ({h.article_id})")
        if i == 1 and result.answered:
            print("   " + h.passage.replace("\n", "\n   "))
    print(f"knowledge base version {result.kb_version}, {result.latency_ms:.1f} ms", file=sys.stderr)
    return 0


def cmd_kb_status(args: argparse.Namespace) -> int:
    with _kb(args) as kb:
        report = kb.start_report
        data = {"kb_version": kb.store.kb_version(), "articles": kb.store.count(),
                "chunks": kb.index.ntotal if kb.index else 0, "index": kb.index.kind if kb.index else None,
                "embedder": kb.embedder.name, "index_status": report.status, "index_file": str(kb.index_path)}
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            print(f"{key}: {value}")
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from knowledge.evaluate import evaluate_retrieval, load_queries

    with _kb(args) as kb:
        queries = load_queries(Path(args.queries), {a.id for a in kb.store.list()})
        result = evaluate_retrieval(kb, queries, args.k, args.threshold)
    if args.json:
        result = {key: value for key, value in result.items() if key != "misses" or args.misses}
        _print_json(result)
        return 0
    for key, value in result.items():
        if key != "misses":
            print(f"{key:>20}: {value if not isinstance(value, float) else round(value, 4)}")
    if result["misses"]:
        print(f"\nmisses ({len(result['misses'])}):")
        for m in result["misses"][:30]:
            print(f"  line {m['line']}: {m['query'][:60]!r} expected {m['expected']} got {m['got']} ({m['score']:.3f})")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``init`` and the ``kb`` group."""
    p = sub.add_parser("init", help="create a bot project", parents=[common])
    p.add_argument("dir")
    p.add_argument("--name", help="the bot's name (default: the directory name)")
    p.add_argument("--sample", action="store_true",
                   help="also write a small sample knowledge base and conversation tests, and import it")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_init)

    kb = sub.add_parser("kb", help="edit and search the knowledge base").add_subparsers(
        dest="kb_command", required=True, metavar="ACTION")

    def kbcmd(name: str, func: Any, help: str, author: bool = False, json_flag: bool = True) -> argparse.ArgumentParser:
        p = kb.add_parser(name, help=help, parents=[common])
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        if author:
            p.add_argument("--author", help="recorded in the revision (default: $BOTKIT_AUTHOR or your user name)")
        p.set_defaults(func=func)
        return p

    p = kbcmd("import", cmd_kb_import, "import Markdown, text, HTML, CSV or JSONL files (one transaction)", author=True)
    add_import_arguments(p)
    p = kbcmd("list", cmd_kb_list, "list articles and FAQ entries")
    p.add_argument("--tag", help="only entries with this tag")
    p = kbcmd("show", cmd_kb_show, "show one entry")
    p.add_argument("id")
    p.add_argument("--rev", type=int, help="show this revision instead of the current one")
    p = kbcmd("history", cmd_kb_history, "list an entry's revisions")
    p.add_argument("id")
    p = kbcmd("diff", cmd_kb_diff, "diff an entry between revisions", json_flag=False)
    p.add_argument("id")
    p.add_argument("--from", dest="from_rev", type=int, required=True, metavar="REV")
    p.add_argument("--to", dest="to_rev", type=int, metavar="REV", help="default: the current revision")
    p = kbcmd("rollback", cmd_kb_rollback, "restore an entry to an earlier revision", author=True, json_flag=False)
    p.add_argument("id")
    p.add_argument("--to", type=int, required=True, metavar="REV")
    p = kbcmd("delete", cmd_kb_delete, "delete an entry (its history is kept)", author=True, json_flag=False)
    p.add_argument("id")
    p = kbcmd("search", cmd_kb_search, "search the knowledge base")
    p.add_argument("query", nargs="+")
    p.add_argument("--k", type=int, default=5, help="how many articles (default 5)")
    kbcmd("status", cmd_kb_status, "index and store status (checks and repairs the index)")


def add_eval_commands(ev: Any, common: argparse.ArgumentParser) -> None:
    """``eval retrieval``."""
    p = ev.add_parser("retrieval", help="retrieval accuracy on labelled queries", parents=[common])
    p.add_argument("--queries", required=True, metavar="FILE.jsonl",
                   help='one {"query": "...", "expected": "<article id>" | null} per line')
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--threshold", type=float, help="override knowledge.retrieval.threshold")
    p.add_argument("--json", action="store_true")
    p.add_argument("--misses", action="store_true", help="with --json, include the failed queries")
    p.set_defaults(func=cmd_eval_retrieval)
