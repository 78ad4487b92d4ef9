"""Customers asking while someone imports into the KB (issue 9, defect 2): reply latency before vs after the fix.

The scenario of the issue, end to end with real processes: a copy of the demo project, its KB
imported (``botkit kb import``), served by ``botkit -v serve --port P`` in a child process; this
process is the customer, asking over the web chat websocket (docs/webchat-protocol.md: hello →
welcome → message → ack → reply), one question at a time, each in a new conversation (so an
escalation never leaves a later question with a human), latency = send → ``reply`` frame.

1. idle: ``--questions`` questions while nothing else runs;
2. during import: ``botkit kb import <folder>`` of ``--articles`` generated Markdown articles
   (about 4 chunks each) starts in a second child process, and questions keep coming, one after
   another, until it exits; then a few more, until the server serves the new KB version.

After each reply, ``/healthz`` gives the KB version the server answers from (``kb_version``),
and every other question asks about a generated product, so the table shows when the new KB
was served and when its articles were first cited. With ``-v`` the server logs
``caught up ... N embedded`` when it had to embed chunks itself (background catch-up, after the
fix); those N are summed. The revision before the fix logs nothing of the kind ("n/a").

The same scenario runs twice, side by side: on ``--baseline REV`` (default d825cb4, the commit
before the fix; checked out with ``git worktree add`` into a temporary folder, removed at the
end, run with the same .venv and PYTHONPATH pointing there) and on this working tree. A question
still unanswered after ``--max-wait`` seconds is counted as a timeout at that figure.

    python benchmarks/serve_during_import.py                       # 300 articles, 10 idle questions
    python benchmarks/serve_during_import.py --articles 100 --no-baseline
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `python benchmarks/serve_during_import.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    REPO,
    load_test_demo,
    log,
    percentile,
    print_footer,
    print_header,
    print_table,
    stop_server,
    workdir,
)

HOST = "127.0.0.1"
DEMO_QUESTIONS = [json.loads(line)["query"] for line in (REPO / "demo" / "eval" / "queries.jsonl").read_text()
                  .splitlines() if line.strip()]
CAUGHT_UP = re.compile(r"caught up with knowledge base version (\d+) in the background: \+(\d+) -(\d+) chunks, "
                       r"(\d+) embedded")
AFTER_IMPORT_MAX_S = 180.0  # asking on after the import exited, until the server serves its version


# -- generated articles -----------------------------------------------------------------------------
ADJECTIVES = ["Alder", "Birch", "Cedar", "Driftwood", "Elm", "Fern", "Granite", "Heather", "Ivy", "Juniper",
              "Kestrel", "Larch", "Moss", "Nettle", "Oakmere", "Pebble", "Quarry", "Rowan", "Sorrel", "Thistle"]
MATERIALS = ["oak", "walnut", "linen", "wool", "ceramic", "rattan", "stoneware", "brass", "cotton", "ash",
             "jute", "velvet", "marble", "beech", "leather"]
PRODUCTS = ["bookshelf", "side table", "throw", "lamp", "planter", "armchair", "rug", "vase", "bench",
            "headboard", "mirror", "cushion", "stool", "sideboard", "tray"]

CARE = [
    "Dust the {name} once a week with a soft, dry cloth, working with the grain of the {mat}.",
    "Wipe up spills on the {name} straight away; {mat} marks easily if liquid is left to soak in.",
    "Keep the {name} out of strong direct sunlight, which can fade {mat} over a few summers.",
    "For a deeper clean, use a barely damp cloth and a drop of mild soap, then dry the {name} at once.",
    "Avoid household sprays that contain silicone or ammonia: they leave a film on the {mat} that attracts dust.",
    "Twice a year, check the feet and fixings of the {name} and tighten anything that has worked loose.",
    "Place the {name} at least 30 cm from radiators and wood burners, as dry heat can crack {mat}.",
]
ASSEMBLY = [
    "The {name} arrives in {boxes} boxes, and two people can put it together in about {mins} minutes.",
    "Everything you need is in the fixings bag, including an Allen key sized for the {name}'s bolts.",
    "Lay the parts out on the flattened box so the {mat} does not get scratched while you work.",
    "Hand-tighten every bolt first, then go round again once the {name} is standing level.",
    "If a part of your {name} is missing or damaged, keep the packaging and send us a photo of the label.",
    "Our assembly service for the {name} costs £{fee} and can be booked up to two days before delivery.",
]
DELIVERY = [
    "We deliver the {name} in {days} working days to most UK addresses, and we text you a two-hour slot "
    "the day before.",
    "The {name} travels by our two-person crew, who bring it to the room of your choice and take the packaging away.",
    "You can return the {name} within 30 days if it is unused and in its original packaging.",
    "Returns of the {name} are collected from your door; the collection fee of £{fee} comes off your refund.",
    "If the {name} arrives damaged, tell us within 48 hours and we send a replacement part or a new one.",
    "Deliveries of the {name} to the Scottish Highlands and islands take a few extra days.",
]
WARRANTY = [
    "The {name} has a {years}-year warranty against defects in materials and workmanship.",
    "The warranty does not cover wear and tear, marks from spills, or damage from use outdoors.",
    "To claim, send us your order number, a description of the fault and photos of the {name}.",
    "Natural variation in the grain and colour of {mat} is part of its character and is not a fault.",
    "A repaired or replaced {name} keeps the rest of the original warranty period.",
    "Keep your order confirmation: it is your proof of purchase for the {name}'s warranty.",
]


@dataclass(frozen=True)
class Article:
    id: str
    name: str
    question: str


def articles(n: int) -> list[Article]:
    combos = [(a, m, p) for a in ADJECTIVES for m in MATERIALS for p in PRODUCTS]
    random.Random(9).shuffle(combos)
    if n > len(combos):
        sys.exit(f"--articles: at most {len(combos)}")
    out = []
    for i, (adj, mat, prod) in enumerate(combos[:n]):
        name = f"{adj} {mat} {prod}"
        out.append(Article(f"gen-{i:04d}-{adj.lower()}-{mat}-{prod.replace(' ', '-')}", name,
                           f"how do I look after my {name.lower()}?"))
    return out


def article_text(a: Article, i: int) -> str:
    rng = random.Random(i)
    mat = a.name.split()[1]
    values = {"name": a.name, "mat": mat, "boxes": rng.randint(1, 4), "mins": rng.choice([20, 30, 45, 60, 90]),
              "fee": rng.choice([15, 25, 35, 45]), "days": rng.choice(["3-5", "5-7", "7-10"]),
              "years": rng.choice([2, 5, 10])}

    def para(pool: list[str]) -> str:
        return " ".join(s.format(**values) for s in rng.sample(pool, k=min(5, len(pool))))

    return (f"---\nid: {a.id}\ntitle: Caring for the {a.name}\ntags: [products, {mat}, care]\n---\n"
            f"## Care and cleaning\n{para(CARE)}\n\n## Assembly\n{para(ASSEMBLY)}\n\n"
            f"## Delivery and returns\n{para(DELIVERY)}\n\n## Warranty\n{para(WARRANTY)}\n")


def write_articles(folder: Path, items: list[Article]) -> None:
    folder.mkdir(parents=True)
    for i, a in enumerate(items):
        (folder / f"{a.id}.md").write_text(article_text(a, i))


# -- processes --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def env_for(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def botkit(code: Path, project: Path, args: list[str], verbose: bool = False, **kw: Any) -> subprocess.Popen[str]:
    """``python -m botkit [-v] --project PROJECT ARGS`` with that revision's code on the path."""
    flags = ["-v"] if verbose else []
    return subprocess.Popen([sys.executable, "-m", "botkit", *flags, "--project", str(project), *args],
                            cwd=code, env=env_for(code), text=True, **kw)


def prepare_project(code: Path, dest: Path) -> Path:
    """That revision's demo project, its KB imported; escalation off and chat limits raised for one client."""
    root = load_test_demo(code / "demo", dest)
    done = subprocess.run([sys.executable, "-m", "botkit", "--project", str(root), "kb", "import"], cwd=code,
                          env=env_for(code), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"importing the demo KB failed:\n{done.stdout}\n{done.stderr}")
    return root


def chunk_count(project: Path) -> int:
    with sqlite3.connect(project / ".botkit" / "botkit.sqlite3") as conn:
        return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])


# -- the customer -----------------------------------------------------------------------------------
@dataclass
class Answer:
    at: float  # seconds since the import started (negative: before it)
    ms: float
    kb_version: int | None
    cited_new: bool | None  # None: a question about the demo KB
    timed_out: bool = False


@dataclass
class Run:
    label: str
    idle: list[Answer] = field(default_factory=list)
    during: list[Answer] = field(default_factory=list)
    after: list[Answer] = field(default_factory=list)
    import_s: float = float("nan")
    versions: tuple[int | None, int | None] = (None, None)
    server_embedded: str = "n/a"
    chunks_added: int = 0
    notes: list[str] = field(default_factory=list)


class Customer:
    def __init__(self, port: int, max_wait: float) -> None:
        self.base = f"http://{HOST}:{port}"
        self.max_wait = max_wait
        self.count = 0

    async def __aenter__(self) -> "Customer":
        import aiohttp

        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def kb_version(self) -> int | None:
        async with self.http.get(f"{self.base}/healthz") as r:
            return (await r.json()).get("kb_version")

    async def ask(self, text: str, t_import: float | None, new_ids: set[str] | None) -> Answer:
        """One question in a new conversation; latency = send → reply (capped at max_wait)."""
        self.count += 1
        mid = f"q{self.count}"
        async with self.http.ws_connect(f"{self.base.replace('http', 'ws')}/channels/webchat/ws",
                                        max_msg_size=0) as ws:
            await ws.send_json({"type": "hello", "session": None})
            welcome = await ws.receive_json(timeout=60)
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"expected welcome, got {welcome}")
            t0 = time.perf_counter()
            at = t0 - t_import if t_import is not None else float("nan")
            await ws.send_json({"type": "message", "id": mid, "text": text})
            reply = await self._reply(ws, mid, t0)
            ms = (time.perf_counter() - t0) * 1000
        version = await self.kb_version()
        if reply is None:
            return Answer(at, ms, version, None, timed_out=True)
        cited = None if new_ids is None else any(s.get("id") in new_ids for s in reply.get("sources") or [])
        return Answer(at, ms, version, cited)

    async def _reply(self, ws: Any, mid: str, t0: float) -> dict[str, Any] | None:
        while True:
            left = self.max_wait - (time.perf_counter() - t0)
            if left <= 0:
                return None
            try:
                frame = await ws.receive_json(timeout=left)
            except asyncio.TimeoutError:
                return None
            if frame.get("id") == mid and frame.get("type") == "reply":
                return frame
            if frame.get("id") == mid and frame.get("type") == "error":
                raise RuntimeError(f"the server refused question {mid}: {frame}")


async def scenario(run: Run, port: int, start_import: Any, gen: list[Article], idle_n: int,
                   max_wait: float, interval: float) -> None:
    new_ids = {a.id for a in gen}
    rng = random.Random(2)
    async with Customer(port, max_wait) as c:
        for q in DEMO_QUESTIONS[:2]:  # warm-up, untimed
            await c.ask(q, None, None)
        for j in range(idle_n):
            run.idle.append(await c.ask(DEMO_QUESTIONS[j % len(DEMO_QUESTIONS)], None, None))
        v0 = await c.kb_version()
        importer, t_import = start_import(), time.perf_counter()
        j = 0

        async def next_answer() -> Answer:
            nonlocal j
            j += 1
            t0 = time.perf_counter()
            if j % 2:
                a = await c.ask(DEMO_QUESTIONS[(idle_n + j) % len(DEMO_QUESTIONS)], t_import, None)
            else:
                a = await c.ask(rng.choice(gen).question, t_import, new_ids)
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t0)))  # the next customer's turn
            return a

        while importer.poll() is None:
            run.during.append(await next_answer())
        importer.wait()
        out = Path(importer.args[importer.args.index("--project") + 1]).parent.joinpath("import.log").read_text()
        run.import_s = exited_at(importer) - t_import  # not when the question in flight came back
        if importer.returncode:
            run.notes.append(f"import exited {importer.returncode}: {out[-500:]}")
        m = re.search(r"knowledge base version (\d+)", out)
        v1 = int(m.group(1)) if m else None
        run.versions = (v0, v1)
        deadline = time.perf_counter() + AFTER_IMPORT_MAX_S
        while time.perf_counter() < deadline:
            a = await next_answer()
            run.after.append(a)
            if a.kb_version == v1 and len(run.after) >= 2:
                break


_EXITED: dict[int, float] = {}
_WATCHERS: dict[int, threading.Thread] = {}


def watch_exit(proc: subprocess.Popen[str]) -> None:
    """Record when a process exits (a thread, so a question in flight does not delay the figure)."""
    def wait() -> None:
        proc.wait()
        _EXITED[proc.pid] = time.perf_counter()

    _WATCHERS[proc.pid] = threading.Thread(target=wait, daemon=True)
    _WATCHERS[proc.pid].start()


def exited_at(proc: subprocess.Popen[str]) -> float:
    _WATCHERS[proc.pid].join()
    return _EXITED[proc.pid]


def run_revision(label: str, code: Path, folder: Path, gen: list[Article], args: argparse.Namespace) -> Run:
    run = Run(label)
    log(f"{label}: copying the demo project and importing its KB")
    project = prepare_project(code, workdir())
    before = chunk_count(project)
    port = free_port()
    server_log = project.parent / "server.log"
    log(f"{label}: starting botkit serve on port {port}")
    server = botkit(code, project, ["serve", "--port", str(port)], verbose=True, stdout=server_log.open("w"),
                    stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, server, server_log)

        def start_import() -> subprocess.Popen[str]:
            log(f"{label}: importing {len(gen)} articles while asking")
            out = (project.parent / "import.log").open("w")  # a file, not a pipe nobody reads while asking
            p = botkit(code, project, ["kb", "import", str(folder)], stdout=out, stderr=subprocess.STDOUT)
            watch_exit(p)
            return p

        asyncio.run(scenario(run, port, start_import, gen, args.questions, args.max_wait, args.interval))
    finally:
        stop_server(server)
    run.chunks_added = chunk_count(project) - before
    text = server_log.read_text()
    caught = [int(m.group(4)) for m in CAUGHT_UP.finditer(text)]
    if "caught up with knowledge base version" in (code / "knowledge" / "base.py").read_text():
        run.server_embedded = str(sum(caught))
    log(f"{label}: done ({len(run.during)} questions during the import, {run.import_s:.1f} s)")
    return run


def wait_healthy(port: int, server: subprocess.Popen[str], server_log: Path, timeout: float = 300) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"botkit serve exited during start-up:\n{server_log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    server.kill()
    sys.exit(f"botkit serve did not answer /healthz within {timeout:.0f} s:\n{server_log.read_text()[-3000:]}")


# -- report ----------------------------------------------------------------------------------------
def first(answers: list[Answer], test: Any) -> str:
    hit = next((a for a in answers if test(a)), None)
    return "-" if hit is None else f"{hit.at + hit.ms / 1000:.1f}"  # when its reply came


def row(run: Run) -> list[Any]:
    idle = [a.ms for a in run.idle]
    during = [a.ms for a in run.during]
    v0, v1 = run.versions
    both = run.during + run.after
    return [run.label, percentile(idle, 0.5), max(idle), percentile(during, 0.5), percentile(during, 0.95),
            max(during) if during else None, run.import_s, len(run.during),
            sum(a.timed_out for a in both), first(both, lambda a: a.kb_version == v1),
            first(both, lambda a: bool(a.cited_new)), f"{v0}→{v1}", run.server_embedded]


def timeline(run: Run, slow_ms: float = 1000) -> str:
    """The questions that waited over a second, and when each KB version was first and last served."""
    answers = run.during + run.after
    slow = [f"{a.at:.1f}s: {'TIMEOUT' if a.timed_out else f'{a.ms / 1000:.1f}s'}" for a in answers if a.ms > slow_ms]
    spans = []
    for v in dict.fromkeys(a.kb_version for a in answers):
        at = [a.at for a in answers if a.kb_version == v]
        spans.append(f"v{v} {min(at):.1f}-{max(at):.1f}s")
    return (f"{run.label}: served {', '.join(spans)}; {len(slow)} questions over {slow_ms / 1000:.0f} s"
            + (f" (sent at: waited) {'; '.join(slow[:12])}" + (" ..." if len(slow) > 12 else "") if slow else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--articles", type=int, default=300, help="generated articles imported during the run")
    p.add_argument("--questions", type=int, default=10, help="questions asked while nothing else runs")
    p.add_argument("--baseline", default="d825cb4", help="the revision to compare with (default: before the fix)")
    p.add_argument("--no-baseline", action="store_true", help="only this working tree")
    p.add_argument("--interval", type=float, default=0.5,
                   help="seconds from one question to the next during the import (longer if a reply takes longer)")
    p.add_argument("--max-wait", type=float, default=120, help="seconds a question may wait for its reply")
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as run_all.sh: spinning OpenMP workers on a shared box

    from botkit.cpu import describe

    print_header("customers asking while someone imports into the KB: reply latency (issue 9, defect 2)", [
        f"CPU: {describe()}",
        ("demo project served by `botkit -v serve` (child process); `botkit kb import` of generated Markdown "
         "articles in a second child; the customer (this process) asks one question at a time over the web chat "
         "websocket, each in a new conversation; latency = send → reply frame"),
        (f"during the import a question starts every {args.interval:g} s, or as soon as the previous reply came "
         "if later"),
        ("during import: every other question is about a generated product ('new' = the reply cites a generated "
         "article); kb_version from /healthz after each reply; 'server embedded' = chunks the server embedded "
         "itself (its 'caught up ... embedded' log lines; n/a where that revision does not log it)"),
        f"a question unanswered after {args.max_wait:.0f} s counts as a timeout at {args.max_wait:.0f} s"])

    gen = articles(args.articles)
    folder = workdir() / "articles"
    write_articles(folder, gen)
    revisions: list[tuple[str, Path]] = []
    tree: Path | None = None
    if not args.no_baseline:
        rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        tree = workdir("bk-base-") / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True,
                       capture_output=True)
        revisions.append((f"before ({rev})", tree))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    revisions.append((f"after ({head}+tree)", REPO))
    runs: list[Run] = []
    try:
        for label, code in revisions:
            runs.append(run_revision(label, code, folder, gen, args))
    finally:
        if tree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    print_table(["scenario", "idle p50 ms", "idle max ms", "import p50 ms", "import p95 ms", "import max ms",
                 "import s", "asked", "timeouts", "new version by s", "new cited by s", "kb version",
                 "server embedded"], [row(r) for r in runs],
                title=f"{args.articles} articles ({runs[-1].chunks_added} chunks) imported while asking; "
                      f"{args.questions} idle questions")
    print("asked = questions asked while the import ran; 'by s' = seconds after the import started that the first "
          "reply from the new KB version (citing a generated article) came back")
    for r in runs:
        print(timeline(r))
        for note in r.notes:
            print(f"note: {r.label}: {note}")
    print_footer()


if __name__ == "__main__":
    main()
