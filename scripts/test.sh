#!/usr/bin/env bash
# Set up (if needed), run the static checks (scripts/check.sh: import layers, ruff, mypy) and the
# whole test suite. Extra arguments go to pytest, and then the static checks are skipped.
# The browser tests drive Debian's Chromium (playwright cannot download browsers here);
# it is installed with apt when missing and this runs as root (as CI does), and so is nginx
# (tests/test_workers_nginx.py puts it in front of two workers; it never starts the system one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh  # PostgreSQL and Redis for their tests, started when they are down
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package) for the browser tests" >&2
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }) \
      || echo "could not install chromium: the browser tests will be skipped" >&2
  else
    echo "chromium is not installed and this is not root: the browser tests will be skipped" >&2
  fi
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then  # tests/test_workers_nginx.py
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing nginx (Debian package) for the several-workers test" >&2
    (apt-get install -y -q nginx >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q nginx >/dev/null; }) \
      || echo "could not install nginx: the several-workers test will fail under CI and skip otherwise" >&2
  else
    echo "nginx is not installed and this is not root: the several-workers test will be skipped (fails under CI)" >&2
  fi
fi
if [ $# -eq 0 ]; then
  bash scripts/check.sh
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
