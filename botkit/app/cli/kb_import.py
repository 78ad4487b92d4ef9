"""``botkit kb import``: files into the knowledge base, never over a change made there since.

An entry edited in the KB editor (or rolled back or deleted with the CLI) after its last
import is not overwritten by the next import (knowledge.imports): its file unchanged, the
change stands ("kept"); its file changed too, it is a conflict, listed and not imported, and
the command exits with :data:`CONFLICTS_EXIT` until ``--theirs`` or ``--ours`` settles it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from botkit.app.cli.common import _author, _kb, _print_json, _project
from knowledge.imports import ImportChange, Resolve

CONFLICTS_EXIT = 3  # conflicts were left (changed in the KB and in the file): none of them imported

IMPORT_HELP = """Import Markdown, text, HTML, CSV or JSONL files in one transaction.

Edits are never lost: each entry remembers the revision its last import wrote. An entry
changed in the knowledge base since then (in the KB editor, or by `kb rollback`/`kb delete`)
is not overwritten:
  - its file unchanged: the change stands, and is listed as "kept";
  - its file changed too: a conflict. It is listed, nothing of it is imported and the exit
    status is 3. `kb history ID` and `kb diff ID --from IMPORT_REV` show what changed; then
    import again with --theirs (the files win) or --ours (the knowledge base wins), or make
    the file and the entry agree. Name files to settle only their entries."""


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.description = IMPORT_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("paths", nargs="*", help="files or directories (default: knowledge.sources in bot.yaml)")
    side = p.add_mutually_exclusive_group()
    side.add_argument("--theirs", action="store_true",
                      help="for conflicting entries the files win: their content is imported over the change")
    side.add_argument("--ours", action="store_true",
                      help="for conflicting entries the knowledge base wins: its version stays and is no longer "
                           "reported while the file stays as it is (a later change to the file is a conflict again)")


def _line(c: ImportChange) -> str:
    since = f"imported as rev {c.base_rev}" if c.base_rev is not None else "never imported from a file"
    what = f"deleted (rev {c.rev})" if c.deleted else f"rev {c.rev} ({c.action})"
    return f"  {c.article_id}: {what} by {c.author} at {c.at}; {since}; file {c.source}"


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def cmd_kb_import(args: argparse.Namespace) -> int:
    project = _project(args)
    paths = [Path(p) for p in args.paths] or project.source_paths()
    resolve: Resolve = "theirs" if args.theirs else "ours" if args.ours else "refuse"
    with _kb(args) as kb:
        summary = kb.import_paths(paths, _author(args), resolve)
    code = CONFLICTS_EXIT if summary.conflicts else 0
    if args.json:
        _print_json({"kb_version": summary.kb_version, "created": list(summary.created),
                     "updated": list(summary.updated), "unchanged": list(summary.unchanged),
                     "kept": [c.to_json() for c in summary.kept],
                     "conflicts": [c.to_json() for c in summary.conflicts],
                     "resolved": [c.to_json() for c in summary.resolved]})
        return code
    print(f"imported: {len(summary.created)} created, {len(summary.updated)} updated, "
          f"{len(summary.unchanged)} unchanged"
          + (f", {len(summary.kept)} kept" if summary.kept else "")
          + (f", {len(summary.conflicts)} in conflict" if summary.conflicts else "")
          + f"; knowledge base version {summary.kb_version}")
    if summary.resolved:
        print(f"{len(summary.resolved)} conflict(s) settled with --{resolve} "
              f"({'the files won' if resolve == 'theirs' else 'the knowledge base kept its version'}):")
        for c in summary.resolved:
            print(_line(c))
    if summary.kept:
        print(f"kept {_entries(len(summary.kept))} changed in the knowledge base since the last import (the file is "
              "unchanged, so the change stands; copy it into the file to make it permanent, or undo it with "
              "`botkit kb rollback ID --to IMPORT_REV`):")
        for c in summary.kept:
            print(_line(c))
    if summary.conflicts:
        first = summary.conflicts[0]
        print(f"CONFLICT: {_entries(len(summary.conflicts))} changed in the knowledge base since the last import "
              "AND in the file; not imported:", file=sys.stderr)
        for c in summary.conflicts:
            print(_line(c), file=sys.stderr)
        print(f"see what changed with `botkit kb history {first.article_id}`"
              + (f" and `botkit kb diff {first.article_id} --from {first.base_rev}`" if first.base_rev else "")
              + "; then import again with --theirs (the files win) or --ours (the knowledge base keeps its "
              "version), or make the file and the entry agree", file=sys.stderr)
    return code


__all__ = ["CONFLICTS_EXIT", "IMPORT_HELP", "add_import_arguments", "cmd_kb_import"]
