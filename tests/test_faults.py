"""Fault injection on real processes and files: SIGKILL mid-promotion, a locked database, a full disk.

Each case prints its counts (``kills: N, ...``) so a run's figures can be quoted; run with ``-s``.
Cases covered elsewhere: a writer killed while it persists the FAISS index (test_crash.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from botkit.errors import BotkitError, DatabaseLocked, DiskFull
from knowledge.index import VectorIndex
from knowledge.types import ArticleDraft
from tests.conftest import REPO, copy_demo, open_kb
from tests.test_auth import client, staff  # noqa: F401  (the real server, signed-in browsers)
from training.registry import ModelRegistry, hash_files

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

# --- 1. SIGKILL during registry writes ----------------------------------------------------------

PROMOTER = textwrap.dedent("""
    import itertools, os, sys, tempfile
    from pathlib import Path
    from training.registry import ModelRegistry, hash_files
    reg = ModelRegistry(Path(sys.argv[1]))
    print("ready", flush=True)
    for i in itertools.count(int(sys.argv[2])):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "adapter"
            src.mkdir()
            (src / "adapter_config.json").write_text('{"r": 8, "i": %d}' % i)
            (src / "adapter_model.safetensors").write_bytes(os.urandom(256 * 1024))
            mv = reg.register("lm", src, {"data_hash": hash_files(*sorted(src.iterdir()))})
        reg.promote("lm", mv.version, "loop", "child")
        if i % 3 == 2:
            reg.rollback("lm", "loop", "child")
        print(i, flush=True)
""")


def _artefact_complete(path: Path, data_hash: str) -> bool:
    # dot files are temp files of an interrupted metadata write: never loaded, removed by the next writer
    files = sorted(f for f in path.iterdir() if f.name != "metadata.json" and not f.name.startswith("."))
    return [f.name for f in files] == ["adapter_config.json", "adapter_model.safetensors"] and \
        hash_files(*files) == data_hash


def _check_read_view(reg: ModelRegistry, project: Path) -> int | None:
    """What a reader sees right after a kill: whole versions, one promoted, the CLI lists them."""
    versions = reg.list("lm")
    current = reg.current("lm")
    for mv in versions:
        assert _artefact_complete(mv.path, mv.metadata["data_hash"]), f"{mv.label} is incomplete"
    promoted = [mv.version for mv in versions if mv.status == "promoted"]
    assert promoted == ([current.version] if current else []), (promoted, current)
    out = subprocess.run([sys.executable, "-m", "botkit", "models", "list", "--kind", "lm", "--json",
                          "--project", str(project)], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [v["status"] for v in listed].count("promoted") == len(promoted)
    return current.version if current else None


def _raw_statuses(kdir: Path) -> dict[int, str]:
    return {int(d.name[1:]): json.loads((d / "metadata.json").read_text())["status"]
            for d in kdir.iterdir() if d.name.startswith("v0")}


def _check_on_disk(reg: ModelRegistry) -> None:
    """After the next writer ran: metadata, event log and pointer agree, nothing left behind."""
    kdir = reg.root / "lm"
    current = reg.current("lm")
    assert current is not None
    raw = _raw_statuses(kdir)
    assert [v for v, s in raw.items() if s == "promoted"] == [current.version], raw
    history = reg.history("lm")
    assert len(history) == len((kdir / "events.jsonl").read_text().splitlines())  # every line is an event
    assert {e.version for e in history if e.event == "register"} == set(raw)
    last = [e for e in history if e.event in ("promote", "rollback")][-1]
    assert last.version == current.version
    assert not list(kdir.glob(".*.tmp")) and not list(kdir.glob("v*/.*.tmp")), "a killed write left files"


def _new_version(reg: ModelRegistry, tmp: Path, name: str) -> int:
    src = tmp / name
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors").write_bytes(os.urandom(1024))
    return reg.register("lm", src, {"data_hash": hash_files(*sorted(src.iterdir()))}).version


@pytest.mark.slow
def test_sigkill_during_registry_promotions_leaves_a_consistent_registry(tmp_path: Path) -> None:
    project = copy_demo(tmp_path / "demo")
    from botkit.project import Project

    reg = ModelRegistry.for_project(Project.load(project))
    rng = random.Random(9)
    kills = consistent = torn = parent_promotions = 0
    for round_ in range(10):
        child = subprocess.Popen([sys.executable, "-c", PROMOTER, str(reg.root), str(round_ * 1000)],
                                 stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.stdout.readline()  # one whole iteration went through
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        raw = _raw_statuses(reg.root / "lm")
        pointer = reg.current("lm")
        torn += [v for v, s in raw.items() if s == "promoted"] != ([pointer.version] if pointer else [])

        serving = _check_read_view(reg, project)
        assert serving is not None
        # A later promotion works, and it puts the on-disk state right.
        reg.promote("lm", _new_version(reg, tmp_path, f"parent-{round_}"), "after the kill", "test")
        parent_promotions += 1
        _check_on_disk(reg)
        consistent += 1
    print(f"\nregistry: kills: {kills}, consistent after each: {consistent}, "
          f"killed between pointer and statuses: {torn}, promotions after a kill: {parent_promotions}, "
          f"versions: {len(reg.list('lm'))}")
    assert consistent == kills


# --- 2. "database is locked": another process holds the write lock past the busy timeout ---------

LOCKER = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    db.execute("ROLLBACK")
""")
BUSY_MS = 300  # the stores wait 30 s for a lock; the tests shorten it on the connection under test


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another process holds ``path``'s write lock (BEGIN EXCLUSIVE) until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0


def _says_locked(exc: BaseException, path: Path) -> None:
    message = str(exc)
    assert isinstance(exc, DatabaseLocked) and isinstance(exc, BotkitError), type(exc)
    assert str(path) in message and "locked by another process" in message and "try again" in message, message
    assert "nothing was written" in message, message


def test_locked_kb_import_and_edit_fail_clearly_and_succeed_after(demo_kb: Any, tmp_path: Path) -> None:
    kb = demo_kb
    kb.store._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    before, articles = kb.store.kb_version(), kb.store.count()
    source = tmp_path / "engraving.md"
    source.write_text("# Engraving\n\nWe laser-engrave up to 20 characters on any wooden item for 6 EUR.\n")
    edit = ArticleDraft("engraving-note", "Engraving note", "Engraving takes two extra days.")
    outcomes = []
    with write_locked(kb.store.path):
        for attempt in (lambda: kb.import_paths([source]), lambda: kb.upsert([edit]),
                        lambda: kb.delete(kb.store.list()[0].id)):
            with pytest.raises(BotkitError) as caught:
                attempt()
            _says_locked(caught.value, kb.store.path)
            outcomes.append(type(caught.value).__name__)
        assert (kb.store.kb_version(), kb.store.count()) == (before, articles)  # nothing half-written
        assert kb.search("how long does a refund take").best is not None  # readers are not blocked
    assert kb.import_paths([source]).created and kb.upsert([edit]).created
    assert kb.search("do you engrave wooden items").best.title == "Engraving"
    print(f"\nkb locked: refused writes: {len(outcomes)} ({', '.join(outcomes)}), half-written: 0, "
          f"succeeded after release: 2")


async def test_locked_conversation_store_refuses_the_whole_exchange(tmp_path: Path) -> None:
    from botkit.store import SQLiteConversationStore
    from botkit.types import Turn

    store = SQLiteConversationStore(tmp_path / "conversations.sqlite3")
    await store.start()
    try:
        await store._sql.run(lambda db: db.execute(f"PRAGMA busy_timeout={BUSY_MS}"))
        t0 = datetime(2026, 12, 1, tzinfo=UTC)
        await store.get_or_create("c", "web", "u1", {}, t0)
        exchange = [Turn("c", 1, "customer", "where is my order?", t0), Turn("c", 2, "bot", "On its way.", t0)]
        with write_locked(store.path):
            with pytest.raises(BotkitError) as caught:
                await store.record(exchange, status="bot")
            _says_locked(caught.value, store.path)
            assert await store.turns("c") == []
        await store.record(exchange, status="bot")
        assert [t.seq for t in await store.turns("c")] == [1, 2]
    finally:
        await store.close()
    print("\nconversation store locked: refused: 1, half-written turns: 0, recorded after release: 2")


def test_locked_accounts_database_fails_clearly(tmp_path: Path) -> None:
    from botkit.app.accounts import Auth

    auth = Auth(path=tmp_path / "accounts.sqlite3")
    try:
        auth._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        with write_locked(auth.path):
            with pytest.raises(BotkitError) as caught:
                auth.add_user("dana", "agent")
            _says_locked(caught.value, auth.path)
            assert auth.get_user("dana") is None
        auth.add_user("dana", "agent")
        assert auth.get_user("dana") is not None
    finally:
        auth.close()
    print("\naccounts locked: add_user refused: 1 (DatabaseLocked), account half-created: 0, created after release: 1")


@pytest.mark.slow
async def test_kb_editor_save_while_locked_is_a_503_and_the_server_keeps_running(client: Any, staff: Any) -> None:
    from botkit.app.kb_editor import EDITOR

    olivia = await staff("olivia", "operator")
    kb = client.app[EDITOR].kb
    kb.store._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    status, opened = await olivia.call("GET", "/api/kb/articles/refund-timing")
    assert status == 200
    article = opened["article"]
    edit = {**{k: article[k] for k in ("title", "tags", "questions")}, "body": article["body"] + "\n\nEdited.",
            "rev": article["rev"]}
    with write_locked(kb.store.path):
        status, refused = await olivia.call("PUT", "/api/kb/articles/refund-timing", edit)
        assert status == 503, refused
        _says_locked(DatabaseLocked(refused["error"]), kb.store.path)
        assert refused.get("retry") is True
        status, still = await olivia.call("GET", "/api/kb/articles/refund-timing")  # the server still answers
        assert status == 200 and still["article"]["rev"] == article["rev"]
    status, saved = await olivia.call("PUT", "/api/kb/articles/refund-timing", edit)
    assert status == 200 and saved["article"]["rev"] == article["rev"] + 1
    print("\nkb editor locked: PUT -> 503 with retry, server answered during the lock, PUT after release -> 200")


# --- 3. A full disk during a write ---------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MB filesystem (tmpfs): writes past it fail with ENOSPC. Needs root to mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root ({mounted.stderr.strip()}); "
                    "test_index_save_past_the_file_size_limit covers the unprivileged case")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Take all of ``disk``'s free space but ``leave`` bytes; delete the returned file to free it."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with filler.open("ab") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def _says_full(exc: BaseException, path: Path, why: str = "the disk is full") -> str:
    message = str(exc)
    assert isinstance(exc, DiskFull) and isinstance(exc, BotkitError), f"{type(exc).__name__}: {exc}"
    assert str(path) in message and why in message and "free space" in message, message
    return message


def _random_index(n: int, seed: int) -> VectorIndex:
    vectors = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return VectorIndex.build(vectors, np.arange(n, dtype=np.int64), dim=384)


def test_index_save_on_a_full_disk_keeps_the_previous_file(small_disk: Path) -> None:
    path = small_disk / "index" / "vectors.faiss"
    _random_index(100, 0).save(path)
    before = path.read_bytes()
    filler = fill(small_disk, leave=256 * 1024)
    with pytest.raises(BotkitError) as caught:
        _random_index(2000, 1).save(path)  # 3 MB
    message = _says_full(caught.value, path)
    assert path.read_bytes() == before and VectorIndex.load(path).ntotal == 100  # the old index, whole
    assert not list(path.parent.glob(".*.tmp")), "the half-written temp file was left on the full disk"
    filler.unlink()
    _random_index(2000, 1).save(path)
    assert VectorIndex.load(path).ntotal == 2000
    print(f"\nindex save, disk full: refused with {type(caught.value).__name__} ({message[:60]}...), "
          "previous file intact, temp files left: 0, saved after freeing space")


SAVER = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    import numpy as np
    from knowledge.index import VectorIndex
    path = Path(sys.argv[1])
    VectorIndex.build(np.ones((100, 384), np.float32), np.arange(100), dim=384).save(path)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 4096, resource.RLIM_INFINITY))
    try:
        VectorIndex.build(np.ones((2000, 384), np.float32), np.arange(2000), dim=384).save(path)
    except Exception as exc:
        print(type(exc).__name__, exc, sep="\\n")
""")


def test_index_save_past_the_file_size_limit_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "index" / "vectors.faiss"
    out = subprocess.run([sys.executable, "-c", SAVER, str(path)], capture_output=True, text=True, env=ENV,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    kind, _, message = out.stdout.partition("\n")
    _says_full(DiskFull(message) if kind == "DiskFull" else RuntimeError(f"{kind}: {message}"), path,
               "file too large")
    assert VectorIndex.load(path).ntotal == 100 and not list(path.parent.glob(".*.tmp"))
    print(f"\nindex save past RLIMIT_FSIZE: {kind}, previous file intact, temp files left: 0")


@pytest.mark.slow
def test_kb_import_on_a_full_disk_keeps_the_previous_version(small_disk: Path, demo_dir: Path, embedder: Any,
                                                             tmp_path: Path) -> None:
    root = small_disk / "demo"
    shutil.copytree(demo_dir, root)
    sources = tmp_path / "import"
    sources.mkdir()
    for i in range(10):
        paragraphs = "\n\n".join(f"Gift wrapping option {i}.{j}: ribbon colour {i * 31 + j} of the zebra "
                                 f"collection, boxed by hand in workshop {j}. " * 4 for j in range(12))
        (sources / f"wrapping-{i}.md").write_text(f"# Gift wrapping {i}\n\n{paragraphs}\n", encoding="utf-8")
    question = "how long does a refund take"
    kb = open_kb(root, embedder)
    kb.start()
    try:
        before = (kb.store.kb_version(), kb.store.count(), kb.index_path.read_bytes())
        answer = kb.search(question).best.article_id
        filler = fill(small_disk, leave=64 * 1024)
        with pytest.raises(BotkitError) as caught:
            kb.import_paths([sources])
        _says_full(caught.value, kb.store.path)
        assert (kb.store.kb_version(), kb.store.count(), kb.index_path.read_bytes()) == before
        assert kb.search(question).best.article_id == answer  # still answers from the previous version
        filler.unlink()
        retried = kb.import_paths([sources])
        assert len(retried.created) == 10 and retried.kb_version == before[0] + 1
        assert kb.search("zebra collection ribbon colour").best.article_id.startswith("wrapping-")
    finally:
        kb.close()
    restarted = open_kb(root, embedder)
    try:
        restarted.start()
        assert np.array_equal(restarted.index.ids(), restarted.store.live_chunk_ids())
    finally:
        restarted.close()
    print(f"\nkb import, disk full: refused with {type(caught.value).__name__}, kb version and index unchanged, "
          f"search still answered, retry after freeing space: {len(retried.created)} articles")


async def test_conversation_store_on_a_full_disk_refuses_the_whole_exchange(small_disk: Path) -> None:
    from botkit.store import SQLiteConversationStore
    from botkit.types import Turn

    store = SQLiteConversationStore(small_disk / "conversations.sqlite3")
    await store.start()
    try:
        t0 = datetime(2026, 12, 1, tzinfo=UTC)
        await store.get_or_create("c", "web", "u1", {}, t0)
        await store.record([Turn("c", 1, "customer", "hello", t0), Turn("c", 2, "bot", "Hi!", t0)])
        filler = fill(small_disk, leave=32 * 1024)
        long = "my order " * 50_000  # 450 kB: more than is left
        exchange = [Turn("c", 3, "customer", long, t0), Turn("c", 4, "bot", "Let me look.", t0)]
        with pytest.raises(BotkitError) as caught:
            await store.record(exchange, status="bot")
        _says_full(caught.value, store.path)
        assert [t.seq for t in await store.turns("c")] == [1, 2]
        filler.unlink()
        await store.record(exchange, status="bot")
        assert [t.seq for t in await store.turns("c")] == [1, 2, 3, 4]
    finally:
        await store.close()
    print(f"\nconversation store, disk full: refused with {type(caught.value).__name__}, "
          "half-written turns: 0, recorded after freeing space: 2")


def test_an_edit_saved_when_the_index_file_cannot_be_written_says_so(small_disk: Path, demo_dir: Path,
                                                                      embedder: Any) -> None:
    """The store commits, then the index file hits a full disk (the index lives on the small disk):
    the error must not claim nothing was written, the edit is searched at once, and a restart
    repairs the file from the store."""
    kb = open_kb(demo_dir, embedder)
    kb.start()
    index_dir = kb.index_path.parent
    moved = small_disk / "index"
    shutil.copytree(index_dir, moved)
    shutil.rmtree(index_dir)
    index_dir.symlink_to(moved, target_is_directory=True)
    draft = ArticleDraft("zebra-ribbons", "Zebra ribbons",
                         "Every parcel can be tied with a zebra-striped ribbon for free; tick the box at checkout.")
    try:
        version = kb.store.kb_version()
        filler = fill(small_disk, leave=0)
        with pytest.raises(DiskFull) as caught:
            kb.upsert([draft])
        message = str(caught.value)
        assert f"the change was saved (KB version {version + 1})" in message and "no need to apply" in message
        assert str(kb.index_path) in message and "free space" in message, message
        assert kb.store.kb_version() == version + 1
        assert kb.search("zebra striped ribbon").best.article_id == "zebra-ribbons"  # searched in this process
        filler.unlink()
    finally:
        kb.close()
    restarted = open_kb(demo_dir, embedder)
    try:
        restarted.start()
        assert np.array_equal(restarted.index.ids(), restarted.store.live_chunk_ids())
        assert restarted.search("zebra striped ribbon").best.article_id == "zebra-ribbons"
    finally:
        restarted.close()
