#!/usr/bin/env bash
# Start the local servers the tests talk to when they are down (scripts/test.sh runs this first):
# PostgreSQL for tests/test_postgres_store.py, Redis for tests/test_redis_backends.py. Quick and idempotent: a server that answers is left
# alone. Needs root to start one (as CI runs); otherwise it says so, and under CI=true the tests
# that need the server then fail rather than skip.
set -uo pipefail

pg_up() { pg_isready -q -h "${BOTKIT_TEST_PGHOST:-127.0.0.1}" -p "${BOTKIT_TEST_PGPORT:-5432}" -t 2 2>/dev/null; }

start_postgres() {
  if [ -n "${BOTKIT_TEST_DATABASE_URL:-}" ]; then
    return 0  # a server of the caller's choosing: not ours to start
  fi
  if ! command -v pg_isready >/dev/null 2>&1; then
    echo "PostgreSQL is not installed (no pg_isready): the PostgreSQL tests cannot run" >&2
    return 1
  fi
  pg_up && return 0
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ "$(id -u)" != 0 ] || [ -z "$version" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "PostgreSQL at 127.0.0.1:5432 is down and cannot be started from here (needs root and a Debian" \
         "cluster in /etc/postgresql): the PostgreSQL tests will not run" >&2
    return 1
  fi
  echo "starting PostgreSQL $version (pg_ctlcluster $version main start)" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  for _ in $(seq 1 30); do
    pg_up && return 0
    sleep 1
  done
  echo "PostgreSQL $version did not come up within 30 s; see /var/log/postgresql/postgresql-$version-main.log" >&2
  return 1
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

start_redis() {
  if [ -n "${BOTKIT_TEST_REDIS_URL:-}" ]; then
    return 0  # a server of the caller's choosing: not ours to start
  fi
  if ! command -v redis-cli >/dev/null 2>&1; then
    echo "Redis is not installed (no redis-cli; apt-get install redis-server): the Redis tests cannot run" >&2
    return 1
  fi
  redis_up && return 0
  if [ "$(id -u)" != 0 ] || ! command -v redis-server >/dev/null 2>&1; then
    echo "Redis at 127.0.0.1:6379 is down and cannot be started from here (needs root and redis-server):" \
         "the Redis tests will not run" >&2
    return 1
  fi
  echo "starting Redis (service redis-server start)" >&2
  service redis-server start >&2 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 >&2 || true
  for _ in $(seq 1 15); do
    redis_up && return 0
    sleep 1
  done
  echo "Redis did not come up within 15 s; see /var/log/redis/redis-server.log" >&2
  return 1
}

start_postgres || true
start_redis || true
