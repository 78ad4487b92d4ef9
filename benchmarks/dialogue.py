"""Dialogue turn latency and throughput of the extractive responder at 1, 10 and 100
concurrent conversations, with and without batching query embeddings across conversations.

Each conversation is a closed loop: a customer sends a message, waits for the reply, sends
the next. A turn is the whole engine path: validation, follow-up resolution, embedding,
FAISS + BM25 search, the responder, escalation rules and the SQLite write of both turns.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, log, parser, percentile, print_footer, print_header, print_table, workdir

QUESTIONS = [json.loads(line)["query"] for line in (REPO / "demo" / "eval" / "queries.jsonl").read_text().splitlines()
             if line.strip()]


async def run(concurrency: int, turns_per_conversation: int, batch: bool, root: Path) -> dict[str, float]:
    from botkit.app.compose import build_engine
    from botkit.engine import Engine
    from botkit.project import Project
    from botkit.store import SQLiteConversationStore
    from botkit.types import IncomingMessage
    from knowledge.retriever import KnowledgeRetriever

    project = Project.load(root)
    built = build_engine(project, progress=False,
                         store=SQLiteConversationStore(workdir() / "conversations.sqlite3"))
    kb = built.retriever.kb.__class__.open(project, progress=False)  # a fresh KB so batching can be chosen
    engine = Engine(retriever=KnowledgeRetriever(kb, batch=batch), responder=built.responder, store=built.store,
                    rules=[], config=built.config)  # rules off: every turn goes through retrieval + reply
    latencies: list[float] = []
    async with engine:
        async def conversation(i: int) -> None:
            for j in range(turns_per_conversation):
                text = QUESTIONS[(i * 7 + j) % len(QUESTIONS)]
                t0 = time.perf_counter()
                await engine.handle(IncomingMessage(f"bench-{concurrency}-{i}", text))
                latencies.append((time.perf_counter() - t0) * 1000)

        await conversation(-1)  # warm-up
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(conversation(i) for i in range(concurrency)))
        wall = time.perf_counter() - t0
        embedder = kb.embedder
        batches = getattr(embedder, "batches", 0)
        queries = getattr(embedder, "queries", 0)
    return {"turns": len(latencies), "p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
            "tps": len(latencies) / wall, "batch": queries / batches if batches else 1.0}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--concurrency", default="1,10,100")
    p.add_argument("--turns", type=int, default=300, help="turns per configuration (split over conversations)")
    args = p.parse_args()
    print_header("dialogue turns: extractive responder, demo KB", [
        "closed loop: each conversation waits for its reply before the next message; escalation rules off",
        "batch = mean queries per embedding forward pass"])
    root = workdir() / "demo"
    shutil.copytree(REPO / "demo", root, ignore=shutil.ignore_patterns(".botkit"))
    from botkit.app.cli import main as cli

    cli(["--project", str(root), "kb", "import"])
    rows = []
    for c in [int(x) for x in args.concurrency.split(",")]:
        per = max(2, args.turns // c)
        for batch in (False, True):
            log(f"concurrency {c}, batching {batch}")
            r = asyncio.run(run(c, per, batch, root))
            rows.append([c, "on" if batch else "off (baseline)", r["turns"], r["p50"], r["p95"], r["tps"], r["batch"]])
    print_table(["concurrent conversations", "query batching", "turns", "p50 ms", "p95 ms", "turns/s", "batch"], rows)
    print_footer()


if __name__ == "__main__":
    sys.exit(main())
