"""``botkit users``: the agent and operator accounts that sign in to the console and KB editor."""

from __future__ import annotations

import argparse
from typing import Any

from botkit.app.cli.common import _project


def cmd_users(args: argparse.Namespace) -> int:
    from botkit.app.accounts import Auth

    auth = Auth(_project(args))
    try:
        if args.action == "add":
            password = auth.add_user(args.name, args.role)
            print(f"created {args.role} {args.name} with password: {password}")
        elif args.action == "passwd":
            password = auth.set_password(args.name)
            print(f"new password for {args.name}: {password}")
        else:
            for user in auth.list_users():
                print(f"{user.name:<20} {user.role}")
    finally:
        close = getattr(auth, "close", None)
        if close:
            close()
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``users``."""
    p = sub.add_parser("users", help="agent and operator accounts", parents=[common])
    p.add_argument("action", choices=["add", "passwd", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=["agent", "operator", "admin"], default="agent")
    p.set_defaults(func=cmd_users)
