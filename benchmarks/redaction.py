"""PII redaction quality: per-kind precision/recall/F1 on the hand-written fixtures, before and after.

Scores :class:`training.redact.Redactor` on ``tests/fixtures/pii/realworld.jsonl`` and
``tests/fixtures/pii/heldout.jsonl`` (the second written blind to the redactor's rules;
provenance in their README) and, side by side, a baseline
redactor loaded from git (``--baseline REV``, default: the commit that first added
``training/redact.py``) into a temporary module, so that no old copy lives in the package.

Matching: a predicted span is a true positive when it overlaps a gold span of the same kind
that no other prediction has claimed ("overlap"); "exact" also requires the same boundaries.
Unmatched predictions are false positives, unmatched gold spans false negatives.

    python benchmarks/redaction.py [--fixture PATH ...] [--baseline REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FIXTURE = REPO / "tests" / "fixtures" / "pii" / "realworld.jsonl"
HELDOUT = REPO / "tests" / "fixtures" / "pii" / "heldout.jsonl"
"""Written blind to the redactor, after it was tuned on ``FIXTURE`` (provenance in the README)."""

Span = tuple[int, int, str]  # start, end, kind
Finder = Callable[[str], Iterable[Span]]


def load_fixture(path: Path = FIXTURE) -> list[tuple[str, list[Span]]]:
    """(text, gold spans) per line; each gold string is located at its first occurrence."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        spans = []
        for p in row["pii"]:
            start = row["text"].find(p["text"])
            if start < 0:
                raise ValueError(f"{path}:{n}: {p['text']!r} does not occur in the line's text; fix the fixture")
            spans.append((start, start + len(p["text"]), p["kind"]))
        rows.append((row["text"], spans))
    return rows


def score(find: Finder, rows: list[tuple[str, list[Span]]], exact: bool = False) -> dict[str, Counter[str]]:
    """Counters tp/fp/fn per kind (and "ALL")."""
    out: dict[str, Counter[str]] = {}

    def bump(kind: str, what: str) -> None:
        out.setdefault(kind, Counter())[what] += 1
        out.setdefault("ALL", Counter())[what] += 1

    for text, gold in rows:
        free = list(gold)
        for start, end, kind in find(text):
            hit = next((g for g in free if g[2] == kind and (
                (g[0], g[1]) == (start, end) if exact else start < g[1] and g[0] < end)), None)
            if hit:
                free.remove(hit)
                bump(kind, "tp")
            else:
                bump(kind, "fp")
        for g in free:
            bump(g[2], "fn")
    return out


def prf(c: Counter[str]) -> tuple[float, float, float]:
    p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
    r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def finder(redactor: Any) -> Finder:
    return lambda text: [(r.start, r.end, r.kind) for r in redactor.find(text)]


def baseline_redactor(rev: str | None) -> Any:
    """A Redactor from ``training/redact.py`` at ``rev`` (default: the file's first commit)."""
    if rev is None:
        rev = subprocess.run(["git", "log", "--format=%H", "--diff-filter=A", "--", "training/redact.py"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout.split()[-1]
    source = subprocess.run(["git", "show", f"{rev}:training/redact.py"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix="_redact_baseline.py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("redact_baseline", f.name)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["redact_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    Path(f.name).unlink()
    return module.Redactor()


def table(results: dict[str, dict[str, Counter[str]]]) -> str:
    kinds = sorted({k for r in results.values() for k in r if k != "ALL"}) + ["ALL"]
    head = f"{'kind':8} {'gold':>4} " + " ".join(f"{name:>22}" for name in results)
    sub = f"{'':8} {'':>4} " + " ".join(f"{'P':>7}{'R':>7}{'F1':>8}" for _ in results)
    lines = [head, sub]
    for kind in kinds:
        first = next(iter(results.values())).get(kind, Counter())
        gold = first["tp"] + first["fn"]
        cells = []
        for r in results.values():
            p, rc, f1 = prf(r.get(kind, Counter()))
            cells.append(f"{p:7.2f}{rc:7.2f}{f1:8.2f}")
        lines.append(f"{kind:8} {gold:>4} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from training.redact import Redactor

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", type=Path, action="append", help="default: both fixtures")
    ap.add_argument("--baseline", default=None, help="git revision of the baseline redactor")
    args = ap.parse_args(argv)
    before, after = finder(baseline_redactor(args.baseline)), finder(Redactor())
    for fixture in args.fixture or [FIXTURE, HELDOUT]:
        rows = load_fixture(fixture)
        print(f"# PII redaction on {fixture.relative_to(REPO) if fixture.is_relative_to(REPO) else fixture}"
              f" ({len(rows)} lines, {sum(len(g) for _, g in rows)} spans)\n")
        for exact in (False, True):
            print(f"## {'exact' if exact else 'overlap'} span match\n")
            print(table({"before": score(before, rows, exact), "after": score(after, rows, exact)}))
            print()


if __name__ == "__main__":
    main()
