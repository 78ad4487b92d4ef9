"""What a running ``botkit serve`` leaves for other commands: the port check before it starts
and the ``serve.json`` file in the state directory by which ``botkit ask`` finds it.

``serve.json`` (0600, like every state file) holds the server's process id, its URL and a random
token; it is written once the port is bound and removed when the server stops. ``botkit ask``
sends its question to that server (``POST /api/cli/ask`` with the token) instead of loading the
model itself, when the process is alive and answers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from botkit.errors import BotkitError

SERVE_FILE = "serve.json"


class PortInUse(BotkitError):
    """The port ``botkit serve`` was asked to listen on is taken."""


def port_in_use_message(host: str, port: int) -> str:
    other = port + 1 if port < 65535 else 8081
    return (f"port {port} on {host} is already in use (another `botkit serve`, or another program); "
            f"choose another port with `botkit serve --port {other}` (or server.port in bot.yaml; "
            f"for the demo: PORT={other} bash scripts/demo.sh), or stop what is using it")


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUse` when ``host:port`` cannot be bound (checked before the model loads).

    Binds with SO_REUSEADDR, as the server will, so a port left in TIME_WAIT by a server that
    just stopped reads as free; port 0 (any free port) is always free.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BotkitError(f"cannot serve on {host}:{port}: {exc.strerror} (check server.host or --host)") from None
    bound = 0
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
                bound += 1
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(port_in_use_message(host, port)) from None
                if exc.errno == errno.EADDRNOTAVAIL:  # e.g. localhost's ::1 without IPv6: asyncio skips it too
                    continue
                if exc.errno == errno.EACCES:
                    raise BotkitError(f"cannot serve on port {port}: permission denied (ports under 1024 need "
                                      "privileges; choose another with --port)") from None
                raise
    if not bound:
        raise BotkitError(f"cannot serve on {host}:{port}: this machine has no such address "
                          "(check server.host or --host)")


@dataclass(frozen=True)
class RunningServer:
    """A ``botkit serve`` found through its ``serve.json``."""

    pid: int
    url: str
    token: str


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's: not ours to talk to
        return False
    return True


def find_server(state_dir: Path) -> RunningServer | None:
    """The server serving this project, if its ``serve.json`` names a live process; else None.

    A file left by a server that was killed (its process is gone) is ignored.
    """
    try:
        data = json.loads((state_dir / SERVE_FILE).read_text(encoding="utf-8"))
        server = RunningServer(int(data["pid"]), str(data["url"]), str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return server if _alive(server.pid) else None


@contextlib.contextmanager
def announced(state_dir: Path, host: str, port: int) -> Iterator[str]:
    """Write ``serve.json`` for the server at ``host:port`` for as long as the block runs;
    yields the token that ``POST /api/cli/ask`` must be given."""
    from botkit.files import write_private_text

    token = secrets.token_urlsafe(24)
    if port == 0:  # any free port: the address is not known here, so nothing to announce
        yield token
        return
    local = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else "::1" if host == "::" else host
    shown = f"[{local}]" if ":" in local else local
    path = state_dir / SERVE_FILE
    write_private_text(path, json.dumps({"pid": os.getpid(), "url": f"http://{shown}:{port}", "token": token}))
    try:
        yield token
    finally:
        with contextlib.suppress(OSError):
            current = json.loads(path.read_text(encoding="utf-8"))
            if current.get("pid") == os.getpid():  # not another server's that started since
                path.unlink()
