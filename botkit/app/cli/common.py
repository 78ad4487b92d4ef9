"""Helpers every command group shares: the project named on the command line, JSON output,
the author recorded in revisions, and the knowledge store or base opened for one command.

The thread policy is set here, first of all, because every command module imports this one
before anything heavy (torch, faiss) can load.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def _serves_llama_cpp(argv: Sequence[str]) -> bool:
    """Whether the project named on the command line (``--project DIR``, else the current
    directory) serves its LM with llama.cpp. Read cheaply, before anything heavy is imported;
    any problem reads as no (the real load reports it)."""
    root = "."
    for i, arg in enumerate(argv):
        if arg == "--project" and i + 1 < len(argv):
            root = argv[i + 1]
        elif arg.startswith("--project="):
            root = arg.split("=", 1)[1]
    try:
        import yaml

        cfg = yaml.safe_load((Path(root) / "bot.yaml").read_text(encoding="utf-8")) or {}
        return ((cfg.get("dialogue") or {}).get("local_lm") or {}).get("backend") == "llama-cpp"
    except Exception:  # noqa: BLE001 - a missing or broken bot.yaml is reported by the command itself
        return False


# Must be set before torch/faiss load their OpenMP runtime: spinning worker threads cost
# 37% (and up to 30x under load) on a small shared machine (benchmarks/threads.py). Not for a
# bot served by llama.cpp: its decode loop shares that OpenMP runtime, and PASSIVE halved it
# (Gemma 270M Q4_K_M, 2 cores: 66 -> 36 tokens/s; benchmarks/README.md, "Serving").
if not _serves_llama_cpp(sys.argv[1:]):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from botkit.project import Project  # noqa: E402 - after the thread policy, on purpose


def _author(args: argparse.Namespace) -> str:
    return args.author or os.environ.get("BOTKIT_AUTHOR") or getpass.getuser()


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _project(args: argparse.Namespace) -> Project:
    return Project.load(args.project or ".")


def _store(args: argparse.Namespace):
    from botkit.app.compose import build_knowledge_store

    return build_knowledge_store(_project(args))  # the SQLite file, or PostgreSQL (BOTKIT_DATABASE_URL)


@contextlib.contextmanager
def _kb(args: argparse.Namespace) -> Iterator[Any]:
    """An opened knowledge base whose index has been checked (and repaired) against the store."""
    from botkit.app.compose import open_knowledge_base

    kb = open_knowledge_base(_project(args), progress=None if sys.stderr.isatty() else False)
    try:
        report = kb.start()
        if report.status in ("rebuilt", "repaired") and report.added + report.removed:
            print(f"index {report.status}: +{report.added} -{report.removed} chunks "
                  f"({report.embedded} embedded) in {report.seconds:.1f}s", file=sys.stderr)
        kb.start_report = report
        yield kb
    finally:
        kb.close()
