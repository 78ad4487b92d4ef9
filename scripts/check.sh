#!/usr/bin/env bash
# The static checks CI runs before the tests: the import layers and cycles, ruff, mypy.
# Needs the venv scripts/setup.sh makes (ruff and mypy come with the test extra).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== imports (scripts/check_imports.py)" >&2
.venv/bin/python scripts/check_imports.py
echo "== ruff" >&2
.venv/bin/ruff check --no-cache .
echo "== mypy" >&2
.venv/bin/mypy
