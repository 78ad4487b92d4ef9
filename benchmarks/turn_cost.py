"""Turn cost (issue 13, item 5): the extractive turn measured beside the batched embedding ceiling
in the same run, with the normalised-query cache off and on.

One process, the demo KB, the extractive responder, a SQLite conversation store, escalation
rules off (every turn goes through retrieval and a reply). It prints:

* the ceiling: the project's embedder on batches of 64 of the run's own messages (sentences/s);
* closed loop (each conversation waits for its reply before its next message) at 1 and N
  conversations: turns/s, p50/p95, and at 1 conversation the per-turn split: embedding, the
  whole search (embedding + FAISS + BM25 + router + passage), and the overhead beyond the search
  (the thread hop, follow-up logic, the responder, the store writes);
* open loop at half the N-conversation maximum (Poisson arrivals): p50/p95;
* each of these with the query cache off and on, and the hit rate the run measured;
* each of these per embedding backend (``--backends``, default torch-fp32 then auto: what
  ``knowledge.embedding.backend: auto`` picks on this CPU), each beside its own ceiling;
* store: the milliseconds per turn spent in the conversation store's calls (accept, the inbox
  re-read, get_or_create, window, record: two of them are fsynced commits), waiting for its one
  connection included; "ceiling@batch": the embedder alone at the run's mean batch size, which
  is what the ceiling at 64 overstates when concurrent queries form smaller batches;
* "(store alone)": a turn's store calls and nothing else, at 1 and N conversations: what the
  SQLite store (two fsynced commits per turn) serves on this disk, group commit off (one
  connection under one lock, a commit per write: the store before it) and on, in the same run;
  ``--store-only`` prints just these, alternating ``--store-rounds`` times (no model needed);
* a variant that follows another in the paired rotation can be slowed by it (onnxruntime's
  threads spin for a while after a run, by default), so ``--paired-only --backends torch-fp32``
  compares the engine's turn before and after with nothing else in the rotation;
* "closed 1 (before)": the engine's turn as it was before the inbox re-read was dropped from
  ``Engine.handle`` (accept, then answer, which reads the accepted message back), beside the
  current path in the same run.

Traffic: the customer messages of STAR (RasaHQ/STAR, MIT; crowd workers role-playing customers
of 13 services, ../shared/datasets/star), in DialogueID order, each dialogue one conversation.
Its topics are not the demo shop's, which does not change what a turn costs; the hit rate is a
property of the traffic: how often a message is an exact repeat (after normalising case,
spaces and trailing punctuation) of one seen before. The run's own rate is for a cold cache and
a few hundred messages; the steady-state rate over the whole corpus (LRU of the configured
size, no model needed) is printed beside it. Without the datasets, --traffic demo replays the
demo's eval questions (labelled as such: every question repeats, so its hit rate means nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gzip
import json
import random
import re
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, cast

from benchmarks.common import REPO, data_path, log, parser, percentile, print_footer, print_header, print_table, workdir

_TURN: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("turn_searches", default=None)
_STORE: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("turn_store", default=None)
STORE_CALLS = ("accept", "inbox_item", "get_or_create", "window", "record")


def time_store_calls(store: Any) -> None:
    """Add the milliseconds of each of a turn's store calls to the current turn's list."""
    for name in STORE_CALLS:
        fn = getattr(store, name)

        async def timed(*args: Any, _fn: Any = fn, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await _fn(*args, **kw)
            finally:
                spent = _STORE.get()
                if spent is not None:
                    spent.append((time.perf_counter() - t0) * 1000)

        setattr(store, name, timed)


def star_conversations(path: Path) -> list[list[str]]:
    """The customer messages of each STAR dialogue, dialogues in DialogueID order."""
    with gzip.open(path, "rt") as f:
        dialogues = sorted((json.loads(line) for line in f if line.strip()), key=lambda d: d["DialogueID"])
    out = []
    for d in dialogues:
        texts = [e["Text"].strip() for e in d["Events"]
                 if e.get("Agent") == "User" and e.get("Action") == "utter" and str(e.get("Text") or "").strip()]
        if texts:
            out.append(texts)
    return out


def demo_conversations() -> list[list[str]]:
    questions = [json.loads(line)["query"] for line in
                 (REPO / "demo" / "eval" / "queries.jsonl").read_text().splitlines() if line.strip()]
    return [questions[i:i + 4] for i in range(0, len(questions), 4)]


def corpus_hit_rate(conversations: list[list[str]], capacity: int) -> tuple[float, float, int]:
    """Exact-normalised repeat rate over the whole stream: with an LRU of ``capacity``, and unbounded."""
    from knowledge.query_cache import normalise_query

    lru: OrderedDict[str, None] = OrderedDict()
    seen: set[str] = set()
    hits = unbounded = n = 0
    for conv in conversations:
        for text in conv:
            key = normalise_query(text)
            n += 1
            unbounded += key in seen
            seen.add(key)
            if key in lru:
                hits += 1
                lru.move_to_end(key)
            else:
                lru[key] = None
                if len(lru) > capacity:
                    lru.popitem(last=False)
    return hits / n, unbounded / n, n


class TimedEmbedder:
    """Wraps the embedder to add each forward pass's milliseconds to the current turn's list."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.ms: list[float] = []
        if hasattr(inner, "embed_queries"):  # only then: BatchingEmbedder batches ``embed`` of an embedder without
            self.embed_queries = lambda texts: self._timed(inner.embed_queries, texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _timed(self, fn: Any, texts: list[str]) -> Any:
        t0 = time.perf_counter()
        out = fn(texts)
        self.ms.append((time.perf_counter() - t0) * 1000)
        return out

    def embed(self, texts: list[str]) -> Any:
        return self._timed(self.inner.embed, texts)



class Run:
    """One engine (fresh KB, fresh conversation store, cold query cache) on the project."""

    def __init__(self, root: Path, embedder: Any, cache_size: int, tag: str, group_commit: bool = True):
        from botkit.engine import Engine
        from botkit.project import Project
        from botkit.responders.factory import make_responder
        from botkit.store import SQLiteConversationStore
        from knowledge.base import KnowledgeBase
        from knowledge.query_cache import QueryCache
        from knowledge.retriever import KnowledgeRetriever
        from knowledge.store import KnowledgeStore

        project = Project.load(root)
        cfg = project.config
        self.timed: Any = cast(Any, TimedEmbedder(embedder))
        self.kb = KnowledgeBase(KnowledgeStore(project.db_path), self.timed, project.index_dir, cfg.knowledge,
                                progress=False, language=cfg.language.split("-")[0])
        self.kb.query_cache = QueryCache(cache_size)
        retriever = KnowledgeRetriever(self.kb)
        inner_search = retriever.search

        async def search(query: str, k: int | None = None) -> Any:
            result = await inner_search(query, k)
            searches = _TURN.get()
            if searches is not None:
                searches.append(result.latency_ms)
            return result

        retriever.search = search  # type: ignore[method-assign]
        store = SQLiteConversationStore(workdir() / f"conv-{tag}.sqlite3", group_commit=group_commit)
        time_store_calls(store)
        self.engine = Engine(retriever=retriever, responder=make_responder(cfg.dialogue, root), store=store,
                             rules=[], config=cfg.dialogue)
        self.turns: list[dict[str, float]] = []
        self.batch_mark = (0, 0)
        self.before = False  # True: the turn as Engine.handle made it before (accept, then answer: a re-read)

    async def turn(self, conversation_id: str, text: str) -> None:
        from botkit.types import IncomingMessage

        searches: list[float] = []
        spent: list[float] = []
        token, store_token = _TURN.set(searches), _STORE.set(spent)
        embedded = len(self.timed.ms)
        t0 = time.perf_counter()
        try:
            message = IncomingMessage(conversation_id, text[:4000])
            if self.before:
                await self.engine.answer(await self.engine.accept(message))
            else:
                await self.engine.handle(message)
        finally:
            _TURN.reset(token)
            _STORE.reset(store_token)
        ms = (time.perf_counter() - t0) * 1000
        self.turns.append({"ms": ms, "search": sum(searches), "embed": sum(self.timed.ms[embedded:]),
                           "searches": len(searches), "store": sum(spent)})

    def summary(self, wall: float) -> dict[str, float]:
        stats = self.kb.query_cache.stats()
        ms = [t["ms"] for t in self.turns]
        return {"turns": len(ms), "tps": len(ms) / wall, "p50": percentile(ms, 0.5), "p95": percentile(ms, 0.95),
                "search": percentile([t["search"] for t in self.turns], 0.5),
                "embed": percentile([t["embed"] for t in self.turns], 0.5),
                "overhead": percentile([t["ms"] - t["search"] for t in self.turns], 0.5),
                "overhead95": percentile([t["ms"] - t["search"] for t in self.turns], 0.95),
                "store": percentile([t["store"] for t in self.turns], 0.5),
                "searches": sum(t["searches"] for t in self.turns) / max(1, len(ms)),
                # a turn that embedded nothing was served from the cache (meaningful at 1 conversation only:
                # with several, a forward pass is timed into whichever turns overlap it)
                "hit_turn": percentile([t["ms"] for t in self.turns if t["searches"] and not t["embed"]], 0.5),
                "hit": stats.hit_rate if stats.capacity else float("nan"),
                "batch": self.batch()}

    def batch(self) -> float:
        """Mean queries per forward pass of the batching embedder (since the measured window began)."""
        embedder = self.kb.embedder
        passes = getattr(embedder, "batches", 0) - self.batch_mark[0]
        return (getattr(embedder, "queries", 0) - self.batch_mark[1]) / passes if passes else float("nan")

    def mark(self) -> None:
        self.turns.clear()
        self.kb.query_cache.hits = self.kb.query_cache.misses = 0
        self.batch_mark = (getattr(self.kb.embedder, "batches", 0), getattr(self.kb.embedder, "queries", 0))


async def _prepare(run: Run, warm: list[str]) -> None:
    """One warm-up turn (the first forward passes are slow), then the traffic before the measured
    window searched into the cache (16 at a time, batched), so a cache-on run starts where a server
    that has been up a while would be; then the counters start from zero."""
    await run.turn("warm-up", "how do I start a return?")
    run.kb.query_cache.clear()
    if run.kb.query_cache.enabled:
        for start in range(0, len(warm), 16):
            await asyncio.gather(*(run.engine.retriever.search(q[:4000]) for q in warm[start:start + 16]))
    run.mark()


async def closed_loop(run: Run, conversations: list[list[str]], concurrency: int, turns: int,
                      warm: list[str]) -> dict[str, float]:
    async with run.engine:
        await _prepare(run, warm)
        queue = iter(enumerate(conversations))
        budget = [turns]

        async def worker() -> None:
            for i, conv in queue:
                for text in conv:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                    await run.turn(f"c{concurrency}-{i}", text)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return run.summary(time.perf_counter() - t0)


async def paired(runs: list[tuple[str, Run]], conversations: list[list[str]], turns: int) -> None:
    """One conversation at a time, each message answered by every run in turn (the order rotating
    by message), so every variant meets the same machine load within a second of the others: the
    per-message differences are paired, which a shared machine's drifting load cannot fake."""
    async with contextlib.AsyncExitStack() as stack:
        for _, run in runs:
            await stack.enter_async_context(run.engine)
            await _prepare(run, [])
        texts = [(i, text) for i, conv in enumerate(conversations) for text in conv][:turns]
        for j, (i, text) in enumerate(texts):
            for _, run in runs[j % len(runs):] + runs[:j % len(runs)]:
                await run.turn(f"paired-{i}", text)


async def store_alone(concurrency: int, turns: int, group_commit: bool = True) -> dict[str, float]:
    """A turn's conversation-store calls and nothing else (no embedding, no search, no engine):
    the store's own ceiling on this disk, at ``concurrency`` conversations (closed loop).
    ``group_commit`` False: the store as it was before group commit (one connection, one lock,
    a commit per write), the baseline measured in the same run."""
    import uuid
    from datetime import UTC, datetime

    from botkit.store import SQLiteConversationStore
    from botkit.types import InboxItem, IncomingMessage, Turn

    store = SQLiteConversationStore(workdir() / f"store-alone-{concurrency}-{group_commit}.sqlite3",
                                    group_commit=group_commit)
    await store.start()
    ms: list[float] = []
    budget = [turns]

    async def conversation(i: int) -> None:
        cid = f"s{concurrency}-{i}"
        while budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            now = datetime.now(UTC)
            item = await store.accept(InboxItem(IncomingMessage(cid, "where is my order?", at=now), uuid.uuid4().hex))
            await store.get_or_create(cid, "cli", "", {}, now)
            seq = (await store.window(cid, 200)).next_seq
            await store.record([Turn(cid, seq, "customer", "where is my order?", now),
                                Turn(cid, seq + 1, "bot", "It ships within 2 days.", now, action="answer")],
                               status="bot", answers=item)
            ms.append((time.perf_counter() - t0) * 1000)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(conversation(i) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    finally:
        commits, grouped = store._sql.commits, store._sql.grouped
        await store.close()
    return {"turns": len(ms), "tps": len(ms) / wall, "p50": percentile(ms, 0.5), "p95": percentile(ms, 0.95),
            "per_commit": grouped / commits if commits else float("nan")}


def store_runs(n: int, turns: int, rounds: int) -> list[tuple[bool, int, dict[str, float]]]:
    """The store alone at 1 and ``n`` conversations, group commit off (the old store) and on,
    alternating ``rounds`` times (which runs first swaps every round) so both meet the same
    machine load: (grouped, conversations, medians over the rounds)."""
    results: dict[tuple[bool, int], list[dict[str, float]]] = {}
    for k in range(rounds):
        for c in (1, n):
            for grouped in ((False, True) if k % 2 == 0 else (True, False)):  # neither always runs second
                log(f"the store alone, {c} conversation(s), group commit {'on' if grouped else 'off'}")
                results.setdefault((grouped, c), []).append(asyncio.run(store_alone(c, turns, grouped)))
    return [(grouped, c, {k: (sum(r[k] for r in rs) if k == "turns" else percentile([r[k] for r in rs], 0.5))
                          for k in rs[0]})
            for (grouped, c), rs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def open_plan(conversations: list[list[str]], turns: int, active: int) -> list[tuple[str, str]]:
    """(conversation id, message) in arrival order: one message from each of ``active`` dialogues in
    turn, a finished dialogue replaced by the next; shorter than ``turns`` when the traffic runs out."""
    streams = [(i, iter(conv)) for i, conv in enumerate(conversations[:active])]
    nxt = active
    plan: list[tuple[str, str]] = []
    while len(plan) < turns and streams:
        live = []
        for i, it in streams:
            text = next(it, None)
            if text is not None:
                plan.append((f"open-{i}", text))
                live.append((i, it))
            elif nxt < len(conversations):  # this dialogue is over: the next one takes its place
                live.append((nxt, iter(conversations[nxt])))
                nxt += 1
        streams = live
    plan = plan[:turns]
    return plan


async def open_loop(run: Run, conversations: list[list[str]], rate: float, turns: int, warm: list[str],
                    active: int = 50) -> dict[str, float]:
    """Poisson arrivals at ``rate`` turns/s; messages taken round-robin from ``active`` dialogues at a
    time, so one conversation's messages are far apart (a conversation answers one turn at a time)."""
    rng = random.Random(13)
    plan = open_plan(conversations, turns, active)
    async with run.engine:
        await _prepare(run, warm)
        tasks = []
        t0 = time.perf_counter()
        due = t0
        for conv, text in plan:
            due += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(run.turn(conv, text)))
        await asyncio.gather(*tasks)
        return run.summary(time.perf_counter() - t0)


def ceiling(embedder: Any, texts: list[str], seconds: float = 3.0, size: int = 64) -> float:
    """Sentences/s of the embedder alone on batches of ``size`` (64: the most it could serve)."""
    embed = getattr(embedder, "embed_queries", embedder.embed)
    batch = (texts * (size // max(1, len(texts)) + 1))[:size]
    embed(batch)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        embed(batch)
        n += len(batch)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--traffic", choices=["star", "demo"], default="star")
    p.add_argument("--conversations", type=int, default=100, help="N, the closed-loop concurrency")
    p.add_argument("--turns", type=int, default=400, help="turns per N-conversation and open-loop run")
    p.add_argument("--single-turns", type=int, default=150, help="turns per 1-conversation run")
    p.add_argument("--cache-size", type=int, default=1024)
    p.add_argument("--paired-turns", type=int, default=200, help="messages of the paired 1-conversation comparison")
    p.add_argument("--paired-only", action="store_true", help="the paired comparison only (with --backends "
                   "torch-fp32: the engine's turn before and after, nothing else in the rotation)")
    p.add_argument("--backends", default="torch-fp32,auto",
                   help="knowledge.embedding.backend values, each run in full (auto: what this CPU gets)")
    p.add_argument("--store-only", action="store_true", help="the store-alone rows only (no model): group commit "
                   "off and on, at 1 and --conversations conversations")
    p.add_argument("--store-rounds", type=int, default=3, help="store-alone runs of each variant, alternating")
    p.add_argument("--store-compare", action="store_true", help="only the engine's closed loop at --conversations, "
                   "cache off, per backend, with the store's group commit off and on (--store-rounds alternating "
                   "rounds each), then the store-alone rows")
    p.add_argument("--warm", type=int, default=300, help="messages searched into the cache before a cache-on run "
                   "(the traffic before the measured window)")
    args = p.parse_args()
    if args.store_only:
        print_header("turn cost: the conversation store alone, group commit off and on (issue 13, item 5)", [
            "a turn's store calls only (accept, get_or_create, window, record) on SQLite with synchronous=FULL; "
            "closed loop; off = one connection under one lock, a commit (fsync) per write, as before; on = "
            f"concurrent writes share one commit, reads on their own connections; {args.store_rounds} alternating "
            "rounds, medians; writes/commit: units of work per COMMIT (on only)"])
        runs = store_runs(args.conversations, args.turns, args.store_rounds)
        print_table(["group commit", "load", "turns", "turns/s", "p50 ms", "p95 ms", "writes/commit"],
                    [["on" if g else "off", f"closed {c}", r["turns"], r["tps"], r["p50"], r["p95"],
                      r["per_commit"] if g else None] for g, c, r in runs])
        print_footer()
        return

    from botkit.app.cli import main as cli
    from botkit.cpu import describe
    from botkit.project import Project
    from knowledge.base import KnowledgeBase

    if args.traffic == "star":
        conversations = star_conversations(data_path(args, "star", "dialogues.jsonl.gz"))
        traffic = "STAR customer messages (crowd role-play, 13 services; ../shared/datasets/star, MIT)"
    else:
        conversations = demo_conversations()
        traffic = "SIMULATED: the demo eval questions replayed (every one repeats: the hit rate means nothing)"
    lru_rate, unbounded_rate, n_msgs = corpus_hit_rate(conversations, args.cache_size)
    print_header("turn cost: extractive turn vs the embedding ceiling, query cache off/on (issue 13, item 5)", [
        f"CPU: {describe()}",
        f"traffic: {traffic}; {len(conversations)} conversations, {n_msgs} messages",
        "closed loop: a conversation sends its next message when the reply came; escalation rules off; "
        f"SQLite conversation store; each run has a fresh KB instance; a cache-on run first searches the "
        f"{args.warm} messages before the measured window into its cache (hit rate: measured window only)",
        "overhead = turn minus its searches (embedding + FAISS + BM25 + router + passage pick); "
        "searches = per turn (a possible follow-up is searched alone and with the previous question); "
        "batch = mean queries per forward pass (queries of concurrent conversations embedded together); "
        "hit turn = a turn whose searches all came from the cache",
        "store = ms per turn inside the conversation store's calls (waiting for its connection included); "
        "closed 1 (before) = the turn as Engine.handle made it before (accept, then answer re-reading the message)"])

    sample = [t for conv in conversations[:200] for t in conv][:256]
    skip = 0
    while sum(len(c) for c in conversations[:skip]) < args.warm and skip < len(conversations) // 2:
        skip += 1
    warm, measured = [t for c in conversations[:skip] for t in c], conversations[skip:]

    rows: list[list[Any]] = []
    n = args.conversations
    projects: list[tuple[str, Path, Any]] = []  # (label, project root, started embedder) per backend
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        root = workdir() / f"demo-{backend}"
        shutil.copytree(REPO / "demo", root, ignore=shutil.ignore_patterns(".botkit"))
        yaml_path = root / "bot.yaml"  # knowledge.embedding.backend (the first "backend:" key of the demo's file)
        yaml_path.write_text(re.sub(r"(?m)^(\s+backend:) \S+", rf"\1 {backend}", yaml_path.read_text(), count=1))
        cli(["--project", str(root), "kb", "import"])
        opened = KnowledgeBase.open(Project.load(root), progress=False)
        opened.embedder.start()
        opened.store.close()
        projects.append((opened.embedder.name.partition(":")[2] + (" (auto)" if backend == "auto" else ""), root,
                         opened.embedder))

    if args.store_compare:
        compare: list[list[Any]] = []
        for name, root, embedder in projects:
            results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for k in range(args.store_rounds):
                for grouped in ((False, True) if k % 2 == 0 else (True, False)):
                    log(f"{name}: closed loop, {n} conversations, cache off, group commit {'on' if grouped else 'off'}")
                    run = Run(root, embedder, 0, f"{root.name}-compare-{k}-{grouped}", group_commit=grouped)
                    results[grouped].append(asyncio.run(closed_loop(run, measured, n, args.turns, warm)))
            for grouped, rs in results.items():
                compare.append([name, "on" if grouped else "off", f"closed {n}", sum(int(r["turns"]) for r in rs)]
                               + [percentile([r[key] for r in rs], 0.5) for key in ("tps", "p50", "p95", "store",
                                                                                    "batch")])
        print(f"the engine at {n} conversations, cache off, the store's group commit off and on: "
              f"{args.store_rounds} alternating rounds each, medians of the rounds\n")
        print_table(["backend", "group commit", "load", "turns", "turns/s", "p50 ms", "p95 ms", "store p50",
                     "batch"], compare)
        print_table(["group commit", "load", "turns", "turns/s", "p50 ms", "p95 ms", "writes/commit"],
                    [["on" if g else "off", f"closed {c}", r["turns"], r["tps"], r["p50"], r["p95"],
                      r["per_commit"] if g else None] for g, c, r in store_runs(n, args.turns, args.store_rounds)])
        print_footer()
        return

    # -- paired, at one conversation: the variants answer the same messages alternately --------------
    variants: list[tuple[str, Run]] = []
    for k, (name, root, embedder) in enumerate(projects):
        variants.append((name, Run(root, embedder, 0, f"paired-{k}")))
        if k == 0:
            variants.append((f"{name}, before", Run(root, embedder, 0, "paired-before")))
            variants[-1][1].before = True
    log(f"paired at 1 conversation: {', '.join(label for label, _ in variants)}")
    asyncio.run(paired(variants, measured, args.paired_turns))
    base = variants[0][1].turns
    paired_rows = []
    for label, run in variants:
        r = run.summary(1.0)
        diff = [t["ms"] - b["ms"] for t, b in zip(run.turns, base)]
        diff_over = [(t["ms"] - t["search"]) - (b["ms"] - b["search"]) for t, b in zip(run.turns, base)]
        paired_rows.append([label, r["turns"], r["p50"], r["p95"], r["embed"], r["search"], r["overhead"],
                            r["overhead95"], r["store"], percentile(diff, 0.5), percentile(diff_over, 0.5)])

    if args.paired_only:
        print(f"paired at 1 conversation, cache off: each of {args.paired_turns} messages answered by every variant "
              f"in turn (order rotating); diff = the median over messages of (this variant - {variants[0][0]})\n")
        print_table(["variant", "turns", "p50 ms", "p95 ms", "embed p50", "search p50", "overhead p50",
                     "overhead p95", "store p50", "turn diff p50", "overhead diff p50"], paired_rows)
        print_footer()
        return
    for name, root, embedder in projects:
        maxima: dict[int, float] = {}
        for size in (0, args.cache_size):
            label = "on" if size else "off"
            plan = [(1, args.single_turns, False)] + ([(1, args.single_turns, True)] if not size else []) + \
                [(n, args.turns, False)]
            for c, turns, old_path in plan:
                log(f"{name}: closed loop, {c} conversation(s), cache {label}{' (before)' if old_path else ''}")
                before = ceiling(embedder, sample)
                run = Run(root, embedder, size, f"{root.name}-{label}-{c}-{old_path}")
                run.before = old_path
                r = asyncio.run(closed_loop(run, measured, c, turns, warm))
                ceil = (before + ceiling(embedder, sample)) / 2  # the machine is shared: measured beside each run
                at_batch = ceiling(embedder, sample, 1.5, max(1, round(r["batch"]))) if r["batch"] == r["batch"] \
                    else None
                log(f"{r['tps']:.1f} turns/s; ceiling {ceil:.0f} sentences/s")
                if not old_path:
                    maxima[size] = max(maxima.get(size, 0.0), r["tps"])
                rows.append([name, f"closed {c}" + (" (before)" if old_path else ""), label, r["turns"], r["tps"],
                             ceil, r["tps"] / ceil, at_batch, r["p50"], r["p95"], r["embed"] if c == 1 else None,
                             r["search"] if c == 1 else None, r["overhead"] if c == 1 else None,
                             r["overhead95"] if c == 1 else None, r["store"], r["searches"], r["batch"], r["hit"],
                             r["hit_turn"] if c == 1 and size else None])
        for size in (0, args.cache_size):
            label = "on" if size else "off"
            rate = maxima[0] / 2  # half the cache-off maximum: the same offered load for both
            log(f"{name}: open loop at {rate:.1f} turns/s, cache {label}")
            r = asyncio.run(open_loop(Run(root, embedder, size, f"{root.name}-open-{label}"), measured, rate,
                                      args.turns, warm))
            rows.append([name, f"open {rate:.1f}/s", label, r["turns"], r["tps"], None, None, None, r["p50"], r["p95"],
                         None, None, None, None, r["store"], r["searches"], r["batch"], r["hit"], None])
    print(f"paired at 1 conversation, cache off: each of {args.paired_turns} messages answered by every variant "
          f"in turn (order rotating); diff = the median over messages of (this variant - {variants[0][0]})\n")
    print_table(["variant", "turns", "p50 ms", "p95 ms", "embed p50", "search p50", "overhead p50", "overhead p95",
                 "store p50", "turn diff p50", "overhead diff p50"], paired_rows)
    for grouped, c, r in store_runs(n, args.turns, 1):
        rows.append([f"(store alone, group commit {'on' if grouped else 'off'})", f"closed {c}", "-", r["turns"],
                     r["tps"], None, None, None, r["p50"], r["p95"], None, None, None, None, r["p50"], None,
                     r["per_commit"] if grouped else None, None, None])
    print("ceiling: sentences/s of the row's embedder alone on batches of 64 of the run's own messages, measured "
          "just before and just after each closed-loop run (mean); ceiling@batch: the same at the run's mean "
          "batch size (after the run)\n")
    print_table(["backend", "load", "cache", "turns", "turns/s", "ceiling", "x ceiling", "ceiling@batch", "p50 ms",
                 "p95 ms", "embed p50", "search p50", "overhead p50", "overhead p95", "store p50", "searches",
                 "batch", "hit rate", "hit turn p50"], rows)
    print(f"corpus hit rate (exact repeats after normalising, every message of the traffic in order): "
          f"{lru_rate:.3f} with an LRU of {args.cache_size}, {unbounded_rate:.3f} unbounded\n")
    print_footer()


if __name__ == "__main__":
    main()
