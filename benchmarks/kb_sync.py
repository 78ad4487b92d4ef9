"""How soon an edit on one worker is searchable on another (issue 13, item 3: within 1 s).

Two :class:`~knowledge.base.KnowledgeBase` instances share one PostgreSQL schema, as two workers
do (each with its own connection, its own watcher and its own in-memory FAISS + BM25 index; here
in one process, which changes nothing on the path measured: commit -> NOTIFY -> the other's
watcher -> catch-up from the shared embedding cache). The demo KB is imported on A; then, one
at a time, ``--edits`` new articles are written on A and the time is taken until B's index holds
the new KB version; each edit is then checked to be B's top hit for its own question. Three
columns, measured in the same run on the same machine:

* ``sqlite, 1 process``: the baseline, today's embedded default: the edit and the search in one
  process on one SQLite file (the search's refresh swaps the change in);
* ``postgresql, by NOTIFY``: B learns of the version by LISTEN/NOTIFY (the default);
* ``postgresql, by the poll alone``: A announces on a channel nobody listens to, so B finds each
  version only by its periodic read (``poll_s`` = 2 s): the safety net's latency, and why NOTIFY.

Each time runs from the commit (the new chunks were embedded into the shared cache before it,
as ``KnowledgeBase.upsert`` does) to the end of the first search on the reading side that
returns the edit as its top hit; A syncs its own index meanwhile, in a thread, as it would.
The search latency of each backend is printed too: a PostgreSQL worker searches its
in-memory index as the SQLite one does, but looks up titles, passages and cached vectors of the
hits in PostgreSQL (a few round trips on loopback).

Why an index per worker and not pgvector: a support KB is thousands of chunks, which a flat
FAISS index in the worker searches in well under a millisecond; the search is fused with BM25,
the learned router and the confidence calibration, all of which live in the worker and need
the dense scores of more than the top k. pgvector would move only the dense part to the
server: one more round trip per customer message on the server every worker writes to, and an
HNSW/IVF index there that must agree with the worker's BM25. An edit here costs each worker
one notification and the new chunks' cached vectors (no re-embedding, no rebuild). pgvector is
not installed on this machine (``dpkg -l | grep pgvector`` finds nothing), so no pgvector figure
is given.

    python benchmarks/kb_sync.py [--dsn postgresql://postgres@127.0.0.1:5432/test] [--edits 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["saffron candles", "bamboo toothbrushes", "linen napkins", "copper kettles", "wool blankets",
          "cedar coat hangers", "glass straws", "hemp tote bags", "clay planters", "oak cutting boards"]


def edit(i: int, run: str):
    from knowledge.types import ArticleDraft

    topic = TOPICS[i % len(TOPICS)]
    question = f"Do you sell {topic} in size {i}{run}?"
    body = (f"Yes: {topic} in size {i}{run} ship from our second warehouse within two days. They come in a "
            f"recycled box, and the size {i}{run} model has its own care leaflet.")
    return ArticleDraft(f"bench-{run}-{i}", f"{topic.title()} size {i}{run}", body, ("bench",), (question,)), question


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def wait(check: Callable[[], bool], timeout: float = 30.0) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"an edit did not become searchable within {timeout:.0f} s")
        time.sleep(0.0005)
    return time.perf_counter()


def searches(kb, n: int = 30) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        kb.search(f"how long does delivery take to region {i}")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run_sqlite(embedder, cfg, edits: int, tmp: Path) -> tuple[list[float], list[float]]:
    from knowledge.base import KnowledgeBase
    from knowledge.store import KnowledgeStore

    kb = KnowledgeBase(KnowledgeStore(tmp / "kb.sqlite3"), embedder, tmp / "index", cfg, progress=False)
    kb.start()
    kb.import_paths([REPO / "demo" / "kb"])
    kb.settle()
    took = []
    for i in range(edits):
        draft, question = edit(i, "s")
        kb.embed_ahead([draft])  # as KnowledgeBase.upsert does: the new chunks' vectors cached first
        kb.store.upsert([draft])
        t0 = time.perf_counter()  # committed
        hit = kb.search(question).hits[0].article_id  # its refresh swaps the change in (one process)
        took.append((time.perf_counter() - t0) * 1000)
        assert hit == draft.id, f"SQLite: {question!r} found {hit}, not {draft.id}"
        kb.settle()
    lat = searches(kb)
    kb.close()
    return took, lat


def run_postgres(embedder, cfg, dsn: str, edits: int, tmp: Path, notify: bool
                 ) -> tuple[list[float], list[float], list[float]]:
    import psycopg

    from botkit.backends.pg_knowledge import PostgresKnowledgeStore
    from knowledge.base import KnowledgeBase

    schema = f"botkit_bench_{uuid.uuid4().hex[:10]}"
    channel = None if notify else "botkit_kb.nobody_listens"
    a = KnowledgeBase(PostgresKnowledgeStore(dsn, schema, channel=channel), embedder, tmp / "a", cfg, progress=False)
    b = KnowledgeBase(PostgresKnowledgeStore(dsn, schema), embedder, tmp / "b", cfg, progress=False)
    try:
        a.start()
        b.start()
        first = a.import_paths([REPO / "demo" / "kb"])
        wait(lambda: b.indexed_version == first.kb_version)
        a.settle()
        b.settle()
        took, indexed = [], []
        run = "n" if notify else "p"
        for i in range(edits):
            draft, question = edit(i, run)
            a.embed_ahead([draft])  # KnowledgeBase.upsert's steps, with the commit timed apart
            summary = a.store.upsert([draft], author="bench")
            t0 = time.perf_counter()  # committed on A
            a_sync = threading.Thread(target=a.sync)  # A brings its own index up to date meanwhile
            a_sync.start()
            indexed.append((wait(lambda v=summary.kb_version: b.indexed_version >= v) - t0) * 1000)
            hit = b.search(question).hits[0].article_id
            took.append((time.perf_counter() - t0) * 1000)
            assert hit == draft.id, f"PostgreSQL: {question!r} found {hit} on B, not {draft.id}"
            a_sync.join()
            a.settle()
            b.settle()
        lat = searches(b)
        return took, indexed, lat
    finally:
        a.close()
        b.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def line(name: str, xs: list[float]) -> str:
    return (f"{name:<44} p50 {statistics.median(xs):8.1f}   p95 {pct(xs, 0.95):8.1f}   max {max(xs):8.1f} ms"
            f"   (n={len(xs)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("BOTKIT_TEST_DATABASE_URL",
                                                    "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--edits", type=int, default=30)
    args = ap.parse_args()

    from botkit.config import KnowledgeConfig
    from knowledge.embedding import make_embedder

    embedder = make_embedder()
    embedder.start()
    cfg = KnowledgeConfig()
    cfg = cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(update={"query_cache_size": 0})})
    print(machine_line())
    print(f"embedder {embedder.name}; demo KB imported, then {args.edits} edits of one new article each\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "s").mkdir()
        sq_took, sq_lat = run_sqlite(embedder, cfg, args.edits, root / "s")
        pg_took, pg_indexed, pg_lat = run_postgres(embedder, cfg, args.dsn, args.edits, root / "n", notify=True)
        po_took, po_indexed, _ = run_postgres(embedder, cfg, args.dsn, args.edits, root / "p", notify=False)
    print("commit -> the edit is the top hit of a search (the search included)")
    print(line("sqlite, 1 process (baseline)", sq_took))
    print(line("postgresql, A -> B by NOTIFY", pg_took))
    print(line("postgresql, A -> B by the 2 s poll alone", po_took))
    print("commit -> B's index holds the edit (no search: the propagation alone)")
    print(line("postgresql, by NOTIFY", pg_indexed))
    print(line("postgresql, by the 2 s poll alone", po_indexed))
    print("\nsearch (query cache off)")
    print(line("sqlite", sq_lat))
    print(line("postgresql (worker B)", pg_lat))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} (the machine's cores are shared)")


if __name__ == "__main__":
    main()
