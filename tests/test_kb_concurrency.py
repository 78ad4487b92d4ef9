"""A KB import beside a running server: searches keep answering, embeddings are shared.

Real processes and the real model: a child process runs the import (as ``botkit kb import``
does) while this process searches like the server. The import embeds its chunks into the
shared embedding cache, batch by batch, before it commits them; so the server never embeds
them again, a search never waits on the import's embedding, and an import killed mid-way
resumes from what it had cached.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from botkit.project import Project
from knowledge.base import EMBED_BATCH, QUERY_CACHE_SUFFIX
from knowledge.store import KnowledgeStore
from knowledge.types import ArticleDraft
from tests.conftest import REPO, open_kb

pytestmark = pytest.mark.slow

IMPORTER = textwrap.dedent("""
    import sys, time
    from botkit.project import Project
    from knowledge.base import KnowledgeBase
    kb = KnowledgeBase.open(Project.load(sys.argv[1]), progress=False)
    report = kb.start()
    print("ready", report.embedded, flush=True)
    t0 = time.perf_counter()
    summary = kb.import_paths([sys.argv[2]], author="bulk")
    print("done", summary.kb_version, kb.embedded_total, round(time.perf_counter() - t0, 2), flush=True)
    kb.close()
""")

WORDS = ("order parcel refund delivery account password invoice shipping return warranty battery charger "
         "cable screen voucher coupon store window courier label tracking basket checkout discount size "
         "colour fabric cotton wool leather strap buckle zipper pocket lining heel sole lace box tape "
         "postage customs duty weekend holiday morning evening branch counter locker pickup").split()
BEACON_QUERY = "how fast does the zyxquor beacon recharge shuttle batteries"


def write_bulk(path: Path, n: int, seed: int) -> Path:
    """n generated articles of four sections each (distinct texts), plus one about the Zyxquor beacon."""
    rng = random.Random(seed)
    rows = [{"id": "zyxquor-beacon", "title": "Zyxquor beacon recharging",
             "body": "The Zyxquor beacon recharges shuttle batteries in ninety seconds at every spaceport."}]
    for i in range(n):
        body = "\n\n".join(f"## Part {s}\n" + " ".join(rng.choice(WORDS) for _ in range(60)) + "."
                           for s in range(4))
        rows.append({"id": f"bulk-{seed}-{i}", "title": f"Bulk article {i}", "body": body})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def start_importer(project: Path, source: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", IMPORTER, str(project), str(source)],
                             stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert child.stdout is not None
    line = child.stdout.readline().split()
    assert line and line[0] == "ready", f"the importer did not start: {line}"
    return child


def finish(child: subprocess.Popen[str]) -> tuple[int, int, float]:
    """(kb_version, texts the importer embedded, import seconds) from a child that ran to the end."""
    assert child.stdout is not None
    out = child.stdout.read().split()
    assert child.wait() == 0 and out[:1] == ["done"], f"the importer failed: {out}"
    return int(out[1]), int(out[2]), float(out[3])


def cached_count(project: Path) -> int:
    db = sqlite3.connect(f"file:{Project.load(project).db_path}?mode=ro", uri=True, timeout=30)
    try:
        # chunk texts only: the confidence calibration caches its practice queries as <model>|query
        return int(db.execute("SELECT count(*) FROM embeddings WHERE model NOT LIKE ?",
                              (f"%{QUERY_CACHE_SUFFIX}",)).fetchone()[0])
    finally:
        db.close()


def timed_search(kb, query: str) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    result = kb.search(query)
    return time.perf_counter() - t0, result.kb_version, result.best.article_id if result.hits else ""


def test_search_keeps_answering_from_the_old_index_while_another_process_imports(demo_dir: Path, embedder,
                                                                                tmp_path: Path):
    # the query cache off: every search embeds and searches, as a new question would
    kb = open_kb(demo_dir, embedder, retrieval__query_cache_size=0)
    kb.start()
    try:
        old_version = kb.store.kb_version()
        baseline = statistics.median(timed_search(kb, BEACON_QUERY)[0] for _ in range(5))
        bound = max(2.0, 10 * baseline)
        child = start_importer(demo_dir, write_bulk(tmp_path / "bulk.jsonl", 100, seed=1))
        during: list[tuple[float, int, str]] = []
        while child.poll() is None:
            during.append(timed_search(kb, BEACON_QUERY))
            time.sleep(0.05)
        new_version, importer_embedded, import_s = finish(child)
        deadline = time.monotonic() + 60
        after = timed_search(kb, BEACON_QUERY)
        while after[1] != new_version and time.monotonic() < deadline:
            time.sleep(0.2)
            after = timed_search(kb, BEACON_QUERY)
    finally:
        kb.close()
    latencies = [s for s, _, _ in during]
    print(f"\nimport of {importer_embedded} chunks took {import_s:.1f}s; {len(during)} searches meanwhile: "
          f"baseline {baseline * 1000:.0f} ms, median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms; server embedded {kb.embedded_total}")
    assert import_s > bound, f"the import ({import_s:.1f}s) was too quick to show anything: raise n"
    assert len(during) >= 3
    assert max(latencies) < bound, f"a search waited {max(latencies):.1f}s while the import ran"
    versions = [v for _, v, _ in during]
    assert versions == sorted(versions) and set(versions) <= {old_version, new_version}
    for _, version, best in during:  # the old index until the swap, then the new one
        assert (best == "zyxquor-beacon") == (version == new_version)
    assert after[1] == new_version and after[2] == "zyxquor-beacon"
    assert kb.embedded_total == 0, "the server re-embedded chunks the importer had cached"


def test_import_killed_mid_way_resumes_from_the_cached_batches(demo_dir: Path, embedder, tmp_path: Path):
    source = write_bulk(tmp_path / "bulk.jsonl", 60, seed=2)
    before = cached_count(demo_dir)
    child = start_importer(demo_dir, source)
    cached = before
    while child.poll() is None and cached - before < 2 * EMBED_BATCH:
        time.sleep(0.05)
        cached = cached_count(demo_dir)
    child.send_signal(signal.SIGKILL)
    child.wait()
    cached = cached_count(demo_dir) - before
    rerun = start_importer(demo_dir, source)
    version, rerun_embedded, _ = finish(rerun)
    total = cached_count(demo_dir) - before
    print(f"\n{total} new chunk texts; {cached} cached when killed; the rerun embedded {rerun_embedded}")
    assert 0 < cached < total, f"the kill did not land mid-import ({cached} of {total} cached)"
    assert rerun_embedded == total - cached  # only what no committed batch held
    kb = open_kb(demo_dir, embedder)
    report = kb.start()
    try:
        assert report.embedded == 0 and kb.store.kb_version() == version
        assert np.array_equal(kb.index.ids(), kb.store.live_chunk_ids())
        assert kb.search(BEACON_QUERY).best.article_id == "zyxquor-beacon"
    finally:
        kb.close()


def test_change_needing_embedding_is_caught_up_in_the_background(demo_kb, demo_dir: Path):
    """A writer that did not embed ahead (the bare store): searches answer from the old index
    at once, and the background catch-up swaps the new one in."""
    old_version = demo_kb.store.kb_version()
    bodies = [" ".join(random.Random(i).choice(WORDS) for _ in range(60)) for i in range(3 * EMBED_BATCH)]
    drafts = [ArticleDraft(f"raw-{i}", f"Raw {i}", body) for i, body in enumerate(bodies)]
    drafts.append(ArticleDraft("zyxquor-beacon", "Zyxquor beacon recharging",
                               "The Zyxquor beacon recharges shuttle batteries in ninety seconds at every spaceport."))
    with KnowledgeStore(demo_kb.store.path) as writer:
        new_version = writer.upsert(drafts, "raw").kb_version
    first = demo_kb.search(BEACON_QUERY)
    assert first.kb_version == old_version and first.best.article_id != "zyxquor-beacon"
    deadline = time.monotonic() + 120
    result = first
    while result.kb_version != new_version and time.monotonic() < deadline:
        time.sleep(0.2)
        result = demo_kb.search(BEACON_QUERY)
    assert result.kb_version == new_version and result.best.article_id == "zyxquor-beacon"
    assert demo_kb.embedded_total == len({c.hash for d in drafts for c in demo_kb.store.chunk(d)})
    assert np.array_equal(demo_kb.index.ids(), demo_kb.store.live_chunk_ids())
