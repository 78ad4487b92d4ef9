"""Follow-up resolution on the demo help centre: acc@1 of a conversation's last turn.

Each case of benchmarks/data/followups.jsonl is a conversation (the customer's turns) and the
article or FAQ its last turn needs. Every turn goes through the real engine (MiniLM + FAISS +
BM25 on demo/kb, the extractive responder, SQLite), and the last reply's first source (or, for
a clarifying question, its first option) is compared with the expected id. Three readings of
the last turn, in the same run:

* alone: the last turn in a fresh conversation (the single-turn baseline);
* text-only (before): ``resolve_followup``, the previous question glued in front of any short
  pronoun- or connective-led message, one search;
* compared (now): ``read_in_context``, the message searched alone and, when it may lean on the
  conversation, with the previous question's key terms; the clearer margin wins.

The first 20 cases are the dev split (the rules were chosen on them), the rest the test split
(reported only). Escalation rules are off so that every turn is answered.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, fmt, log, parser, print_footer, print_header, print_table, workdir

CASES = REPO / "benchmarks" / "data" / "followups.jsonl"
DEV_SIZE = 20
MODES = ("alone", "text-only", "compared")


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _text_only(text: str, history: Sequence[Any], search: Any, *, max_words: int,
                     unclear_margin: float = 0.02) -> tuple[str, Any]:
    """The engine's reading before ``read_in_context``: one search on ``resolve_followup``'s text."""
    from botkit.context import resolve_followup

    query = resolve_followup(text, history, max_words)
    return query, await search(query)


async def run(cases: list[dict[str, Any]], mode: str, root: Path) -> list[dict[str, Any]]:
    """Every case through a fresh engine conversation; what the last turn was answered with."""
    import botkit.engine
    from botkit.app.compose import build_engine
    from botkit.context import read_in_context
    from botkit.engine import Engine
    from botkit.project import Project
    from botkit.store import SQLiteConversationStore
    from botkit.types import IncomingMessage

    project = Project.load(root)
    built = build_engine(project, progress=False,
                         store=SQLiteConversationStore(workdir() / f"conversations-{mode}.sqlite3"))
    engine = Engine(retriever=built.retriever, responder=built.responder, store=built.store, rules=[],
                    config=built.config)
    botkit.engine.read_in_context = _text_only if mode == "text-only" else read_in_context
    out = []
    try:
        async with engine:
            for i, case in enumerate(cases):
                turns = case["turns"][-1:] if mode == "alone" else case["turns"]
                clarified = False
                for j, text in enumerate(turns):
                    reply = await engine.handle(IncomingMessage(f"{mode}-{i}", text))
                    if j < len(turns) - 1 and reply.action == "clarify":
                        clarified = True
                top = (reply.sources or reply.options or (None,))[0]
                out.append({"predicted": top.id if top else None, "query": reply.resolved_query,
                            "clarified_before": clarified, "action": reply.action})
    finally:
        botkit.engine.read_in_context = read_in_context
    return out


def accuracy(cases: list[dict[str, Any]], results: list[dict[str, Any]], indices: range) -> float:
    return sum(results[i]["predicted"] == cases[i]["expected"] for i in indices) / len(indices)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--cases", type=Path, default=CASES)
    p.add_argument("--verbose", action="store_true", help="each case's last query and answer, on stderr")
    args = p.parse_args()
    cases = load_cases(args.cases)
    dev, test = range(0, DEV_SIZE), range(DEV_SIZE, len(cases))
    shown = args.cases.relative_to(REPO) if args.cases.is_relative_to(REPO) else args.cases
    print_header("follow-up resolution: acc@1 of the last turn, demo KB, extractive responder", [
        f"{len(cases)} conversations from {shown}: first {DEV_SIZE} = dev (rules chosen on it), "
        f"{len(test)} = test (reported only)",
        "prediction = the reply's first source, or a clarifying question's first option; escalation rules off"])
    root = workdir() / "demo"
    shutil.copytree(REPO / "demo", root, ignore=shutil.ignore_patterns(".botkit"))
    from botkit.app.cli import main as cli

    cli(["--project", str(root), "kb", "import"])
    results = {}
    for mode in MODES:
        log(f"reading: {mode}")
        results[mode] = asyncio.run(run(cases, mode, root))
    labels = {"alone": "last turn alone (single-turn baseline)", "text-only": "resolve_followup (before)",
              "compared": "read_in_context (now)"}
    print_table(["reading of the last turn", f"dev acc@1 (n={len(dev)})", f"test acc@1 (n={len(test)})"],
                [[labels[m], fmt(accuracy(cases, results[m], dev)), fmt(accuracy(cases, results[m], test))]
                 for m in MODES])
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i in test:
        by_kind[cases[i].get("kind", "-")].append(i)
    print_table(["test cases by kind", "n", *MODES],
                [[kind, len(ids), *(fmt(sum(results[m][i]["predicted"] == cases[i]["expected"] for i in ids) / len(ids))
                                    for m in MODES)] for kind, ids in sorted(by_kind.items())])
    clarified = sum(r["clarified_before"] for r in results["compared"])
    print(f"\nconversations whose earlier turn got a clarifying question (now): {clarified} of {len(cases)}")
    if args.verbose:
        for i, case in enumerate(cases):
            split = "dev" if i in dev else "test"
            marks = " ".join(("+" if results[m][i]["predicted"] == case["expected"] else "-") for m in MODES)
            log(f"{split} {marks} {case['expected']}: {results['compared'][i]['query']!r} -> "
                f"{results['compared'][i]['predicted']} (before: {results['text-only'][i]['predicted']})")
    print_footer()


if __name__ == "__main__":
    main()
