"""Analytics for operators: the figures of the ``/analytics`` page and of ``botkit report``.

One pure computation over what the conversation store holds (read through
:meth:`ConversationStore.stored_conversations`, so every backend gets it); the page's JSON API
and the command line both call :func:`build_report`, so they cannot disagree. Every figure is
defined in docs/analytics.md. In short, for a range ``[since, until)`` in UTC:

* conversation figures (count, containment, CSAT, first-response and resolution times) are
  about the conversations *started* in the range;
* event figures (turns, hand-offs, thumbs, unanswered questions, citations) count the events
  whose own time lies in the range, whichever conversation they belong to;
* ``series`` buckets the same figures by UTC day or ISO week (Monday), every bucket of the
  range present (zeros included).

Unanswered questions are grouped by their words (no model needed, so a report is instant); the
FAQ proposals (training.gaps, reviewed in the KB editor) cluster agent-answered questions with
the embedder.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from botkit.errors import BotkitError
from botkit.store import ConversationStore, StoredConversation
from botkit.types import Turn

Bucket = Literal["day", "week"]
BUCKETS: tuple[str, ...] = ("day", "week")
MAX_BUCKETS = 2000  # about five and a half years of days
TOP_ARTICLES = 10
MAX_THUMBED_DOWN = 50
MAX_CLUSTERS = 50
MAX_EXAMPLES = 5
CLUSTER_THRESHOLD = 0.5  # Dice similarity of two questions' words to share a cluster
PROPOSALS_LINK = "/kb#proposals"
_RELATIVE = re.compile(r"^(\d{1,5})d$")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that say nothing about what was asked, the framing of a request included ("do you offer",
# "is it possible"); English only: other languages keep all their words.
_STOP = frozenset("""a an the and or but if to of in on at for from with by about as is are was were be been am do does
did can could would should will shall may might must i me my we our you your he she it its they them their this that
these those there here what which who whom how when where why please hi hello thanks thank just any some get got
have has had not no yes offer available possible want need like know tell help also still""".split())
_DOUBLED = re.compile(r"([b-df-hj-np-tv-xz])\1$")  # shipp -> ship, wrapp -> wrap (not ll, ss, zz)


class ReportRangeError(BotkitError):
    """A report's date range or bucket was refused (unreadable date, since after until, too many buckets)."""


# -- the range --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportRange:
    """``[since, until)`` in UTC (None: unbounded) and the series' bucket."""

    since: datetime | None = None
    until: datetime | None = None  # exclusive
    bucket: Bucket = "day"

    def __contains__(self, at: object) -> bool:
        if not isinstance(at, datetime):
            return False
        at = _utc(at)
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _parse_when(text: str, what: str, now: datetime, *, end: bool) -> datetime:
    """A date (``2026-03-02``: the start of that UTC day; for ``until`` the end of it), a
    datetime (ISO 8601; without an offset: UTC) or ``Nd`` (N days before today, UTC)."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        day = _utc(now).date() - timedelta(days=int(relative.group(1)))
        return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise ReportRangeError(f"{what} {text!r} is not a date: give YYYY-MM-DD (UTC), an ISO 8601 time "
                               "such as 2026-03-02T09:00:00+00:00, or Nd for N days ago (30d)") from None


def parse_range(since: str | None = None, until: str | None = None, bucket: str | None = None, *,
                now: datetime | None = None) -> ReportRange:
    """The range that ``--since``/``--until``/``--bucket`` (or the API's query) name; empty
    strings mean unbounded. ``until`` as a date includes that whole day."""
    now = now or datetime.now(UTC)
    bucket = (bucket or "day").strip() or "day"
    if bucket not in BUCKETS:
        raise ReportRangeError(f"bucket {bucket!r} is not one of {', '.join(BUCKETS)}")
    start = _parse_when(since, "since", now, end=False) if since and since.strip() else None
    stop = _parse_when(until, "until", now, end=True) if until and until.strip() else None
    if start is not None and stop is not None:
        if start >= stop:
            raise ReportRangeError(f"since ({start:%Y-%m-%d %H:%M}) must come before until ({stop:%Y-%m-%d %H:%M}, "
                                   "exclusive); swap them or widen the range")
        count = len(_bucket_keys(start, stop - timedelta(microseconds=1), bucket))  # type: ignore[arg-type]
        if count > MAX_BUCKETS:
            raise ReportRangeError(f"that range has {count} {bucket}s (at most {MAX_BUCKETS}): "
                                   "narrow it or bucket by week")
    return ReportRange(start, stop, bucket)  # type: ignore[arg-type]


def bucket_of(at: datetime, bucket: Bucket) -> str:
    """The bucket key of a time: its UTC date, or the Monday of its ISO week (``2026-03-02``)."""
    day = _utc(at).date()
    if bucket == "week":
        day -= timedelta(days=day.weekday())
    return day.isoformat()


def _bucket_keys(first: datetime, last: datetime, bucket: Bucket) -> list[str]:
    day, end = date.fromisoformat(bucket_of(first, bucket)), date.fromisoformat(bucket_of(last, bucket))
    step = timedelta(days=7 if bucket == "week" else 1)
    if (end - day) // step > MAX_BUCKETS:
        return [""] * (MAX_BUCKETS + 1)  # only its length is looked at
    keys = []
    while day <= end:
        keys.append(day.isoformat())
        day += step
    return keys


# -- unanswered questions, grouped by their words -----------------------------------------------

def _stem(word: str) -> str:
    """A light English stem: engraving, engraved, engrave -> engrav; items -> item; shipping -> ship."""
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if _DOUBLED.search(word) and word[-1] not in "lsz":
        word = word[:-1]
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def question_words(text: str) -> frozenset[str]:
    """What a question is about: its words, lower-cased and stemmed, without stop words."""
    return frozenset(_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Dice similarity of two word sets, 2|a&b| / (|a|+|b|) (1.0 for two empty ones: both said nothing)."""
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / (len(a) + len(b))


def cluster_questions(questions: Sequence[str], threshold: float = CLUSTER_THRESHOLD) -> list[list[int]]:
    """Greedy and deterministic: each question joins the cluster whose first question it
    resembles most (:func:`similarity` >= ``threshold``; the earlier cluster on a tie), else
    starts one. Clusters of indexes, in input order."""
    seeds: list[frozenset[str]] = []
    clusters: list[list[int]] = []
    for i, q in enumerate(questions):
        words = question_words(q)
        best, best_sim = -1, threshold
        for c, seed in enumerate(seeds):
            sim = similarity(words, seed)
            if sim >= best_sim and (best < 0 or sim > best_sim):
                best, best_sim = c, sim
        if best < 0:
            seeds.append(words)
            clusters.append([i])
        else:
            clusters[best].append(i)
    return clusters


# -- figures ------------------------------------------------------------------------------------

def duration_stats(seconds: Sequence[float]) -> dict[str, Any]:
    """``count``, ``mean_s``, ``median_s`` and ``p90_s`` (nearest rank), to 0.1 s; None without data."""
    if not seconds:
        return {"count": 0, "mean_s": None, "median_s": None, "p90_s": None}
    ordered = sorted(seconds)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {"count": len(ordered), "mean_s": round(statistics.fmean(ordered), 1),
            "median_s": round(float(statistics.median(ordered)), 1), "p90_s": round(p90, 1)}


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _ranked(counter: Counter[str]) -> list[dict[str, Any]]:
    return [{"name": name, "count": n} for name, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]


def _question_before(turns: Sequence[Turn], index: int) -> str:
    """The customer message a bot turn answered: the nearest customer turn before it."""
    for t in reversed(turns[:index]):
        if t.role == "customer":
            return t.text
    return ""


def unanswered(turn: Turn) -> bool:
    """A bot turn that could not answer: it declined (``no_answer``), or it handed over because
    nothing it found was likely enough (the ``low_confidence`` rule)."""
    if turn.role != "bot":
        return False
    return turn.action == "no_answer" or (turn.action == "escalate" and turn.escalation is not None
                                          and turn.escalation.reason == "low_confidence")


@dataclass
class _Series:
    conversations: int = 0
    contained: int = 0
    turns: int = 0
    handoffs: int = 0
    unanswered: int = 0
    up: int = 0
    down: int = 0
    ratings: list[int] = field(default_factory=list)


@dataclass
class ReportBuilder:
    """Adds conversations one at a time (a store is read in pages, never held whole)."""

    range: ReportRange
    conversations: int = 0
    contained: int = 0
    closed: int = 0
    channels: Counter[str] = field(default_factory=Counter)
    roles: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    handoff_status: Counter[str] = field(default_factory=Counter)
    first_response: list[float] = field(default_factory=list)
    agent_first_response: list[float] = field(default_factory=list)
    resolution: list[float] = field(default_factory=list)
    ratings: Counter[int] = field(default_factory=Counter)
    up: int = 0
    down: int = 0
    citations: Counter[str] = field(default_factory=Counter)
    cited_up: Counter[str] = field(default_factory=Counter)
    cited_down: Counter[str] = field(default_factory=Counter)
    titles: dict[str, str] = field(default_factory=dict)
    questions: list[tuple[datetime, str, str]] = field(default_factory=list)  # (at, conversation, text)
    thumbed_down: list[dict[str, Any]] = field(default_factory=list)
    series: defaultdict[str, _Series] = field(default_factory=lambda: defaultdict(_Series))

    def add(self, record: StoredConversation) -> None:
        conv, turns, handoffs = record.conversation, record.turns, record.handoffs
        rng, bucket = self.range, self.range.bucket
        if conv.started_at in rng:
            self._conversation(record)
        for i, t in enumerate(turns):
            if t.at not in rng:
                continue
            s = self.series[bucket_of(t.at, bucket)]
            self.roles[t.role] += 1
            s.turns += 1
            if t.role != "bot":
                continue
            self.actions[t.action or "answer"] += 1
            if unanswered(t):
                s.unanswered += 1
                self.questions.append((_utc(t.at), conv.id, _question_before(turns, i)))
            for src in t.sources:
                self.citations[src.id] += 1
                self.titles[src.id] = src.title
                if t.feedback > 0:
                    self.cited_up[src.id] += 1
                elif t.feedback < 0:
                    self.cited_down[src.id] += 1
            if t.feedback > 0:
                self.up += 1
                s.up += 1
            elif t.feedback < 0:
                self.down += 1
                s.down += 1
                self.thumbed_down.append({
                    "conversation": conv.id, "turn": t.seq, "at": _utc(t.at).isoformat(),
                    "question": _question_before(turns, i), "answer": t.text[:500],
                    "sources": [{"id": src.id, "title": src.title} for src in t.sources]})
        for k, h in enumerate(handoffs):
            if h.created_at not in rng:
                continue
            self.series[bucket_of(h.created_at, bucket)].handoffs += 1
            self.reasons[h.reason] += 1
            self.rules[h.rule] += 1
            self.handoff_status[h.status] += 1
            later = handoffs[k + 1].created_at if k + 1 < len(handoffs) else None
            reply = next((t for t in turns if t.role == "agent" and t.at >= h.created_at
                          and (later is None or t.at < later)), None)
            if reply is not None:
                self.agent_first_response.append((reply.at - h.created_at).total_seconds())

    def _conversation(self, record: StoredConversation) -> None:
        conv, turns, handoffs = record.conversation, record.turns, record.handoffs
        s = self.series[bucket_of(conv.started_at, self.range.bucket)]
        self.conversations += 1
        s.conversations += 1
        self.channels[conv.channel] += 1
        if not handoffs:
            self.contained += 1
            s.contained += 1
        if conv.satisfaction is not None:
            self.ratings[conv.satisfaction] += 1
            s.ratings.append(conv.satisfaction)
        first = next((i for i, t in enumerate(turns) if t.role == "customer"), None)
        if first is not None:
            asked = turns[first].at
            reply = next((t for t in turns[first + 1:] if t.role in ("bot", "agent")), None)
            if reply is not None:
                self.first_response.append((reply.at - asked).total_seconds())
        if conv.status == "closed":
            self.closed += 1
            end = next((h.closed_at for h in reversed(handoffs) if h.status == "closed" and h.closed_at), None)
            if end is not None:
                start = turns[first].at if first is not None else conv.started_at
                self.resolution.append((end - start).total_seconds())

    # -- the result ---------------------------------------------------------------------------
    def _clusters(self) -> list[dict[str, Any]]:
        self.questions.sort(key=lambda q: (q[0], q[1]))
        texts = [q[2] for q in self.questions]
        out: list[dict[str, Any]] = []
        for members in cluster_questions(texts):
            phrasings = Counter(texts[i].strip() for i in members)
            first_seen: dict[str, int] = {}
            for i in members:
                first_seen.setdefault(texts[i].strip(), i)
            ranked = sorted(phrasings, key=lambda q: (-phrasings[q], first_seen[q]))
            out.append({"question": ranked[0] or "(no words)", "count": len(members),
                        "conversations": sorted({self.questions[i][1] for i in members}),
                        "examples": ranked[:MAX_EXAMPLES],
                        "last_at": max(self.questions[i][0] for i in members).isoformat()})
        out.sort(key=lambda c: (-int(c["count"]), str(c["question"])))
        return out[:MAX_CLUSTERS]

    def _series(self) -> list[dict[str, Any]]:
        rng = self.range
        keys = sorted(self.series)
        if rng.since is not None or rng.until is not None:
            first = rng.since or (datetime.fromisoformat(keys[0]).replace(tzinfo=UTC) if keys else None)
            last = (rng.until - timedelta(microseconds=1)) if rng.until is not None else (
                datetime.fromisoformat(keys[-1]).replace(tzinfo=UTC) if keys else None)
            if first is not None and last is not None and first <= last:
                keys = _bucket_keys(first, last, rng.bucket)
        elif keys:
            keys = _bucket_keys(datetime.fromisoformat(keys[0]).replace(tzinfo=UTC),
                                datetime.fromisoformat(keys[-1]).replace(tzinfo=UTC), rng.bucket)
        if len(keys) > MAX_BUCKETS:
            raise ReportRangeError(f"the stored conversations span {len(keys) - 1}+ {rng.bucket}s (at most "
                                   f"{MAX_BUCKETS}): give a range (since/until) or bucket by week")
        rows = []
        for key in keys:
            s = self.series.get(key) or _Series()
            rows.append({"bucket": key, "conversations": s.conversations, "contained": s.contained,
                         "containment": _ratio(s.contained, s.conversations), "turns": s.turns,
                         "handoffs": s.handoffs, "unanswered": s.unanswered, "up": s.up, "down": s.down,
                         "rated": len(s.ratings),
                         "csat_mean": round(statistics.fmean(s.ratings), 2) if s.ratings else None})
        return rows

    def result(self) -> dict[str, Any]:
        rng = self.range
        rated = sum(self.ratings.values())
        satisfied = self.ratings[4] + self.ratings[5]
        mean = sum(k * n for k, n in self.ratings.items()) / rated if rated else None
        top = sorted(self.citations, key=lambda a: (-self.citations[a], a))[:TOP_ARTICLES]
        down = sorted(self.thumbed_down, key=lambda d: (d["at"], d["conversation"], d["turn"]), reverse=True)
        return {
            "range": {"since": rng.since.isoformat() if rng.since else None,
                      "until": rng.until.isoformat() if rng.until else None,
                      "bucket": rng.bucket, "timezone": "UTC"},
            "conversations": {"total": self.conversations, "contained": self.contained,
                              "handed_off": self.conversations - self.contained,
                              "containment": _ratio(self.contained, self.conversations), "closed": self.closed,
                              "by_channel": dict(sorted(self.channels.items()))},
            "turns": {"total": sum(self.roles.values()), "customer": self.roles["customer"],
                      "bot": self.roles["bot"], "agent": self.roles["agent"], "notes": self.roles["system"]},
            "bot_actions": dict(sorted(self.actions.items())),
            "handoffs": {"total": sum(self.reasons.values()), "by_reason": _ranked(self.reasons),
                         "by_rule": _ranked(self.rules), "by_status": dict(sorted(self.handoff_status.items()))},
            "times": {"first_response": duration_stats(self.first_response),
                      "agent_first_response": duration_stats(self.agent_first_response),
                      "resolution": duration_stats(self.resolution)},
            "satisfaction": {"rated": rated, "mean": round(mean, 2) if mean is not None else None,
                             "satisfied": satisfied, "csat": _ratio(satisfied, rated),
                             "distribution": {str(k): self.ratings[k] for k in range(1, 6)}},
            "feedback": {"up": self.up, "down": self.down, "rated": self.up + self.down,
                         "up_share": _ratio(self.up, self.up + self.down)},
            "unanswered": {"total": len(self.questions), "clusters": self._clusters(),
                           "proposals": PROPOSALS_LINK},
            "top_articles": [{"id": a, "title": self.titles[a], "citations": self.citations[a],
                              "up": self.cited_up[a], "down": self.cited_down[a]} for a in top],
            "thumbed_down": down[:MAX_THUMBED_DOWN],
            "series": self._series(),
        }


@dataclass(frozen=True)
class ProposalRef:
    """An open FAQ proposal (training.gaps), as far as linking a group of questions to it needs."""

    id: str
    title: str
    questions: tuple[str, ...]
    count: int  # conversations that asked


def link_proposals(report: dict[str, Any], proposals: Sequence[ProposalRef]) -> dict[str, Any]:
    """``report`` with each unanswered group's ``proposal``: the open FAQ proposal one of whose
    phrasings resembles one of the group's (:func:`similarity` >= the grouping threshold; the
    most similar, then the most asked), else None; and ``open_proposals``, how many are open."""
    refs = [(p, [w for w in map(question_words, (p.title, *p.questions)) if w]) for p in proposals]
    for group in report["unanswered"]["clusters"]:
        words = [w for w in map(question_words, group["examples"]) if w]
        best: ProposalRef | None = None
        best_sim = CLUSTER_THRESHOLD
        for p, phrasings in refs:
            sim = max((similarity(a, b) for a in words for b in phrasings), default=0.0)
            if sim > best_sim or (best is None and sim >= best_sim):
                best, best_sim = p, sim
        group["proposal"] = None if best is None else {"id": best.id, "title": best.title, "count": best.count}
    report["unanswered"]["open_proposals"] = len(proposals)
    return report


def compute(records: Iterable[StoredConversation], rng: ReportRange) -> dict[str, Any]:
    """The report (JSON-ready; see docs/analytics.md) of ``records`` for ``rng``."""
    builder = ReportBuilder(rng)
    for record in records:
        builder.add(record)
    return builder.result()


async def build_report(store: ConversationStore, rng: ReportRange) -> dict[str, Any]:
    """The report of everything ``store`` holds, for ``rng``: what the page and the CLI show."""
    builder = ReportBuilder(rng)
    async for record in store.stored_conversations():
        builder.add(record)
    return builder.result()


__all__ = ["BUCKETS", "Bucket", "ProposalRef", "ReportBuilder", "ReportRange", "ReportRangeError", "build_report",
           "bucket_of", "cluster_questions", "compute", "duration_stats", "link_proposals", "parse_range",
           "question_words", "similarity", "unanswered"]
