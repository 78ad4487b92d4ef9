"""Crash consistency: kill a writer mid-write (SIGKILL, no clean-up), restart, search is right.

The child process edits an article and persists the index in a loop. The index holds ~30k
vectors, so writing it takes most of each iteration and the kills land mid-write. After
each kill the persisted file must be whole (the old or the new one, never torn), and a
restarted knowledge base must answer from what the store holds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from knowledge.index import VectorIndex
from knowledge.types import ArticleDraft
from tests.conftest import REPO, open_kb

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent("""
    import itertools, sys
    from botkit.project import Project
    from knowledge.base import KnowledgeBase
    from knowledge.types import ArticleDraft
    kb = KnowledgeBase.open(Project.load(sys.argv[1]), progress=False)
    kb.start()
    start = int(sys.argv[2])
    print("ready", flush=True)
    for i in itertools.count(start):
        kb.upsert([ArticleDraft("counter", "Magic counter", f"The magic counter value is {i}.")])
        print(i, flush=True)
""")


@pytest.fixture
def big_project(demo_dir: Path, embedder) -> Path:
    kb = open_kb(demo_dir, embedder)
    kb.start()  # demo_dir is a copy of the imported demo project
    # 30k chunks with one shared text: embedded once, but a 46 MB index to write
    kb.upsert([ArticleDraft(f"filler-{i}", "Filler", "Filler text about nothing.") for i in range(30_000)])
    kb.close()
    return demo_dir


def test_kill_during_index_writes_then_restart_is_consistent(big_project: Path, embedder):
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    last_seen = -1
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(big_project), str(round_ * 10_000)],
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        first = int(child.stdout.readline())  # at least one edit went through
        time.sleep(rng.uniform(0.5, 3.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        written = [int(x) for x in child.stdout.read().split()]
        last_seen = max([first, *written])

        # The file on disk is whole: the last complete write, never a torn one.
        index_file = big_project / ".botkit" / "index" / "vectors.faiss"
        VectorIndex.load(index_file)

        kb = open_kb(big_project, embedder)
        report = kb.start()
        try:
            assert not list(index_file.parent.glob("*.tmp")), "interrupted write left behind"
            assert np.array_equal(kb.index.ids(), kb.store.live_chunk_ids())
            stored = kb.store.get("counter").body
            best = kb.search("what is the magic counter value").best
            assert best.article_id == "counter"
            assert best.passage == stored  # the answer is what the store holds, not a stale text
            value = int(stored.rstrip(".").split()[-1])
            assert value >= last_seen  # no committed edit was lost
            assert report.status in ("loaded", "repaired")
        finally:
            kb.close()
