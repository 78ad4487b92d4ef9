"""``botkit report``: the figures of the ``/analytics`` page (botkit/analytics.py, defined in
docs/analytics.md) on the command line, as text or ``--json``, with PNG plots (``--plots DIR``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from botkit.app.cli.common import _print_json, _project
from botkit.errors import BotkitError

PLOT_SIZE = (10.0, 5.0)  # inches, at 100 dpi: 1000 x 500 pixels
PLOT_DPI = 100


def _open_store(args: argparse.Namespace) -> Any:
    """The project's conversation store, read-only where the backend allows it."""
    from botkit.app.compose import CONVERSATIONS_DB, build_store, store_backend
    from botkit.store import SQLiteConversationStore

    project = _project(args)
    path = project.state_dir / CONVERSATIONS_DB
    if store_backend(project.config.storage) == "sqlite":
        if not path.exists():
            raise BotkitError(f"no conversations are stored yet ({path} does not exist): serve the bot "
                              "(botkit serve) or talk to it (botkit shell) first, or give --project DIR")
        return SQLiteConversationStore(path, read_only=True)
    return build_store(project.config.storage, path)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_report(r: dict[str, Any]) -> str:
    """The report as text a person reads (``--json`` for scripts)."""
    rng = r["range"]
    lines = [f"Report {rng['since'] or 'start'} .. {rng['until'] or 'now'} (UTC, until exclusive), by {rng['bucket']}",
             ""]

    def row(label: str, value: object) -> None:
        lines.append(f"{label:<21}{value}")

    conv, times, sat, fb = r["conversations"], r["times"], r["satisfaction"], r["feedback"]
    row("Conversations", conv["total"])
    row("Contained", conv["contained"])
    row("Containment", _share(conv["containment"]))
    row("Handed off", conv["handed_off"])
    row("Turns", r["turns"]["total"])
    row("Hand-offs", r["handoffs"]["total"])
    for label, key in (("First response", "first_response"), ("First agent reply", "agent_first_response"),
                       ("Resolution", "resolution")):
        t = times[key]
        row(label, f"median {_seconds(t['median_s'])}, p90 {_seconds(t['p90_s'])} ({t['count']})")
    row("CSAT", f"{_share(sat['csat'])} satisfied, mean {sat['mean'] if sat['mean'] is not None else '-'} "
                f"({sat['rated']} rated)")
    row("Thumbs", f"{fb['up']} up, {fb['down']} down")
    row("Unanswered", r["unanswered"]["total"])
    for title, items in (("Hand-offs by reason", r["handoffs"]["by_reason"]),
                         ("Hand-offs by rule", r["handoffs"]["by_rule"])):
        if items:
            lines += ["", title] + [f"  {i['count']:>5}  {i['name']}" for i in items]
    if r["unanswered"]["clusters"]:
        lines += ["", "Questions the bot could not answer (FAQ proposals: /kb#proposals)"]
        lines += [f"  {c['count']:>5}  {c['question']}"
                  + (f"  [FAQ proposal {c['proposal']['id']}]" if c.get("proposal") else "")
                  for c in r["unanswered"]["clusters"]]
    if r["top_articles"]:
        lines += ["", "Top cited articles"]
        lines += [f"  {a['citations']:>5}  {a['title']} ({a['id']}; {a['up']} up, {a['down']} down)"
                  for a in r["top_articles"]]
    if r["thumbed_down"]:
        lines += ["", "Thumbed down"]
        lines += [f"  {d['at'][:16]}  {d['conversation']}#{d['turn']}  {d['question']}" for d in r["thumbed_down"]]
    if r["series"]:
        lines += ["", f"  {'bucket':<12}{'conv':>6}{'contained':>11}{'turns':>7}{'hand-offs':>11}{'up':>5}{'down':>6}"]
        lines += [f"  {s['bucket']:<12}{s['conversations']:>6}{s['contained']:>11}{s['turns']:>7}{s['handoffs']:>11}"
                  f"{s['up']:>5}{s['down']:>6}" for s in r["series"]]
    return "\n".join(lines)


def write_plots(r: dict[str, Any], out: Path) -> list[Path]:
    """PNG plots of the report in ``out`` (created): conversations and containment, hand-offs
    by reason and rule, thumbs, CSAT, response times. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    series = r["series"]
    labels = [s["bucket"] for s in series]
    x = list(range(len(series)))
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=PLOT_DPI)
        plt.close(fig)
        written.append(path)

    def ticks(ax: Any) -> None:
        step = max(1, len(labels) // 12)
        ax.set_xticks(x[::step], labels[::step], rotation=30, ha="right")

    fig, ax = plt.subplots(figsize=PLOT_SIZE)
    ax.bar([i - 0.2 for i in x], [s["conversations"] for s in series], 0.4, label="conversations")
    ax.bar([i + 0.2 for i in x], [s["contained"] for s in series], 0.4, label="contained (no hand-off)")
    ax.plot(x, [s["turns"] for s in series], "o-", color="0.3", label="turns")
    ax.set_ylabel("count")
    ticks(ax)
    share = ax.twinx()
    share.plot(x, [100 * s["containment"] if s["containment"] is not None else float("nan") for s in series],
               "s--", color="tab:green", label="containment %")
    share.set_ylim(0, 105)
    share.set_ylabel("containment %")
    ax.legend(loc="upper left")
    share.legend(loc="upper right")
    ax.set_title(f"Conversations and turns by {r['range']['bucket']} (UTC)")
    save(fig, "conversations.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=PLOT_SIZE)
    for ax, key, title in ((left, "by_reason", "Hand-offs by reason"), (right, "by_rule", "Hand-offs by rule")):
        items = r["handoffs"][key][::-1]
        ax.barh([i["name"] for i in items], [i["count"] for i in items], color="tab:orange")
        ax.set_title(title)
        ax.set_xlabel("hand-offs")
    save(fig, "handoffs.png")

    fig, ax = plt.subplots(figsize=PLOT_SIZE)
    ax.bar([i - 0.2 for i in x], [s["up"] for s in series], 0.4, label="thumbs up", color="tab:green")
    ax.bar([i + 0.2 for i in x], [s["down"] for s in series], 0.4, label="thumbs down", color="tab:red")
    ax.plot(x, [s["unanswered"] for s in series], "o-", color="0.3", label="unanswered questions")
    ticks(ax)
    ax.legend()
    ax.set_title(f"Feedback and unanswered questions by {r['range']['bucket']} (UTC)")
    save(fig, "feedback.png")

    fig, ax = plt.subplots(figsize=PLOT_SIZE)
    dist = r["satisfaction"]["distribution"]
    ax.bar(list(dist), list(dist.values()), color="tab:blue")
    ax.set_xlabel("rating (1-5)")
    ax.set_ylabel("conversations")
    sat = r["satisfaction"]
    ax.set_title(f"Customer satisfaction: {_share(sat['csat'])} rated 4 or 5 ({sat['rated']} rated)")
    save(fig, "satisfaction.png")

    fig, ax = plt.subplots(figsize=PLOT_SIZE)
    names = {"first_response": "first response", "agent_first_response": "first agent reply",
             "resolution": "resolution"}
    rows = list(names)
    for offset, stat, color in ((-0.2, "median_s", "tab:blue"), (0.2, "p90_s", "tab:purple")):
        values = [r["times"][k][stat] for k in rows]
        drawn = ax.bar([i + offset for i in range(len(rows))], [v or 0 for v in values], 0.4,
                       label=stat.replace("_s", ""), color=color)
        ax.bar_label(drawn, labels=[_seconds(v) for v in values], padding=2)
    ax.set_xticks(range(len(rows)), [f"{names[k]} ({r['times'][k]['count']})" for k in rows])
    ax.set_ylabel("seconds")
    ax.legend()
    ax.set_title("Response and resolution times")
    save(fig, "times.png")
    return written


def cmd_report(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.analytics import parse_range
    from botkit.app.analytics_data import analytics_report

    rng = parse_range(args.since, args.until, args.bucket)

    async def go() -> dict[str, Any]:
        store = _open_store(args)
        await store.start()
        try:
            return await analytics_report(_project(args), store, rng)
        finally:
            await store.close()

    report = asyncio.run(go())
    if args.json:
        _print_json(report)
    else:
        print(format_report(report))
    if args.plots:
        try:
            written = write_plots(report, Path(args.plots))
        except OSError as exc:
            raise BotkitError(f"cannot write the plots into {args.plots}: {exc.strerror or exc}; "
                              "give --plots a directory you can write to") from exc
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``report``."""
    p = sub.add_parser("report", help="analytics: containment, hand-offs, response times, CSAT, gaps",
                       parents=[common], description="The figures of the /analytics page (docs/analytics.md).")
    p.add_argument("--since", metavar="DATE", help="from this UTC date (YYYY-MM-DD), ISO time, or Nd (N days ago)")
    p.add_argument("--until", metavar="DATE", help="up to and including this UTC date (or before this ISO time)")
    p.add_argument("--bucket", choices=["day", "week"], default="day", help="series by UTC day or ISO week")
    p.add_argument("--json", action="store_true", help="the report as JSON (what /api/analytics answers)")
    p.add_argument("--plots", metavar="DIR", help="also write PNG plots into DIR")
    p.set_defaults(func=cmd_report)
