"""Talking to the bot: ``ask``, ``shell``, ``test``, ``handoffs``, ``agent`` and ``serve``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import secrets
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from botkit.app.cli.common import _author, _print_json, _project
from botkit.errors import BotkitError
from botkit.project import Project


@contextlib.asynccontextmanager
async def _engine(args: argparse.Namespace, conversations_db: Path | None = None) -> Any:
    from botkit.app.compose import build_engine

    engine = build_engine(_project(args), progress=None if sys.stderr.isatty() else False,
                          conversations_db=conversations_db)
    async with engine:
        yield engine


def _new_conversation_id() -> str:
    import uuid

    return f"cli-{uuid.uuid4().hex[:12]}"


def _format_reply(reply: Any) -> str:
    return _format_record(reply.to_json())


def _format_record(reply: dict[str, Any]) -> str:
    """A reply (as ``Reply.to_json`` gives it, locally or from a server) for the terminal."""
    lines = [reply["text"]] if reply.get("text") else []
    if reply.get("sources"):
        lines.append("sources: " + ", ".join(f"{s['title']} ({s['id']})" for s in reply["sources"]))
    escalation = reply.get("escalation")
    if escalation:
        lines.append(f"[handed to a human: {escalation['reason']}: {escalation['detail']}]")
    if reply.get("action") == "handoff":
        lines.append("[a human agent has this conversation; your message was passed on]")
    if reply.get("action") == "no_answer":
        why = "" if reply.get("fallback") else ": nothing in the knowledge base cleared the threshold"
        lines.append(f"[no answer{why} (confidence {reply.get('confidence') or 0.0:.2f})]")
    if reply.get("fallback"):
        detail = reply.get("fallback_detail")
        lines.append(f"[fallback: {reply['fallback']}" + (f" ({detail})]" if detail else "]"))
    return "\n".join(lines)


SLOW_NOTE_FILE = "ask-note-shown"


def _ask_server(server: Any, text: str, conversation: str, customer: str) -> dict[str, Any] | None:
    """The reply of the running ``botkit serve`` (:mod:`botkit.app.running`); None when it does not
    answer (it is starting or stopping: the question is then answered here)."""
    import json
    import urllib.error
    import urllib.request

    from botkit.app.cli_api import CLI_ASK_PATH

    request = urllib.request.Request(
        server.url + CLI_ASK_PATH, method="POST",
        data=json.dumps({"text": text, "conversation": conversation, "customer": customer}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            record: dict[str, Any] = json.loads(response.read())
            return record
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error") or exc.reason
        except ValueError:
            error = exc.reason
        if exc.code in (400, 422):
            raise BotkitError(str(error)) from None
        raise BotkitError(f"the running `botkit serve` (pid {server.pid}, {server.url}) answered {exc.code}: "
                          f"{error}; try again with --local to answer without it") from None
    except (OSError, ValueError):  # refused, reset, timed out, not JSON: not a server we can use
        return None


def _slow_note(project: Project) -> None:
    """Say once per project why the first answer takes seconds, and how to make it instant."""
    marker = project.state_dir / SLOW_NOTE_FILE
    if marker.exists():
        return
    print("(loading the embedding model and the index: about 10 s before the first answer. A `botkit serve` "
          "of this project answers at once, and `botkit ask` uses it while it runs. This note is shown once.)",
          file=sys.stderr)
    with contextlib.suppress(OSError):
        from botkit.files import write_private_text

        write_private_text(marker, "")


def cmd_ask(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.app.running import find_server
    from botkit.types import IncomingMessage

    project = _project(args)
    conversation, text = args.conversation or _new_conversation_id(), " ".join(args.text)
    server = None if args.local else find_server(project.state_dir)
    record = _ask_server(server, text, conversation, _author(args)) if server is not None else None
    if record is None:
        server = None
        _slow_note(project)

        async def go() -> Any:
            async with _engine(args) as engine:
                return await engine.handle(IncomingMessage(conversation, text, channel="cli",
                                                           customer_id=_author(args)))

        record = asyncio.run(go()).to_json()
    if args.json:
        _print_json(record)
    else:
        print(_format_record(record))
        via = f" (answered by the running `botkit serve`, pid {server.pid})" if server is not None else ""
        print(f"(conversation {record['conversation']}; continue with --conversation {record['conversation']}){via}",
              file=sys.stderr)
    return 0


def _wrap(text: str, prefix: str, width: int | None = None) -> str:
    """``text`` after ``prefix``, each of its lines wrapped at word boundaries to the terminal's
    width, continuation lines indented under the first (a long word or URL is never cut)."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    indent = " " * len(prefix)
    out: list[str] = []
    for i, line in enumerate(text.split("\n") or [""]):
        first = prefix if i == 0 else indent
        out += textwrap.wrap(line, width=max(20, width - 1), initial_indent=first, subsequent_indent=indent,
                             break_long_words=False, break_on_hyphens=False) or [first.rstrip()]
    return "\n".join(out)


SHELL_HELP = """commands: /up and /down rate the last reply, /rate N (1-5) rates the conversation,
/new starts a new conversation, /history shows it, /quit (or Ctrl-D) leaves"""


def cmd_shell(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.errors import MessageRejected
    from botkit.types import IncomingMessage

    async def go() -> None:
        async with _engine(args) as engine:
            conversation = args.conversation or _new_conversation_id()
            print(f"{engine.bot_name} — conversation {conversation}\n{SHELL_HELP}")
            last_seq: int | None = None
            while True:
                try:
                    line = await asyncio.to_thread(input, "you> ")
                except EOFError:
                    print()
                    return
                line = line.strip()
                if not line:
                    continue
                try:
                    if line in ("/quit", "/exit"):
                        return
                    if line == "/new":
                        conversation, last_seq = _new_conversation_id(), None
                        print(f"new conversation {conversation}")
                    elif line in ("/up", "/down"):
                        if last_seq is None:
                            print("no reply to rate yet")
                        else:
                            await engine.feedback(conversation, last_seq, 1 if line == "/up" else -1)
                            print("thanks for the feedback")
                    elif line.startswith("/rate"):
                        await engine.rate(conversation, int(line.split()[1]))
                        print("thanks for rating this conversation")
                    elif line == "/history":
                        for t in await engine.history(conversation):
                            print(f"  {t.seq:>3} {t.role:<8} "
                                  + textwrap.shorten(" ".join(t.text.split()), width=100, placeholder=" ..."))
                    elif line.startswith("/"):
                        print(SHELL_HELP)
                    else:
                        reply = await engine.handle(IncomingMessage(conversation, line, channel="cli",
                                                                    customer_id=_author(args)))
                        last_seq = reply.turn_seq if reply.turn_seq is not None else last_seq
                        print(_wrap(_format_reply(reply), "bot> "))
                except (MessageRejected, ValueError, IndexError) as exc:
                    print(f"({exc})")
                except BotkitError as exc:
                    print(f"(error: {exc})")

    asyncio.run(go())
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.app.convtest import load_tests, report, run_tests, scratch_db

    spec = load_tests(Path(args.file))

    async def go() -> Any:
        async with _engine(args, conversations_db=scratch_db()) as engine:
            return await run_tests(engine, spec)

    results = asyncio.run(go())
    print(report(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_handoffs(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.app.compose import CONVERSATIONS_DB, build_store

    async def go() -> Any:
        project = _project(args)
        store = build_store(project.config.storage, project.state_dir / CONVERSATIONS_DB)
        await store.start()
        try:
            return await store.handoffs(None if args.all else "waiting")
        finally:
            await store.close()

    handoffs = asyncio.run(go())
    if args.json:
        _print_json([{"id": h.id, "conversation": h.conversation_id, "reason": h.reason, "rule": h.rule,
                      "detail": h.detail, "summary": h.summary, "channel": h.channel, "customer": h.customer_id,
                      "created_at": h.created_at.isoformat(), "status": h.status, "agent": h.agent}
                     for h in handoffs])
        return 0
    for h in handoffs:
        print(f"{h.conversation_id}  {h.status:<8} {h.reason:<22} {h.channel}:{h.customer_id}  "
              f"{h.created_at:%Y-%m-%d %H:%M}")
        print(f"    {h.summary}")
    if not handoffs:
        print("no conversations are waiting for a human", file=sys.stderr)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    import asyncio

    async def go() -> str:
        async with _engine(args) as engine:
            if args.action == "take":
                await engine.take(args.conversation, args.agent)
                return f"{args.agent} took {args.conversation}"
            if args.action in ("say", "note"):
                if not args.text:
                    raise BotkitError(f"`botkit agent {args.action}` needs the text to send")
                await engine.agent_message(args.conversation, args.agent, " ".join(args.text),
                                           internal=args.action == "note")
                return "sent" if args.action == "say" else "note added"
            await engine.release(args.conversation, args.agent, "returned" if args.action == "return" else "closed")
            return f"{args.conversation} {'returned to the bot' if args.action == 'return' else 'closed'}"

    print(asyncio.run(go()))
    return 0


# -- serving --------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    project = _project(args)
    server = project.config.server
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    if args.nginx:
        return _print_nginx(host, port, args.workers)
    if args.workers > 1:
        return _serve_workers(args, project, host, port)

    from botkit.app.cli_api import mount_cli_api
    from botkit.app.running import announced, check_port, port_in_use_message
    from botkit.app.server import build_app, serve

    check_port(host, port)  # before the model loads: a busy port is one line, not a traceback 10 s later
    app = build_app(project)
    worker = args.worker_index
    if worker is not None:  # one of `botkit serve --workers N`'s: the supervisor announced the server
        print(f"{project.config.name}: worker {worker} serving on http://{host}:{port}", flush=True)
    else:
        base = server.public_url or f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '::') else host}:{port}"
        lines = [f"{project.config.name}: serving {project.root} on http://{host}:{port}"]
        if "webchat" in project.config.channels:
            lines.append(f"  customer chat page : {base}/chat")
        lines += [f"  agent console      : {base}/console", f"  knowledge editor   : {base}/kb",
                  f"  health / metrics   : {base}/healthz  {base}/metrics"]
        if args.demo_accounts:
            lines += _demo_account_lines(project)
        print("\n".join(lines), flush=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        if worker is not None:
            from botkit.app.workers import TOKEN_ENV

            mount_cli_api(app, os.environ.pop(TOKEN_ENV, "") or secrets.token_urlsafe(24))
            serve(app, host, port, server)
        else:
            with announced(project.state_dir, host, port) as token:  # serve.json: `botkit ask` finds this server
                mount_cli_api(app, token)
                serve(app, host, port, server)  # web.run_app with slow-client deadlines and server.max_connections
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:  # taken between the check and the bind
            raise BotkitError(port_in_use_message(host, port)) from None
        raise
    return 0


def _print_nginx(host: str, port: int, workers: int) -> int:
    from botkit.app.workers import local_address, nginx_site, worker_ports

    ports = worker_ports(port, max(1, workers))
    print(f"# nginx in front of {len(ports)} botkit worker(s) (`botkit serve --workers {len(ports)} --port {port}`);"
          "\n# put it in /etc/nginx/conf.d/botkit.conf and set server.behind_proxy: true in bot.yaml.")
    print(nginx_site([f"{local_address(host)}:{p}" for p in ports]), end="")
    return 0


def _serve_workers(args: argparse.Namespace, project: Project, host: str, port: int) -> int:
    """``--workers N``: the supervisor (botkit.app.workers) starts N workers on ports port..port+N-1."""
    from botkit.app.running import announced, check_port
    from botkit.app.workers import Supervisor, check_channels, check_shared_backends, worker_ports

    check_shared_backends(project.config.storage, args.workers)
    check_channels(project.config.channels, args.workers)
    ports = worker_ports(port, args.workers)
    for p in ports:
        check_port(host, p)
    server = project.config.server
    lines = [f"{project.config.name}: {args.workers} workers serving {project.root} on http://{host}:"
             f"{ports[0]}-{ports[-1]} (put a load balancer in front: `botkit serve --workers {args.workers} "
             f"--port {port} --nginx` prints an nginx configuration)"]
    if not server.behind_proxy:
        lines.append("  note: server.behind_proxy is false, so behind the load balancer every customer has its "
                     "address (rate limits, sign-in throttling); set it to true in bot.yaml")
    if args.demo_accounts:
        lines += _demo_account_lines(project)
    print("\n".join(lines), flush=True)
    with announced(project.state_dir, host, ports[0]) as token:  # `botkit ask`: worker 0
        supervisor = Supervisor(project.root, host, ports, token, verbose=bool(getattr(args, "verbose", False)),
                                shutdown_timeout_s=server.shutdown_timeout_s)
        return supervisor.run()


DEMO_ACCOUNTS_FILE = "demo-accounts.txt"


def _demo_account_lines(project: Project) -> list[str]:
    """Create the demo accounts if missing; their passwords go to a 0600 file in the state
    directory (and to the terminal only when stdout is one: a server's log must not keep them)."""
    from botkit.app.accounts import ensure_demo_accounts
    from botkit.files import write_private_text

    created = ensure_demo_accounts(project)
    path = project.state_dir / DEMO_ACCOUNTS_FILE
    if created:
        write_private_text(path, "".join(f"{name} {password}\n" for name, password in created.items()))
    elif not path.exists():
        return ["  demo accounts exist already (reset with `botkit users passwd NAME`)"]
    lines = [f"  demo passwords     : {path} (readable by you only)"]
    if created and sys.stdout.isatty():
        lines += [f"  demo account       : {name} / {password}" for name, password in created.items()]
    return lines


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= number <= 64:
        raise argparse.ArgumentTypeError(f"{number} workers: give 1 to 64")
    return number


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``ask``, ``shell``, ``test``, ``handoffs``, ``agent`` and ``serve``."""
    p = sub.add_parser("ask", help="one customer turn", parents=[common])
    p.add_argument("text", nargs="+")
    p.add_argument("--conversation", metavar="ID", help="continue this conversation (default: a new one)")
    p.add_argument("--author", help="the customer id recorded (default: your user name)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--local", action="store_true",
                   help="load the model here even when a `botkit serve` of this project runs (it is used otherwise)")
    p.set_defaults(func=cmd_ask)
    p = sub.add_parser("shell", help="chat with the bot in the terminal", parents=[common])
    p.add_argument("--conversation", metavar="ID")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_shell)
    p = sub.add_parser("test", help="run conversation tests (YAML)", parents=[common])
    p.add_argument("file", metavar="FILE.yaml")
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("handoffs", help="conversations waiting for a human", parents=[common])
    p.add_argument("--all", action="store_true", help="include taken, returned and closed ones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_handoffs)
    p = sub.add_parser("agent", help="act as a human agent on a handed-off conversation", parents=[common])
    p.add_argument("action", choices=["take", "say", "note", "return", "close"])
    p.add_argument("conversation")
    p.add_argument("text", nargs="*")
    p.add_argument("--agent", required=True, help="the agent's name")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("serve", help="serve the web chat, Telegram, the agent console and the KB editor",
                       parents=[common])
    p.add_argument("--host", help="default: server.host in bot.yaml (127.0.0.1)")
    p.add_argument("--port", type=int, help="default: server.port in bot.yaml (8080)")
    p.add_argument("--demo-accounts", action="store_true",
                   help="create demo agent/operator accounts if missing and print their passwords")
    p.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="serve with N worker processes on ports PORT..PORT+N-1, restarted when they die; "
                        "N > 1 needs BOTKIT_DATABASE_URL and BOTKIT_REDIS_URL (docs/workers.md)")
    p.add_argument("--nginx", action="store_true",
                   help="print an nginx configuration for these workers (upstreams, websockets) and exit")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the --workers supervisor
    p.set_defaults(func=cmd_serve)
