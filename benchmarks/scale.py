"""How the vector index scales, and how long an edit takes to become visible.

Part 1 -- ``knowledge.index.VectorIndex`` alone, on synthetic clustered unit vectors (384-d,
like MiniLM): for each size and each index kind (flat, hnsw, ivf, with botkit's defaults:
hnsw_m=32, ef_search=64, nprobe=16, nlist=min(4*sqrt(n), n/39)):
build time, RSS growth while building and after, index file size, save and load time,
single-query search latency p50/p95 (k=5, 200 queries, one at a time, FAISS limited to one
OpenMP thread; p50 with FAISS's default thread count beside it), and recall@5 of hnsw and ivf
against the exact (flat) results. The data: ``n/100`` random unit centres, each point a centre
plus isotropic Gaussian noise of the same norm (cosine about 0.5 between members of a cluster,
about 0 across clusters); queries are fresh points from the same clusters. Isotropic noise in
384 dimensions makes the five nearest members of a cluster nearly tied, so this is a hard case
for approximate search: expect real sentence embeddings to give higher recall.

Part 2 -- edit-to-visible time with a real KnowledgeBase (the project's own configuration:
hybrid retrieval, index type auto): on a copy of ``demo/`` and on the BANKING77 FAQ KB
(~10k chunks), append a new section to an article with ``kb.upsert`` and time until
``kb.search`` returns the new passage -- in the same process, and in a second process holding
its own KnowledgeBase on the same project (the time of its next ``search``).

    python benchmarks/scale.py [--sizes 10000,100000,1000000] [--kinds flat,hnsw,ivf] [--edits 10]
                               [--skip-index] [--skip-edits] [--cache benchmarks/out/cache]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import log

DIM = 384
K = 5
FACTS = [  # one per edit, unlike each other, so an edit's query finds that edit and no earlier one
    "the courtesy desk now opens at 7 am on public holidays.",
    "gift wrapping is free for orders placed before noon on Fridays.",
    "our Lisbon warehouse ships orange-labelled parcels on Sundays.",
    "loyalty members can borrow a ladder from the Denver showroom.",
    "the spring catalogue is printed on recycled hemp paper.",
    "parcels to Iceland travel by ferry during February storms.",
    "the night phone line is staffed by volunteers from Oslo.",
    "woollen blankets may be returned after a 40-day trial.",
    "quiz winners receive a brass lantern engraved with their initials.",
    "bicycle couriers deliver in Utrecht within two hours.",
]


# -- synthetic data -------------------------------------------------------------------------
def clustered(n: int, centres: np.ndarray, rng: np.random.Generator, sigma: float = 1.0,
              block: int = 100_000) -> np.ndarray:
    """n unit vectors: a random centre plus N(0, sigma^2/d) noise per coordinate, normalised."""
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, block):
        m = min(block, n - start)
        which = rng.integers(0, len(centres), m)
        x = centres[which] + rng.standard_normal((m, DIM), dtype=np.float32) * np.float32(sigma / np.sqrt(DIM))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + m] = x
    return out


class PeakRSS:
    """Samples RSS in a thread; .peak is the highest seen (MiB) while the block ran."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.peak = common.rss_mib()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, common.rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, common.rss_mib())


def index_part(sizes: list[int], kinds: list[str], n_queries: int) -> list[tuple]:
    import faiss

    from knowledge.index import VectorIndex

    default_threads = faiss.omp_get_max_threads()
    rows = []
    tmp = common.workdir("botkit-bench-index-")
    for n in sizes:
        rng = np.random.default_rng(n)
        centres = rng.standard_normal((max(1, n // 100), DIM), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        log(f"n={n:,}: generating vectors ({len(centres):,} clusters)...")
        vectors = clustered(n, centres, rng)
        queries = clustered(n_queries, centres, rng)
        ids = np.arange(n, dtype=np.int64)
        truth = None
        for kind in kinds:
            common.release_memory()
            faiss.omp_set_num_threads(default_threads)
            rss0 = common.rss_mib()
            log(f"n={n:,} {kind}: building...")
            with PeakRSS() as peak_build:
                t0 = time.perf_counter()
                index = VectorIndex.build(vectors, ids, kind, dim=DIM)  # type: ignore[arg-type]
                build_s = time.perf_counter() - t0
            rss_after = common.rss_mib()
            path = tmp / f"{kind}-{n}.faiss"
            with PeakRSS() as peak_save:
                t0 = time.perf_counter()
                index.save(path)
                save_s = time.perf_counter() - t0
            size_mib = path.stat().st_size / 2**20
            t0 = time.perf_counter()
            loaded = VectorIndex.load(path)
            load_s = time.perf_counter() - t0
            assert loaded.ntotal == n
            del loaded
            path.unlink()
            common.release_memory()
            # exact answers for recall: the flat index's own results, batched
            if kind == "flat" or truth is None:
                if kind != "flat":
                    log("  (no flat run at this size: recall computed by brute force)")
                    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
                else:
                    truth = index.search(queries, K)[1]
            log(f"n={n:,} {kind}: built in {build_s:.1f}s; timing {n_queries} single queries...")
            faiss.omp_set_num_threads(1)
            index.search(queries[:1], K)  # warm-up
            lat1, found = [], []
            for q in queries:
                t0 = time.perf_counter()
                _, got = index.search(q[None, :], K)
                lat1.append((time.perf_counter() - t0) * 1000)
                found.append(got[0])
            faiss.omp_set_num_threads(default_threads)
            index.search(queries[:1], K)
            latd = []
            for q in queries:
                t0 = time.perf_counter()
                index.search(q[None, :], K)
                latd.append((time.perf_counter() - t0) * 1000)
            recall = float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)]))
            extra = ""
            if kind == "ivf":
                extra = f"nlist {index._index.nlist}, nprobe {index.nprobe}"
            elif kind == "hnsw":
                extra = f"M {index.hnsw_m}, efSearch {index.ef_search}"
            rows.append((f"{n:,}", kind, build_s, rss_after - rss0, peak_build.peak - rss0, size_mib, save_s,
                         peak_save.peak - rss_after, load_s, common.percentile(lat1, 0.5),
                         common.percentile(lat1, 0.95), common.percentile(latd, 0.5),
                         recall if kind != "flat" else None, extra))
            log(f"  p50 {rows[-1][9]:.3f} ms, recall@5 {recall:.3f}, index {size_mib:.0f} MiB")
            del index
            common.release_memory()
        del vectors
        common.release_memory()
    return rows


# -- edit-to-visible ------------------------------------------------------------------------
WORKER = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
from botkit.project import Project
from knowledge.base import KnowledgeBase
kb = KnowledgeBase.open(Project.load({project!r}), progress=False)
kb.start()
kb.search("warm-up question", 5)
print(json.dumps({{"ready": True}}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    lex_before = kb.lexical
    t0 = time.perf_counter()
    res = kb.search(req["query"], 5)
    ms = (time.perf_counter() - t0) * 1000
    visible = any(req["marker"] in h.passage for h in res.hits)
    lex_ms = None  # until this process's BM25 index has been replaced (rebuilt in the background above 5k chunks)
    if req.get("wait_lexical") and lex_before is not None:
        while kb.lexical is lex_before and time.perf_counter() - t0 < 60:
            time.sleep(0.002)
        lex_ms = (time.perf_counter() - t0) * 1000
    print(json.dumps({{"ms": ms, "visible": visible, "kb_version": res.kb_version, "lex_ms": lex_ms}}), flush=True)
"""


def copy_demo() -> Path:
    dst = common.workdir("botkit-bench-demo-") / "demo"
    shutil.copytree(common.REPO / "demo", dst, ignore=shutil.ignore_patterns(".botkit"))
    return dst


def banking_project(args) -> tuple[Path, str]:
    """A BANKING77 FAQ project (hybrid, as a bot would run it); its database is copied from
    banking77.py's --cache when there is one, so nothing is re-embedded."""
    from benchmarks.banking77 import build_kb, drafts, load

    state = common.workdir("botkit-bench-b77-") / "state"
    source = None
    if args.cache is not None:
        base = args.cache if args.cache.is_absolute() else common.REPO / args.cache
        source = base / "banking77-torch-fp32"
    how = "built now"
    if source is not None and (source / "botkit.sqlite3").exists():
        shutil.copytree(source, state)
        how = f"database copied from {source}"
    project = common.make_project(common.knowledge_config(hybrid=True), state_dir=state)
    train, _, cats = load(common.data_path(args, "banking77"))
    log(f"banking77 KB: {how}; bringing it up to date...")
    kb, s, n_emb = build_kb(project, drafts(train, cats))
    how += f" ({n_emb} texts embedded now, {s:.1f}s)"
    kb.close()
    return project.root, how


def edit_part(root: Path, label: str, n_edits: int, article_ids: list[str] | None = None) -> tuple[list[tuple], str]:
    from botkit.project import Project
    from knowledge.base import KnowledgeBase
    from knowledge.types import ArticleDraft

    project = Project.load(root)
    kb = KnowledgeBase.open(project, progress=None)
    t0 = time.perf_counter()
    report = kb.start()
    if kb.store.count() == 0:  # the demo copy: import its sources like `botkit kb import`
        kb.import_paths(project.source_paths(), author="benchmark")
    start_s = time.perf_counter() - t0
    n_chunks = kb.index.ntotal
    info = (f"{label}: {kb.store.count()} articles, {n_chunks} chunks, index {kb.index.kind}, "
            f"hybrid {kb.config.retrieval.hybrid}, embedder {kb.embedder.name}; start+import {start_s:.1f}s "
            f"(index {report.status})")
    log(info)
    worker = subprocess.Popen([sys.executable, "-c", WORKER.format(repo=str(common.REPO), project=str(root))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdin is not None
    ready = json.loads(worker.stdout.readline())
    assert ready.get("ready"), ready

    def ask(query: str, marker: str, wait_lexical: bool = False) -> dict:
        worker.stdin.write(json.dumps({"query": query, "marker": marker, "wait_lexical": wait_lexical}) + "\n")
        worker.stdin.flush()
        return json.loads(worker.stdout.readline())

    ids = article_ids or [a.id for a in kb.store.list()]
    kb.search("warm-up question", K)
    upsert_ms, search_ms, total_ms, x_ms, x_next_ms, same_visible, x_visible = [], [], [], [], [], 0, 0
    steady, lex_ms, x_lex_ms = [], [], []
    hybrid = kb.lexical is not None
    for i in range(n_edits):
        art = kb.store.get(ids[(i * 7) % len(ids)])
        original = ArticleDraft(art.id, art.title, art.body, art.tags, art.questions, art.source)
        token = f"zq{i}x{os.getpid() % 1000}"
        sentence = f"Service bulletin {token}: {FACTS[i % len(FACTS)]}"
        draft = ArticleDraft(art.id, art.title, f"{art.body}\n\n## Bulletin {token}\n\n{sentence}", art.tags,
                             art.questions, art.source)
        # steady-state search latency right before the edit (nothing to sync)
        r = kb.search(sentence, K)
        steady.append(r.latency_ms)
        lex_before = kb.lexical
        t0 = time.perf_counter()
        kb.upsert([draft], author="benchmark")
        t1 = time.perf_counter()
        r = kb.search(sentence, K)
        t2 = time.perf_counter()
        visible = any(token in h.passage for h in r.hits)
        same_visible += visible
        upsert_ms.append((t1 - t0) * 1000)
        search_ms.append((t2 - t1) * 1000)
        total_ms.append((t2 - t0) * 1000)
        if hybrid:  # the BM25 index is replaced synchronously up to 5k chunks, in a background thread above
            while kb.lexical is lex_before and time.perf_counter() - t0 < 60:
                time.sleep(0.002)
            lex_ms.append((time.perf_counter() - t0) * 1000)
        got = ask(sentence, token, wait_lexical=hybrid)  # the other process's first search after the edit
        x_ms.append(got["ms"])
        x_visible += got["visible"]
        if got["lex_ms"] is not None:
            x_lex_ms.append(got["lex_ms"])
        x_next_ms.append(ask(sentence, token)["ms"])  # and its next one (nothing left to sync)
        # put the article back (not timed), so each edit is the only bulletin in the KB, and let both
        # processes catch up before the next edit
        lex_before = kb.lexical
        t0 = time.perf_counter()
        kb.upsert([original], author="benchmark")
        while hybrid and kb.lexical is lex_before and time.perf_counter() - t0 < 120:
            time.sleep(0.002)
        ask(sentence, token, wait_lexical=hybrid)
    worker.stdin.close()
    worker.wait(timeout=60)
    kb.close()
    p50 = lambda v: common.percentile(v, 0.5)  # noqa: E731
    rows = [
        (label, n_chunks, "same process: kb.upsert()", p50(upsert_ms), min(upsert_ms), max(upsert_ms), ""),
        (label, n_chunks, "same process: next kb.search()", p50(search_ms), min(search_ms), max(search_ms), ""),
        (label, n_chunks, "same process: upsert -> visible", p50(total_ms), min(total_ms), max(total_ms),
         f"visible {same_visible}/{n_edits}"),
    ]
    if lex_ms:
        rows.append((label, n_chunks, "same process: upsert -> BM25 updated", p50(lex_ms), min(lex_ms), max(lex_ms),
                     ""))
    rows += [
        (label, n_chunks, "other process: next search()", p50(x_ms), min(x_ms), max(x_ms),
         f"visible {x_visible}/{n_edits}"),
    ]
    if x_lex_ms:
        rows.append((label, n_chunks, "other process: search -> BM25 updated", p50(x_lex_ms), min(x_lex_ms),
                     max(x_lex_ms), ""))
    rows += [
        (label, n_chunks, "other process: search after that", p50(x_next_ms), min(x_next_ms), max(x_next_ms), ""),
        (label, n_chunks, "baseline: search, no edit pending", p50(steady), min(steady), max(steady), ""),
    ]
    return rows, info


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="index sizes (comma-separated)")
    p.add_argument("--kinds", default="flat,hnsw,ivf")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--edits", type=int, default=10)
    p.add_argument("--skip-index", action="store_true")
    p.add_argument("--skip-edits", action="store_true")
    args = p.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]

    import faiss

    common.print_header("Index scaling and edit-to-visible time", [
        f"part 1: VectorIndex on synthetic clustered unit vectors, d={DIM}, k={K}, {args.queries} single queries; "
        f"FAISS default OpenMP threads here: {faiss.omp_get_max_threads()}",
        f"part 2: real KnowledgeBase, {args.edits} edits per KB",
    ])
    if not args.skip_index:
        rows = index_part(sizes, kinds, args.queries)
        common.print_table(
            ["chunks", "kind", "build s", "RSS +MiB", "build peak +MiB", "file MiB", "save s", "save peak +MiB",
             "load s", "p50 ms (1 thr)", "p95 ms (1 thr)", "p50 ms (default thr)", "recall@5", "parameters"],
            rows, title="VectorIndex: build, memory, file, latency, recall (recall against flat)")
        print("RSS +MiB = resident memory after building minus before (the vectors themselves were already "
              "resident); build/save peak = highest RSS sampled every 50 ms during build/save, minus the value "
              "before it. Latency = VectorIndex.search of one query, wall clock.")
        print()
    if not args.skip_edits:
        rows, infos = [], []
        log("edit-to-visible: demo KB...")
        r, info = edit_part(copy_demo(), "demo", args.edits)
        rows += r
        infos.append(info)
        log("edit-to-visible: banking77 KB...")
        root, how = banking_project(args)
        r, info = edit_part(root, "banking77", args.edits)
        rows += r
        infos.append(f"{info}; {how}")
        for line in infos:
            print(line)
        common.print_table(["KB", "chunks", "step", "p50 ms", "min ms", "max ms", "check"], rows,
                           title=f"Edit-to-visible ({args.edits} edits each: a new '## Bulletin' section appended "
                                 "to an article, then undone untimed; query = the new sentence)")
        print("same process: kb.upsert() (store write + vector index sync + persist; the BM25 index is rebuilt "
              "inside it up to 5,000 chunks, in a background thread above), then kb.search(). 'BM25 updated' = from "
              "the upsert (or the other process's search) until KnowledgeBase.lexical has been replaced; until then "
              "hybrid scoring uses the old BM25 index, so the new text is found by its dense score alone. Other "
              "process: a second KnowledgeBase in its own Python process on the same project, timed around its "
              "next kb.search() (which notices the new kb_version and syncs, taking vectors from the shared "
              "embedding cache).")
    common.print_footer()
    log("done")


if __name__ == "__main__":
    main()
