"""Sign-in failure counts in Redis (botkit/backends/redis_counters.py) against a real Redis: two
Auth instances (two workers) throttle one attacker together, with the same delays as the
in-process counts; check-and-count is atomic; keys live under the prefix and expire; and with
Redis down, sign-in still works and is still throttled (per worker), loudly logged, until Redis
is back. The Redis-down tests run a private redis-server of their own, stopped and started again.

Redis: $BOTKIT_TEST_REDIS_URL (default redis://127.0.0.1:6379/15), a key prefix per test; without
it these skip, and fail under CI=true.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from botkit.app.accounts import Auth
from botkit.errors import ConfigError
from botkit.project import Project
from botkit.signin_throttle import LocalFailureCounts, Throttle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_redis_fixtures import IN_CI, REDIS_URL, throwaway_prefix, unavailable  # noqa: E402

try:
    import redis
except ImportError:  # pragma: no cover - the redis extra is part of the test install
    if IN_CI:
        raise
    pytest.skip("the redis extra is not installed: pip install -e '.[redis]'", allow_module_level=True)

from botkit.backends.redis_counters import RedisFailureCounts  # noqa: E402

URL = REDIS_URL
T0 = 1_790_000_000.0
IP = "203.0.113.7"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url() -> str:
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {URL} is not reachable ({exc}); start it: service redis-server start")
    return URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    with throwaway_prefix(redis_url) as name:
        yield name


@pytest.fixture
def clock() -> Clock:
    return Clock()


def worker(tmp_path: Path, url: str, prefix: str, clock: Clock, throttle: Throttle | None = None,
           **kwargs: float) -> Auth:
    """One worker's Auth: accounts in a SQLite file of its own, failure counts in Redis."""
    path = tmp_path / f"accounts-{uuid.uuid4().hex[:6]}.sqlite3"
    return Auth(path=path, clock=clock, failures=RedisFailureCounts(url, prefix=prefix, throttle=throttle, **kwargs))


@pytest.fixture
def two(tmp_path: Path, redis_url: str, prefix: str, clock: Clock) -> Iterator[tuple[Auth, Auth]]:
    a, b = worker(tmp_path, redis_url, prefix, clock), worker(tmp_path, redis_url, prefix, clock)
    yield a, b
    a.close()
    b.close()


def _keys(url: str, prefix: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(k.decode() for k in client.scan_iter(match=f"{prefix}*"))
    finally:
        client.close()


# -- shared counts ---------------------------------------------------------------------------------
def test_two_workers_throttle_one_attacker_together(two: tuple[Auth, Auth], tmp_path: Path) -> None:
    a, b = two
    free = a.throttle.pair_free
    waits = [(a if i % 2 else b).begin_attempt(IP, "alice") for i in range(2 * free)]  # guesses spread over both
    assert waits[:free] == [0.0] * free
    assert waits[free:] == [1.0] * free  # the 4th guess waits, whichever worker it reaches
    assert a.retry_after(IP, "alice") == b.retry_after(IP, "alice") == 1.0
    assert a.begin_attempt(IP, "bob") == 0.0 and b.begin_attempt("198.51.100.1", "alice") == 0.0  # others unaffected
    # Without Redis each worker grants its own budget: twice the guesses.
    solo = [Auth(path=tmp_path / f"solo{i}.sqlite3", clock=a.clock) for i in range(2)]
    assert sum((solo[i % 2]).begin_attempt(IP, "alice") == 0.0 for i in range(2 * free)) == 2 * free


def test_the_delays_are_the_in_process_ones(tmp_path: Path, redis_url: str, prefix: str, clock: Clock) -> None:
    throttle = Throttle(pair_free=2, pair_cap_s=8.0, address_free=6, address_cap_s=20.0)
    a = worker(tmp_path, redis_url, prefix, clock, throttle)
    b = worker(tmp_path, redis_url, prefix, clock, throttle)
    local = LocalFailureCounts(throttle)
    shared_waits, local_waits = [], []
    names = ["alice", "alice", "alice", "bob", "alice", "carol", "dave", "alice", "erin", "frank", "alice", "gina"]
    for i, name in enumerate(names):
        start = clock.now
        for counts, waits in (((a if i % 2 else b).failures, shared_waits), (local, local_waits)):
            clock.now = start
            while (wait := counts.begin(IP, name, clock.now)) > 0:
                waits.append(wait)
                clock.now += wait  # the attacker waits exactly as told, then tries again
            waits.append(0.0)
    assert shared_waits == local_waits, (shared_waits, local_waits)
    assert 8.0 in shared_waits and 20.0 in shared_waits  # both caps were reached: the test covers them
    a.close()
    b.close()


def test_a_success_on_one_worker_clears_that_pair_on_the_other(two: tuple[Auth, Auth], redis_url: str,
                                                               prefix: str) -> None:
    a, b = two
    assert a.begin_attempt(IP, "alice") == 0.0 and a.begin_attempt(IP, "alice") == 0.0  # two wrong passwords
    assert b.begin_attempt(IP, "Alice") == 0.0  # the right one, on the other worker
    b.succeeded(IP, "Alice")
    assert [a.begin_attempt(IP, "alice") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]  # a fresh budget
    client = redis.Redis.from_url(redis_url)
    try:
        address = f"{prefix}signin:address:{IP}"
        assert client.zcard(address) == 5  # 3 tried, less the success, then 3 more (the 4th was refused)
    finally:
        client.close()


def test_parallel_guesses_on_two_workers_get_exactly_the_free_ones(two: tuple[Auth, Auth]) -> None:
    a, b = two
    barrier = threading.Barrier(16)
    results: list[float] = []
    lock = threading.Lock()

    def guess(auth: Auth) -> None:
        barrier.wait()
        wait = auth.begin_attempt(IP, "alice")
        with lock:
            results.append(wait)

    threads = [threading.Thread(target=guess, args=(a if i % 2 else b,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0.0] * a.throttle.pair_free + [1.0] * (16 - a.throttle.pair_free)


def test_keys_live_under_the_prefix_escaped_and_expire(two: tuple[Auth, Auth], redis_url: str, prefix: str,
                                                       clock: Clock) -> None:
    a, _b = two
    assert a.begin_attempt("::1", "ops:admin") == 0.0  # an IPv6 address, a name with ':' (refused later anyway)
    pair, address = f"{prefix}signin:pair:%3A%3A1:ops%3Aadmin", f"{prefix}signin:address:%3A%3A1"
    assert _keys(redis_url, prefix) == sorted([pair, address])
    client = redis.Redis.from_url(redis_url)
    try:
        forget_ms = a.throttle.forget_s * 1000
        for key in (pair, address):
            assert forget_ms - 5000 < client.pttl(key) <= forget_ms + 1000  # gone an hour after the last failure
        for _ in range(3):
            a.begin_attempt("::1", "ops:admin")
        assert a.retry_after("::1", "ops:admin") == 1.0
        clock.now += a.throttle.forget_s + 1  # an hour later the failures are forgotten
        assert a.retry_after("::1", "ops:admin") == 0.0
        assert a.begin_attempt("::1", "ops:admin") == 0.0
        assert client.zcard(pair) == 1  # the old times were removed, not only ignored
    finally:
        client.close()


# -- Redis down --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, to stop and start again (the shared one stays up)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://:s3cret-pw@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--requirepass", "s3cret-pw", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    pytest.fail("the private redis-server did not start")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_down_sign_in_still_works_still_throttled_per_worker_and_loudly(
        tmp_path: Path, private_redis: PrivateRedis, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    a = worker(tmp_path, private_redis.url, "botkit:", clock, retry_s=0.0)
    b = worker(tmp_path, private_redis.url, "botkit:", clock, retry_s=0.0)
    try:
        assert a.begin_attempt(IP, "alice") == 0.0  # one failure counted in Redis (and by a itself)
        private_redis.stop()
        with caplog.at_level(logging.WARNING, logger="botkit.backends.redis_counters"):
            waits = [a.begin_attempt(IP, "alice") for _ in range(4)]
        assert waits == [0.0, 0.0, 1.0, 1.0]  # not closed (sign-in goes on), not open (a's own counts throttle)
        assert a.failures.degraded  # type: ignore[attr-defined]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1  # once when it starts (then once a minute), not per attempt
        text = errors[0].getMessage()
        assert "does not answer" in text and "N times the tries" in text and "BOTKIT_REDIS_URL" in text
        assert "s3cret-pw" not in text and f"127.0.0.1:{private_redis.port}" in text
        # the other worker has its own budget meanwhile: the degradation the log line names
        assert [b.begin_attempt(IP, "alice") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
        caplog.clear()
        private_redis.start()  # back (empty: it kept nothing)
        with caplog.at_level(logging.WARNING, logger="botkit.backends.redis_counters"):
            assert b.begin_attempt(IP, "bob") == 0.0
        assert not b.failures.degraded  # type: ignore[attr-defined]
        assert any("answers again" in r.getMessage() for r in caplog.records)
        client = redis.Redis.from_url(private_redis.url)
        assert client.exists(f"botkit:signin:pair:{IP}:bob") == 1  # counted in Redis again
        client.close()
        assert a.begin_attempt(IP, "alice") == 0.0  # Redis's counts rule again: the restarted one has none
        assert [b.begin_attempt(IP, "alice") for _ in range(3)] == [0.0, 0.0, 1.0]  # shared again: 3 in all
    finally:
        a.close()
        b.close()


def test_a_dead_redis_is_not_asked_on_every_sign_in(tmp_path: Path, clock: Clock) -> None:
    port = _free_port()  # nothing listens there
    auth = worker(tmp_path, f"redis://127.0.0.1:{port}/0", "botkit:", clock, retry_s=30.0)
    try:
        assert auth.begin_attempt(IP, "alice") == 0.0
        client = auth.failures._client  # type: ignore[attr-defined]
        calls: list[object] = []
        original = client.execute_command
        client.execute_command = lambda *a, **k: calls.append(a) or original(*a, **k)
        assert [auth.begin_attempt(IP, "alice") for _ in range(3)] == [0.0, 0.0, 1.0]
        assert calls == []  # within retry_s the worker counts on its own without trying Redis
    finally:
        auth.close()


# -- the switch --------------------------------------------------------------------------------------
def test_the_switch_puts_the_counts_in_redis_under_the_prefix(tmp_path: Path, redis_url: str, prefix: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "bot"
    root.mkdir()
    (root / "bot.yaml").write_text(f"name: test bot\nstorage:\n  redis_prefix: '{prefix}'\nchannels: {{}}\n",
                                   encoding="utf-8")
    monkeypatch.delenv("BOTKIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("BOTKIT_REDIS_URL", raising=False)
    assert isinstance(Auth(Project.load(root)).failures, LocalFailureCounts)
    monkeypatch.setenv("BOTKIT_REDIS_URL", redis_url)
    auth = Auth(Project.load(root), throttle=Throttle(pair_free=1))
    try:
        assert isinstance(auth.failures, RedisFailureCounts) and auth.failures.prefix == prefix
        assert auth.throttle.pair_free == 1
        assert auth.begin_attempt(IP, "alice") == 0.0
        assert _keys(redis_url, prefix) == [f"{prefix}signin:address:{IP}", f"{prefix}signin:pair:{IP}:alice"]
    finally:
        auth.close()
    monkeypatch.setenv("BOTKIT_REDIS_URL", "http://127.0.0.1:6379")
    with pytest.raises(ConfigError, match="is not redis://"):
        Auth(Project.load(root))
