"""``botkit serve --workers N``: N worker processes of one bot, each on its own port, behind a
load balancer (nginx; :func:`nginx_site` writes its configuration).

Each worker is a whole ``botkit serve`` (``--worker-index i``) on port ``base + i``. Distinct
ports rather than one port shared with SO_REUSEPORT, because the load balancer in front needs
distinct upstreams: it then sees a dead worker (connection refused) and sends the next request
to another at once, it can keep an open chat socket where it is (``least_conn``) and each
worker's ``/healthz`` and ``/metrics`` can be read on their own. With SO_REUSEPORT the kernel
spreads new connections by a hash, and the connections waiting in a killed worker's accept
queue are reset.

The workers share nothing in memory, so what must be shared lives outside them: PostgreSQL
(``BOTKIT_DATABASE_URL``) for the conversation store and Redis (``BOTKIT_REDIS_URL``) for the
event bus (an agent's reply on one worker reaches the customer's socket on another) and the
per-conversation locks (one conversation's messages in arrival order, whichever worker gets
them). Without both, :func:`check_shared_backends` refuses ``--workers`` above 1: in-process
locks and buses cannot span processes. The stores not moved to PostgreSQL yet (staff accounts,
web chat sessions, the knowledge base) are SQLite files in the state directory, which
processes on one machine share safely (WAL mode, busy timeouts).

The supervisor (:class:`Supervisor`) loads no model. It starts worker 0 alone and waits for
its ``/healthz`` (so one process brings the index and the database schema up to date), then
the others; a worker that exits during start-up stops them all (a configuration error would
only repeat). Afterwards a worker that dies is started again after a back-off (1 s, doubling
up to 30 s, back to 1 s once it has served for 60 s), so a worker that keeps failing costs a
restart every 30 s, not a crash loop. SIGTERM or SIGINT stops every worker (each finishes its
in-flight replies, ``server.shutdown_timeout_s``).

``serve.json`` (``botkit ask`` finds a running server by it, :mod:`botkit.app.running`) is
written by the supervisor, with its own process id, worker 0's address and one token that
every worker accepts (given to them in the environment, never on the command line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botkit.config import StorageConfig
from botkit.errors import BotkitError, ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "BOTKIT_WORKER_TOKEN"  # the serve.json token, handed to each worker
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0  # a worker up this long has its back-off reset
START_TIMEOUT_S = 300.0  # loading the embedding model and checking the index; slow on a busy box
POLL_S = 0.2


def check_shared_backends(storage: StorageConfig, workers: int, environ: dict[str, str] | None = None) -> None:
    """Refuse ``workers`` > 1 unless the conversation store is PostgreSQL and events and locks
    go through Redis.

    Raises:
        ConfigError: naming what to set.
    """
    if workers <= 1:
        return
    env = os.environ if environ is None else environ
    missing = []
    database = env.get(storage.database_url_env, "").strip()
    if storage.backend == "sqlite" or not database:
        missing.append(f"{storage.database_url_env}=postgresql://USER:PASSWORD@HOST:5432/DB"
                       + (" (and storage.backend: auto or postgresql in bot.yaml, not sqlite)"
                          if storage.backend == "sqlite" else ""))
    if not env.get(storage.redis_url_env, "").strip():
        missing.append(f"{storage.redis_url_env}=redis://HOST:6379/0")
    if missing:
        raise ConfigError(
            f"--workers {workers} needs a database and a Redis that every worker shares: set "
            + " and ".join(missing)
            + ". Without them each worker would keep its own conversation locks and event bus, so an agent's "
            "reply taken by one worker would never reach a customer connected to another, and one chat's "
            "messages could be answered out of order; or serve one worker (--workers 1)")


def check_channels(channels: dict[str, dict[str, Any] | None], workers: int) -> None:
    """Refuse ``workers`` > 1 with a channel only one process may run: Telegram in polling mode
    (Telegram answers a second getUpdates client with 409 Conflict).

    Raises:
        ConfigError: naming the channel and what to set instead.
    """
    if workers <= 1:
        return
    for name, section in channels.items():
        if name == "telegram" and (section or {}).get("mode", "webhook") == "polling":
            raise ConfigError(f"channels.{name}.mode: polling cannot run in {workers} workers (Telegram allows one "
                              "getUpdates client per bot); use mode: webhook with server.public_url, so Telegram "
                              "posts each update to the load balancer and any worker takes it")


def worker_ports(base: int, workers: int) -> list[int]:
    """The ports of ``workers`` workers from ``base`` on (base, base + 1, ...).

    Raises:
        BotkitError: ``base`` is 0 (any free port cannot be put in a load balancer's list) or the
            ports would pass 65535.
    """
    if base == 0:
        raise BotkitError("--workers needs a fixed port (the load balancer's upstreams): give --port, not 0")
    if base + workers - 1 > 65535:
        raise BotkitError(f"--workers {workers} from port {base} would pass port 65535; choose a lower --port")
    return [base + i for i in range(workers)]


def local_address(host: str) -> str:
    """Where a process on this machine reaches a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else "[::1]" if host == "::" else (
        f"[{host}]" if ":" in host else host)


def nginx_site(upstreams: Sequence[str], *, listen: str = "80", server_name: str = "_",
               upstream_name: str = "botkit", show_upstream: bool = False) -> str:
    """An nginx configuration (http context: one ``upstream``, one ``map`` and one ``server``)
    for ``upstreams`` (``host:port`` of each worker).

    ``least_conn`` because chat sockets stay open for hours: new ones go to the worker holding
    fewest. A refused connection marks a worker down for 5 s and the request goes to another.
    WebSocket upgrades are passed on (HTTP/1.1, ``Upgrade``/``Connection``); idle sockets may
    stay open an hour (the chat pings every 30 s). ``X-Forwarded-For`` gets the client's
    address appended (``$proxy_add_x_forwarded_for``): botkit trusts its last entry when
    ``server.behind_proxy: true`` (botkit/net.py). ``show_upstream`` adds a response header
    naming the worker that answered (tests and debugging only: it shows internal addresses).
    """
    servers = "\n".join(f"    server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    debug = "        add_header X-Botkit-Upstream $upstream_addr always;\n" if show_upstream else ""
    return f"""\
upstream {upstream_name} {{
    least_conn;
{servers}
    keepalive 32;
}}

# An upgrade request keeps "Connection: upgrade"; any other gets an empty one, so the
# upstream keepalive above can reuse connections.
map $http_upgrade $botkit_connection {{
    default upgrade;
    ''      '';
}}

server {{
    listen {listen};
    server_name {server_name};
    client_max_body_size 64m;  # knowledge-base uploads

    # Scrape each worker's /metrics directly (through here you would get a random one's);
    # /api/cli/ask is for `botkit ask` on the workers' own machine.
    location = /metrics {{ return 404; }}
    location = /api/cli/ask {{ return 404; }}

    location / {{
        proxy_pass http://{upstream_name};
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $botkit_connection;
        proxy_connect_timeout 5s;
        proxy_send_timeout 3600s;
        proxy_read_timeout 3600s;
        proxy_buffering off;  # streamed replies and server-sent frames go out as written
        # A worker that is down or shutting down (503): the request goes to another worker.
        # POSTs are not repeated (nginx never retries a non-idempotent request that was sent).
        proxy_next_upstream error timeout http_502 http_503;
{debug}    }}
}}
"""


@dataclass
class _Worker:
    index: int
    port: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # consecutive short lives: the back-off grows with them
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    """Starts ``len(ports)`` workers of the project at ``root``, restarts dead ones, stops them all.

    ``command(index, port)`` is the worker's command line (default: ``python -m botkit serve``).
    """

    root: Path
    host: str
    ports: list[int]
    token: str
    verbose: bool = False
    shutdown_timeout_s: float = 30.0
    start_timeout_s: float = START_TIMEOUT_S
    command: Callable[[int, int], list[str]] | None = None
    workers: list[_Worker] = field(init=False)
    _stopping: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.workers = [_Worker(i, port) for i, port in enumerate(self.ports)]

    def url(self, worker: _Worker) -> str:
        return f"http://{local_address(self.host)}:{worker.port}"

    def _command(self, index: int, port: int) -> list[str]:
        if self.command is not None:
            return self.command(index, port)
        return [sys.executable, "-m", "botkit", *(["-v"] if self.verbose else []), "--project", str(self.root),
                "serve", "--host", self.host, "--port", str(port), "--worker-index", str(index)]

    def _spawn(self, worker: _Worker) -> None:
        env = {**os.environ, TOKEN_ENV: self.token}
        # Its own process group: a Ctrl+C in the terminal reaches the supervisor only, which
        # then stops each worker once (a second signal would cut its graceful shutdown short).
        worker.proc = subprocess.Popen(self._command(worker.index, worker.port), env=env, process_group=0,
                                       preexec_fn=_die_with_parent)
        worker.started_at = time.monotonic()
        worker.restart_at = None
        log.info("worker %d: started (pid %d, port %d)", worker.index, worker.proc.pid, worker.port)

    def _healthy(self, worker: _Worker) -> bool:
        try:
            with urllib.request.urlopen(self.url(worker) + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _wait_healthy(self, group: list[_Worker]) -> None:
        """Until every worker of ``group`` answers /healthz; raises when one exits first."""
        deadline = time.monotonic() + self.start_timeout_s
        waiting = list(group)
        while waiting:
            if self._stopping:
                return
            for worker in list(waiting):
                assert worker.proc is not None
                code = worker.proc.poll()
                if code is not None:
                    raise BotkitError(f"worker {worker.index} (port {worker.port}) exited during start-up with "
                                      f"status {code}; its error is above. No worker was left running")
                if self._healthy(worker):
                    waiting.remove(worker)
            if time.monotonic() > deadline:
                raise BotkitError(f"worker(s) {', '.join(str(w.index) for w in waiting)} did not answer /healthz "
                                  f"within {self.start_timeout_s:.0f} s; stopped them all")
            time.sleep(POLL_S)

    def start(self) -> None:
        """Worker 0 first (it brings the index and the schema up to date alone), then the rest."""
        try:
            self._spawn(self.workers[0])
            self._wait_healthy(self.workers[:1])
            for worker in self.workers[1:]:
                self._spawn(worker)
            self._wait_healthy(self.workers[1:])
        except BaseException:
            self.stop()
            raise

    def backoff(self, failures: int) -> float:
        return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, failures - 1)))

    def check(self, now: float | None = None) -> None:
        """One round: note dead workers, start those whose back-off has passed."""
        now = time.monotonic() if now is None else now
        for worker in self.workers:
            proc = worker.proc
            if proc is None or self._stopping:
                continue
            code = proc.poll()
            if code is None:
                if worker.failures and now - worker.started_at >= STABLE_S:
                    worker.failures = 0
                continue
            if worker.restart_at is None:
                lived = now - worker.started_at
                worker.failures = worker.failures + 1 if lived < STABLE_S else 1
                delay = self.backoff(worker.failures)
                worker.restart_at = now + delay
                log.error("worker %d (port %d) exited with status %s after %.0f s; starting it again in %.0f s",
                          worker.index, worker.port, code, lived, delay)
                print(f"worker {worker.index} (port {worker.port}) exited with status {code}; "
                      f"restarting it in {delay:.0f} s", file=sys.stderr, flush=True)
            elif now >= worker.restart_at:
                worker.restarts += 1
                self._spawn(worker)

    def run(self) -> int:
        """Start, supervise until SIGTERM/SIGINT, stop. Returns the exit status."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stopping:
                self.check()
                time.sleep(POLL_S)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def stop(self) -> None:
        """SIGTERM to every worker; SIGKILL to any still running after its shutdown timeout."""
        self._stopping = True
        running = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout_s + 10
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux), so no worker is orphaned."""
    with contextlib.suppress(Exception):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
