"""Shared fixtures. Tests are offline: an autouse guard fails any connection that leaves
the machine, and models load only from local paths."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# scrypt at 2**14 instead of OWASP's 2**17 (8x faster, 16 MiB): the suite hashes many passwords.
# Tests of the default cost pass scrypt_n explicitly.
os.environ.setdefault("BOTKIT_SCRYPT_N", str(2**14))

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo"
SHARED_DATA = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1")
                                          or host.startswith("/")):
            raise RuntimeError(f"test tried to reach {address!r}: tests must stay offline")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def embedder():
    """The real default embedder (all-MiniLM-L6-v2 from site-packages), loaded once."""
    from knowledge.embedding import make_embedder

    e = make_embedder()
    e.start()
    return e


def copy_demo(dest: Path) -> Path:
    shutil.copytree(DEMO, dest, ignore=shutil.ignore_patterns(".botkit"))
    return dest


def open_kb(project_dir: Path, embedder, **config_overrides):
    """A KnowledgeBase on a project, sharing the session's embedder (no reload per test)."""
    from botkit.project import Project
    from knowledge.base import KnowledgeBase
    from knowledge.store import KnowledgeStore

    project = Project.load(project_dir)
    cfg = project.config.knowledge
    for dotted, value in config_overrides.items():
        section, key = dotted.split("__")
        sub = getattr(cfg, section).model_copy(update={key: value})
        cfg = cfg.model_copy(update={section: sub})
    return KnowledgeBase(KnowledgeStore(project.db_path), embedder, project.index_dir, cfg, progress=False)


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:
    """The demo project with its KB imported and indexed once per session (then copied per test)."""
    root = copy_demo(tmp_path_factory.mktemp("template") / "demo")
    kb = open_kb(root, embedder)
    kb.start()
    kb.import_paths([root / "kb"], author="test")
    kb.close()
    return root


@pytest.fixture
def demo_dir(tmp_path: Path, demo_template: Path) -> Path:
    """A private copy of the imported demo project (database, index and embedding cache included)."""
    dest = tmp_path / "demo"
    shutil.copytree(demo_template, dest)
    return dest


@pytest.fixture
def demo_kb(demo_dir: Path, embedder):
    kb = open_kb(demo_dir, embedder)
    kb.start()
    yield kb
    kb.close()


async def wait_healthy(base: str, server: subprocess.Popen, timeout: float = 150.0) -> None:
    """Wait until a ``botkit serve`` subprocess answers ``/healthz`` with 200 (fail if it exits)."""
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                out = server.stdout.read() if server.stdout else ""
                raise AssertionError(f"botkit serve exited during start-up: {out}")
            try:
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"botkit serve did not come up within {timeout:.0f} s")
