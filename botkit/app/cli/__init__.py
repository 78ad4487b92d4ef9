"""The ``botkit`` command line. Output meant for scripts is stable: ``--json`` everywhere.

Heavy libraries (torch, faiss) are imported only by the commands that need them, so
``botkit kb list`` answers in a fraction of a second.

Each command group lives in its own module (``kb``, ``dialogue``, ``staff``, ``train``) and adds
its subcommands to the parser here, in the order ``botkit --help`` lists them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from botkit import __version__

# Every group module imports common first, which sets the OpenMP thread policy before torch loads.
from botkit.app.cli import dialogue, kb, report, staff, train
from botkit.app.cli.common import _serves_llama_cpp
from botkit.errors import BotkitError

__all__ = ["_serves_llama_cpp", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", metavar="DIR", default=argparse.SUPPRESS,
                        help="the bot project directory (default: the current directory)")
    parser = argparse.ArgumentParser(prog="botkit", parents=[common],
                                     description="Customer-service chatbots grounded in your knowledge base.")
    parser.add_argument("--version", action="version", version=f"botkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kb.add_commands(sub, common)
    dialogue.add_commands(sub, common)
    staff.add_commands(sub, common)
    train.add_commands(sub, common)
    report.add_commands(sub, common)

    ev = sub.add_parser("eval", help="measure the bot").add_subparsers(dest="eval_command", required=True,
                                                                       metavar="WHAT")

    kb.add_eval_commands(ev, common)
    train.add_eval_commands(ev, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from botkit.files import private_umask

    private_umask()  # state files (hashes, sessions, conversations) are born readable by this user only
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "project"):
        args.project = None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BotkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
