"""KB search latency under different OpenMP thread settings, on this machine, now.

torch (the embedder) and FAISS (the index) each run their own OpenMP thread pool, and by
default an OpenMP worker keeps spinning for a while after each parallel region. On a small
machine that also runs other work, the spinning threads of one pool (or of another process)
take the cores the other needs. This script measures ``kb.search`` latency on the BANKING77
FAQ KB (~10k chunks, hybrid, as a bot runs it) in fresh processes that differ only in their
environment, interleaved in rounds so that changes in the machine's load hit every variant:

- default: no OMP_* variables (what a bot gets unless its operator sets them);
- OMP_WAIT_POLICY=PASSIVE: idle OpenMP workers sleep instead of spinning;
- OMP_NUM_THREADS=1: torch and FAISS single-threaded.

Also shown: the query embedding alone and the FAISS search alone, inside the same process.
The KB comes from banking77.py's --cache when there is one (else it is built: ~10k chunks to
embed).

    python benchmarks/threads.py [--queries 100] [--rounds 2] [--cache benchmarks/out/cache]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.common import log

VARIANTS = {
    "default (no OMP_* set)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
}

WORKER = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
from botkit.project import Project
from knowledge.base import KnowledgeBase
queries = json.loads(sys.stdin.read())
kb = KnowledgeBase.open(Project.load({project!r}), progress=False)
kb.start()
for q in queries[:5]:
    kb.search(q, 5)
search, embed, index = [], [], []
for q in queries:
    search.append(kb.search(q, 5).latency_ms)
    t0 = time.perf_counter(); v = kb.embedder.embed([q]); t1 = time.perf_counter()
    kb.index.search(v, 20); t2 = time.perf_counter()
    embed.append((t1 - t0) * 1000); index.append((t2 - t1) * 1000)
print(json.dumps({{"search": search, "embed": embed, "index": index, "load": os.getloadavg()[0]}}))
"""


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=100, help="queries per process")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()

    from benchmarks.banking77 import load
    from benchmarks.scale import banking_project

    common.print_header("KB search latency vs OpenMP thread settings", [
        "each variant: a fresh process, BANKING77 FAQ KB (hybrid, flat index), "
        f"{args.queries} test queries per process, {args.rounds} interleaved rounds"])
    root, how = banking_project(args)
    log(f"KB ready ({how})")
    _, test, _ = load(common.data_path(args, "banking77"))
    texts = [t for t, _, _ in test]
    results: dict[str, dict[str, list[float]]] = {v: {"search": [], "embed": [], "index": [], "load": []}
                                                  for v in VARIANTS}
    for rnd in range(args.rounds):
        chunk = texts[rnd * args.queries:(rnd + 1) * args.queries]
        for name, extra in VARIANTS.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
            env.update(extra)
            log(f"round {rnd + 1}: {name}...")
            out = subprocess.run([sys.executable, "-c", WORKER.format(repo=str(common.REPO), project=str(root))],
                                 input=json.dumps(chunk), capture_output=True, text=True, env=env, check=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            for key in ("search", "embed", "index"):
                results[name][key] += got[key]
            results[name]["load"].append(got["load"])
    rows = []
    for name, r in results.items():
        rows.append((name, common.percentile(r["search"], 0.5), common.percentile(r["search"], 0.95),
                     common.percentile(r["embed"], 0.5), common.percentile(r["index"], 0.5),
                     common.percentile(r["index"], 0.95),
                     " ".join(f"{x:.2f}" for x in r["load"])))
    print(f"KB: {how}")
    common.print_table(["variant", "search p50 ms", "search p95 ms", "embed p50 ms", "faiss p50 ms",
                        "faiss p95 ms", "1-min load at end of each run"], rows,
                       title=f"kb.search latency ({args.queries * args.rounds} queries per variant)")
    print("search = SearchResult.latency_ms (embedding + FAISS + BM25 + SQLite); embed = embedder.embed([q]); "
          "faiss = kb.index.search(vector, 20) (what kb.search asks for at k=5).")
    common.print_footer()
    log("done")


if __name__ == "__main__":
    main()
