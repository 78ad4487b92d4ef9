"""The state directory is private: ``botkit serve`` (a real process, started with the usual
umask 022) leaves the directory 0700 and every file in it 0600 after real traffic (sign-ins,
a web chat hand-off, a KB edit); a state directory left readable is fixed at start, with a
warning that says what changed; demo passwords go to a 0600 file, not to a server's log."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botkit.app.accounts import Auth
from botkit.errors import ProjectError
from botkit.project import Project
from tests.conftest import wait_healthy

pytestmark = pytest.mark.slow


def modes(root: Path) -> dict[str, str]:
    """Every path under root (root included) -> its permission bits, as octal text."""
    found = {".": f"{stat.S_IMODE(root.stat().st_mode):04o}"}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[str(path.relative_to(root))] = f"{stat.S_IMODE(path.stat().st_mode):04o}"
    return found


def not_private(root: Path) -> dict[str, str]:
    return {name: mode for name, mode in modes(root).items() if int(mode, 8) & 0o077}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def signin(http: aiohttp.ClientSession, base: str, name: str, password: str) -> str:
    """Sign in; returns the session's CSRF token."""
    async with http.get(f"{base}/signin") as r:
        token = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)
    async with http.post(f"{base}/signin", data={"csrf": token, "name": name, "password": password},
                         allow_redirects=False) as r:
        assert r.status == 303, await r.text()
    async with http.get(f"{base}/api/auth/me") as r:
        return str((await r.json())["csrf"])


async def traffic(base: str, passwords: dict[str, str]) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as alice, aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True)) as olivia, aiohttp.ClientSession() as customer:
        await signin(alice, base, "alice", passwords["alice"])
        async with alice.get(f"{base}/api/console/queue") as r:
            assert r.status == 200
        async with customer.ws_connect(f"{base}/channels/webchat/ws", headers={"Origin": base}) as ws:
            await ws.send_json({"type": "hello", "session": None})
            assert (await ws.receive_json(timeout=60))["type"] == "welcome"
            await ws.send_json({"type": "message", "id": "m1", "text": "I want to talk to a human"})
            async with asyncio.timeout(60):
                while (await ws.receive_json())["type"] != "reply":
                    pass
        csrf = await signin(olivia, base, "olivia", passwords["olivia"])
        async with olivia.post(f"{base}/api/kb/articles", headers={"X-CSRF-Token": csrf},
                               json={"title": "Gift wrapping", "body": "We wrap any order for free."}) as r:
            assert r.status == 201, await r.text()
        async with alice.get(f"{base}/api/console/queue") as r:
            assert len((await r.json())["waiting"]) == 1


async def test_a_served_state_dir_is_private_after_traffic(demo_dir: Path) -> None:
    state = Project.load(demo_dir).state_dir
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(  # stdout is a pipe, as under a service manager that logs it
        [sys.executable, "-m", "botkit", "--project", str(demo_dir), "serve", "--port", str(port), "--demo-accounts"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, umask=0o022)
    try:
        await wait_healthy(base, server)
        passwords = dict(line.split() for line in (state / "demo-accounts.txt").read_text().splitlines())
        assert set(passwords) == {"alice", "olivia"}
        await traffic(base, passwords)
        running = modes(state)
        assert {"botkit.sqlite3", "accounts.sqlite3", "accounts.sqlite3-wal", "conversations.sqlite3",
                "conversations.sqlite3-wal", "demo-accounts.txt"} <= set(running), sorted(running)
        assert not_private(state) == {}, running
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=120)
    assert not_private(state) == {}, modes(state)
    # The passwords never reached the log (stdout is not a terminal); the file that holds them is named.
    assert f"demo passwords     : {state / 'demo-accounts.txt'} (readable by you only)" in output
    for password in passwords.values():
        assert password not in output


def test_a_readable_state_dir_is_fixed_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "bot"
    Project.load(_init(root))
    state = root / ".botkit"
    index = state / "index"
    index.mkdir()
    for path, mode in ((state / "conversations.sqlite3", 0o644), (state / "conversations.sqlite3-wal", 0o644),
                       (index / "vectors.faiss", 0o664), (state / "run.sh", 0o755)):
        path.write_bytes(b"")
        path.chmod(mode)
    index.chmod(0o755)
    state.chmod(0o755)
    assert len(not_private(state)) == 6
    caplog.set_level(logging.WARNING)
    Project.load(root)
    assert not_private(state) == {}
    assert modes(state) == {".": "0700", "index": "0700", "index/vectors.faiss": "0600", "run.sh": "0700",
                            "conversations.sqlite3": "0600", "conversations.sqlite3-wal": "0600"}
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "botkit.files"]
    assert "readable by other users" in warning and f"{state / 'conversations.sqlite3-wal'}: 0644 -> 0600" in warning
    assert f"{state}: 0755 -> 0700" in warning and f"{index / 'vectors.faiss'}: 0664 -> 0600" in warning
    caplog.clear()
    Project.load(root)  # nothing left to fix: silent
    assert not [r for r in caplog.records if r.name == "botkit.files"]


def test_a_mode_that_cannot_be_fixed_stops_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "bot"
    Project.load(_init(root))
    secret = root / ".botkit" / "accounts.sqlite3"
    secret.write_bytes(b"")
    secret.chmod(0o644)

    def refuse(self: Path, mode: int, **_: Any) -> None:  # a file owned by another user: chmod is refused
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", refuse)
    with pytest.raises(ProjectError, match=rf"{re.escape(str(secret))} is readable by other users \(mode 0644\).*"
                                           rf"run `chmod 600 {re.escape(str(secret))}`"):
        Project.load(root)


def test_accounts_database_and_its_wal_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual shell's umask: files would be born 0644
    try:
        auth = Auth(path=tmp_path / "state" / "accounts.sqlite3")
        try:
            auth.add_user("alice", "agent")  # a write: the -wal file now holds the hash
            files = modes(tmp_path / "state")
        finally:
            auth.close()
    finally:
        os.umask(old)
    assert {"accounts.sqlite3", "accounts.sqlite3-wal", "accounts.sqlite3-shm"} <= set(files)
    assert {name: mode for name, mode in files.items() if name != "."} == {
        name: "0600" for name in files if name != "."}


def _init(root: Path) -> Path:
    from botkit.project import init_project

    init_project(root, "perm test")
    return root
