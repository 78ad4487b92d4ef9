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
# install_debian PACKAGE FOR_WHAT WITHOUT_IT: the Debian package, when missing and this is root
install_debian() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $1 (Debian package) for $2" >&2
    (apt-get install -y -q "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$1" >/dev/null; }) \
      || echo "could not install $1: $3" >&2
  else
    echo "$1 is not installed and this is not root: $3" >&2
  fi
}
if ! command -v chromium >/dev/null 2>&1; then
  install_debian chromium "the browser tests" "the browser tests will be skipped"
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then  # tests/test_workers_nginx.py
  install_debian nginx "the several-workers test" "the several-workers test will fail under CI and skip otherwise"
fi
if [ $# -eq 0 ]; then
  bash scripts/check.sh
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
