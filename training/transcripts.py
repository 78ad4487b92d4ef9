"""Ingest support transcripts into a prepared, redacted training data set.

Readers
    :func:`read_jsonl`  one conversation per line: ``{"id", "messages": [{"role", "text", "time"?}], "meta"?}``
    :func:`read_csv`    ``conversation_id, time, speaker, text`` rows, grouped by conversation, ordered by time
    :func:`read_store`  botkit's own SQLite conversation store (turns, hand-offs, feedback)
    :func:`read_conversations`  the same from any :class:`~botkit.store.ConversationStore` backend

:func:`prepare` normalises, redacts (before anything is written), filters what should not be
learnt, drops exact and near duplicates, splits train/validation by conversation id hash and
writes the directory described in :mod:`training.types`.

Nothing is dropped silently: every rejected line/row and every dropped conversation is counted
in a :class:`Ledger` with its reason and a few ``file:line`` examples (no message text, so the
report never repeats personal data).

Decisions
    * Files are streamed line by line (a line longer than ``max_line_bytes`` is skipped and
      counted); a file over ``max_bytes`` raises :class:`TranscriptError` before it is read.
    * A line that is not valid UTF-8 is re-decoded as cp1252 (the usual culprit: text pasted
      from Windows tools) and counted as ``re-decoded``; pass ``encoding_fallback=None`` to
      reject such lines instead. A NUL byte in the first 8 KiB marks a binary file, rejected whole.
    * An unknown role rejects the record: the whole JSONL line, or the CSV row *and* its
      conversation (``has rejected rows``): we never learn from a conversation with a hole in it.
    * Filters run before de-duplication, so a good conversation is never dropped as the
      near-duplicate of one that is filtered out anyway.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import random
import re
import sqlite3
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from botkit.errors import BotkitError, InputProblem
from botkit.store import ConversationStore, SQLiteConversationStore
from training.redact import Redactor
from training.types import ROLES, Message, Transcript, write_jsonl

T = TypeVar("T")
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB per input file
DEFAULT_MAX_LINE_BYTES = 4 << 20  # 4 MiB per line (one conversation)
EXAMPLES_PER_REASON = 5

ROLE_ALIASES: dict[str, str] = {
    **{r: r for r in ROLES},
    "user": "customer", "client": "customer", "visitor": "customer", "caller": "customer", "shopper": "customer",
    "human_agent": "agent", "staff": "agent", "support": "agent", "operator": "agent", "rep": "agent",
    "advisor": "agent", "csr": "agent",
    "assistant": "bot", "botkit": "bot", "ai": "bot", "virtual_agent": "bot",
}


class TranscriptError(BotkitError):
    """Transcripts could not be ingested (a file too big, or nothing usable left)."""

    def __init__(self, message: str, problems: list[InputProblem] | None = None):
        self.problems = problems or []
        shown = "".join(f"\n  {p}" for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(message + shown + more)


# --------------------------------------------------------------------------------------------
# Bookkeeping
# --------------------------------------------------------------------------------------------
@dataclass
class Ledger:
    """Counts of everything read, rejected and dropped, with ``file:line`` examples per reason."""

    files: int = 0
    records: int = 0  # JSONL lines, CSV rows and store conversations seen (blank lines excluded)
    conversations: int = 0  # conversations built from accepted records
    redecoded: int = 0  # lines re-decoded from cp1252
    rejected: Counter[str] = field(default_factory=Counter)  # record-level (lines, rows)
    files_rejected: Counter[str] = field(default_factory=Counter)  # whole files
    dropped: Counter[str] = field(default_factory=Counter)  # conversation-level
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    redecoded_examples: list[str] = field(default_factory=list)

    def _example(self, reason: str, where: str, detail: str = "") -> None:
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append(f"{where}: {detail}" if detail else where)

    def reject(self, reason: str, where: str, detail: str = "", n: int = 1) -> None:
        self.rejected[reason] += n
        self._example(reason, where, detail)

    def reject_file(self, reason: str, where: str, detail: str = "") -> None:
        self.files_rejected[reason] += 1
        self._example(reason, where, detail)

    def drop(self, reason: str, where: str, detail: str = "") -> None:
        self.dropped[reason] += 1
        self._example(reason, where, detail)

    def problems(self) -> list[InputProblem]:
        out = []
        for reason, items in self.examples.items():
            for item in items:
                where, _, detail = item.partition(": ")
                path, _, line = where.rpartition(":")
                if path and line.isdigit():
                    out.append(InputProblem(path, int(line), f"{reason}: {detail}" if detail else reason))
                else:
                    out.append(InputProblem(where, None, f"{reason}: {detail}" if detail else reason))
        return out


def _role(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return ROLE_ALIASES.get(value.strip().lower().replace(" ", "_").replace("-", "_"))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


# --------------------------------------------------------------------------------------------
# Streaming lines
# --------------------------------------------------------------------------------------------
def _check_file(path: Path, ledger: Ledger, max_bytes: int | None) -> bool:
    """File-level checks; False (and counted) when the file is unusable."""
    if not path.is_file():
        ledger.reject_file("missing file", str(path))
        return False
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise TranscriptError(
            f"{path}: file is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB "
            f"(max_bytes); split it or raise the limit")
    ledger.files += 1
    with path.open("rb") as fh:
        head = fh.read(8192)
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        line = head[:head.index(0)].count(b"\n") + 1
        ledger.reject_file("binary file", f"{path}:{line}", "NUL byte; transcripts must be UTF-8 text")
        return False
    if not head.strip():
        ledger.reject_file("empty file", str(path))
        return False
    return True


def _lines(path: Path, ledger: Ledger, max_line_bytes: int,
           encoding_fallback: str | None) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, decoded line)`` without ever holding more than one line."""
    with path.open("rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, in chunks
                    raw = fh.readline(1 << 20)
                ledger.records += 1
                ledger.reject("line too long", f"{path}:{lineno}", f"over {max_line_bytes} bytes")
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if b"\x00" in raw:
                ledger.records += 1
                ledger.reject("binary line", f"{path}:{lineno}", "NUL byte")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                detail = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                if encoding_fallback is None:
                    ledger.records += 1
                    ledger.reject("invalid UTF-8", f"{path}:{lineno}", detail)
                    continue
                try:
                    text = raw.decode(encoding_fallback)
                except UnicodeDecodeError:
                    ledger.records += 1
                    ledger.reject("invalid UTF-8", f"{path}:{lineno}", detail + f", nor {encoding_fallback}")
                    continue
                ledger.redecoded += 1
                if len(ledger.redecoded_examples) < EXAMPLES_PER_REASON:
                    ledger.redecoded_examples.append(f"{path}:{lineno}: {detail}; re-decoded as {encoding_fallback}")
            yield lineno, text


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------
def read_jsonl(path: Path | str, ledger: Ledger | None = None, *, max_bytes: int | None = DEFAULT_MAX_BYTES,
               max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               encoding_fallback: str | None = "cp1252") -> Iterator[Transcript]:
    """Stream conversations from a JSONL file; bad lines are counted in ``ledger``."""
    path = Path(path)
    ledger = ledger if ledger is not None else Ledger()
    if not _check_file(path, ledger, max_bytes):
        return
    for lineno, line in _lines(path, ledger, max_line_bytes, encoding_fallback):
        if not line.strip():
            continue
        ledger.records += 1
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            ledger.reject("malformed JSON", where, f"{exc.msg} at column {exc.colno}")
            continue
        if not isinstance(obj, dict):
            ledger.reject("not a JSON object", where, f"got {type(obj).__name__}")
            continue
        cid = obj.get("id")
        if not isinstance(cid, (str, int)) or isinstance(cid, bool) or str(cid).strip() == "":
            ledger.reject("missing id", where, "each line needs an \"id\"")
            continue
        msgs = obj.get("messages")
        if not isinstance(msgs, list):
            ledger.reject("bad messages", where, "\"messages\" must be a list")
            continue
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            ledger.reject("bad meta", where, "\"meta\" must be an object")
            continue
        messages: list[Message] = []
        bad: tuple[str, str] | None = None
        for i, m in enumerate(msgs, 1):
            if not isinstance(m, dict) or not isinstance(m.get("text"), str):
                bad = ("bad message", f"message {i} needs a string \"text\"")
                break
            role = _role(m.get("role"))
            if role is None:
                bad = ("unknown role", f"message {i} has role {_short(m.get('role'))}")
                break
            t = m.get("time")
            messages.append(Message(role, m["text"], str(t) if t is not None else None))  # type: ignore[arg-type]
        if bad:
            ledger.reject(bad[0], where, bad[1])
            continue
        ledger.conversations += 1
        if not messages:
            ledger.drop("empty", where, "no messages")
            continue
        yield Transcript(str(cid), tuple(messages), where, dict(meta))


def _sort_key(time: str | None, index: int) -> tuple[int, float, int]:
    if time:
        try:
            dt = datetime.fromisoformat(time.strip().replace("Z", "+00:00"))
            if dt.tzinfo is None:
                return (0, dt.timestamp(), index)
            return (0, dt.timestamp(), index)
        except ValueError:
            pass
    return (1, 0.0, index)


def read_csv(path: Path | str, ledger: Ledger | None = None, *, max_bytes: int | None = DEFAULT_MAX_BYTES,
             max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
             encoding_fallback: str | None = "cp1252") -> list[Transcript]:
    """Read ``conversation_id, time, speaker, text`` rows; group by conversation, order by time."""
    path = Path(path)
    ledger = ledger if ledger is not None else Ledger()
    if not _check_file(path, ledger, max_bytes):
        return []
    lines = (text for _, text in _lines(path, ledger, max_line_bytes, encoding_fallback))
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        ledger.reject_file("empty file", str(path))
        return []
    except csv.Error as exc:
        ledger.reject_file("malformed CSV header", f"{path}:1", str(exc))
        return []
    cols = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in ("conversation_id", "speaker", "text") if c not in cols]
    if missing:
        ledger.reject_file("malformed CSV header", f"{path}:1", f"missing column(s) {', '.join(missing)}; "
                      "expected conversation_id, time, speaker, text")
        return []
    groups: dict[str, list[tuple[str | None, int, Message]]] = {}
    first_line: dict[str, int] = {}
    broken: set[str] = set()
    index = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            ledger.records += 1
            ledger.reject("malformed CSV row", f"{path}:{reader.line_num}", str(exc))
            continue
        if not any(c.strip() for c in row):
            continue
        ledger.records += 1
        where = f"{path}:{reader.line_num}"
        if len(row) != len(header):
            ledger.reject("malformed CSV row", where, f"{len(row)} fields, expected {len(header)}")
            continue
        cid = row[cols["conversation_id"]].strip()
        if not cid:
            ledger.reject("missing id", where, "empty conversation_id")
            continue
        first_line.setdefault(cid, reader.line_num)
        role = _role(row[cols["speaker"]])
        if role is None:
            ledger.reject("unknown role", where, f"speaker {_short(row[cols['speaker']])}")
            broken.add(cid)
            continue
        text = row[cols["text"]]
        time = row[cols["time"]].strip() or None if "time" in cols else None
        index += 1
        groups.setdefault(cid, []).append((time, index, Message(role, text, time)))  # type: ignore[arg-type]
    out = []
    for cid in sorted(set(groups) | broken, key=lambda c: first_line[c]):
        where = f"{path}:{first_line[cid]}"
        ledger.conversations += 1
        if cid in broken:
            ledger.drop("has rejected rows", where, "a row of this conversation was rejected")
            continue
        rows = sorted(groups[cid], key=lambda r: _sort_key(r[0], r[1]))
        out.append(Transcript(cid, tuple(m for _, _, m in rows), where, {}))
    return out


def read_store(db_path: Path | str, ledger: Ledger | None = None) -> list[Transcript]:
    """Conversations from botkit's SQLite conversation store (opened read-only), read through
    the :class:`~botkit.store.ConversationStore` protocol (:func:`read_conversations`).

    ``meta``: ``channel``, ``status``, ``escalated`` (had a hand-off), ``resolved_by_agent``
    (a hand-off was closed or returned and an agent wrote in the conversation), ``resolved``
    (not escalated, or resolved by an agent), ``feedback`` ({"up", "down"} thumbs on bot
    replies) and ``satisfaction`` (1-5 or null).
    """
    path = Path(db_path)
    ledger = ledger if ledger is not None else Ledger()
    if not path.is_file():
        ledger.reject_file("missing file", str(path))
        return []
    ledger.files += 1

    async def read() -> list[Transcript]:
        store = SQLiteConversationStore(path, read_only=True)
        await store.start()
        try:
            return await read_conversations(store, ledger, source=str(path))
        finally:
            await store.close()

    try:
        return _run_sync(read())
    except sqlite3.Error as exc:
        raise TranscriptError(f"{path}: not a readable botkit conversation store: {exc}") from None


async def read_conversations(store: ConversationStore, ledger: Ledger | None = None, *,
                             source: str = "store") -> list[Transcript]:
    """The conversations of any started conversation store as transcripts (``meta`` as in
    :func:`read_store`); ``source`` prefixes each transcript's ``where`` (``source:id``)."""
    ledger = ledger if ledger is not None else Ledger()
    out = []
    async for record in store.stored_conversations():
        ledger.records += 1
        conv = record.conversation
        where = f"{source}:{conv.id}"
        messages = []
        bad = None
        for t in record.turns:
            role = _role(t.role)
            if role is None:
                bad = f"turn role {_short(t.role)}"
                break
            messages.append(Message(role, t.text, _store_time(t.at)))  # type: ignore[arg-type]
        if bad:
            ledger.reject("unknown role", where, bad)
            continue
        ledger.conversations += 1
        if not messages:
            ledger.drop("empty", where, "no turns")
            continue
        statuses = [h.status for h in record.handoffs]
        escalated = bool(statuses)
        has_agent = any(m.role == "agent" for m in messages)
        resolved_by_agent = has_agent and any(s in ("returned", "closed") for s in statuses)
        open_handoff = any(s in ("waiting", "assigned") for s in statuses)
        meta = {
            "source": "store", "channel": conv.channel, "status": conv.status,
            "escalated": escalated, "resolved_by_agent": resolved_by_agent,
            "resolved": (not escalated or resolved_by_agent) and not open_handoff,
            "feedback": {"up": sum(1 for t in record.turns if t.feedback > 0),
                         "down": sum(1 for t in record.turns if t.feedback < 0)},
            "satisfaction": conv.satisfaction,
        }
        out.append(Transcript(str(conv.id), tuple(messages), where, meta))
    return out


def _store_time(at: datetime) -> str:
    """A turn's time as the SQLite store writes it (UTC, microseconds), so the transcripts read
    through the protocol carry the same text as the raw column."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _run_sync(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code; in a thread of its own when this thread already
    runs an event loop (asyncio.run refuses to nest)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def read_transcripts(paths: Iterable[Path | str], ledger: Ledger, *, max_bytes: int | None = DEFAULT_MAX_BYTES,
                     max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                     encoding_fallback: str | None = "cp1252") -> Iterator[Transcript]:
    """Read files by suffix (.jsonl, .csv, .db/.sqlite/.sqlite3); directories are searched
    (non-recursively) for .jsonl and .csv files, so a README next to the data is ignored."""
    opts: dict[str, Any] = {"max_bytes": max_bytes, "max_line_bytes": max_line_bytes,
                            "encoding_fallback": encoding_fallback}
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".jsonl", ".csv")) if p.is_dir() else [p]
        if p.is_dir() and not files:
            ledger.reject_file("no transcript files", str(p), "no .jsonl or .csv files in the directory")
        for f in files:
            suffix = f.suffix.lower()
            if suffix in (".jsonl", ".ndjson"):
                yield from read_jsonl(f, ledger, **opts)
            elif suffix == ".csv":
                yield from read_csv(f, ledger, **opts)
            elif suffix in (".db", ".sqlite", ".sqlite3"):
                yield from read_store(f, ledger)
            elif not f.exists():
                ledger.reject_file("missing file", str(f))
            else:
                ledger.reject_file("unsupported file", str(f), f"suffix {f.suffix or '(none)'!r}; use .jsonl or .csv")


# --------------------------------------------------------------------------------------------
# Normalisation, filters, de-duplication, split
# --------------------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")


def normalise_text(text: str) -> str:
    """NFC, no control or bidi characters, single spaces, at most one blank line."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " "))
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def normalise(t: Transcript) -> Transcript:
    """Normalise each message, drop empty ones, merge consecutive messages of the same role."""
    merged: list[Message] = []
    for m in t.messages:
        text = normalise_text(m.text)
        if not text:
            continue
        if merged and merged[-1].role == m.role:
            prev = merged[-1]
            merged[-1] = Message(prev.role, prev.text + "\n" + text, prev.time)
        else:
            merged.append(Message(m.role, text, m.time))
    return Transcript(t.id, tuple(merged), t.source, t.meta)


def filter_reason(t: Transcript, *, min_turns: int, min_agent_turns: int) -> str | None:
    """Why a conversation should not be learnt from, or None."""
    if not t.messages:
        return "empty"
    talk = [m for m in t.messages if m.role != "system"]
    if len(talk) < min_turns:
        return "too short"
    if sum(1 for m in talk if m.role in ("agent", "bot")) < min_agent_turns:
        return "no reply"
    if talk[-1].role == "customer":
        return "abandoned"
    meta = t.meta
    if any(meta.get(k) for k in ("flagged", "exclude", "do_not_train")):
        return "flagged"
    if meta.get("escalated") and not (meta.get("resolved_by_agent") or meta.get("resolved")):
        return "escalated unresolved"
    if meta.get("resolved") is False:
        return "unresolved"
    return None


def _content_key(t: Transcript) -> str:
    h = hashlib.sha256()
    for m in t.messages:
        h.update(m.role.encode() + b"\x1f" + m.text.encode() + b"\x1e")
    return h.hexdigest()


def _shingles(t: Transcript, k: int = 3) -> set[int]:
    words = re.findall(r"\w+|\[[A-Z_]+\]", " ".join(f"{m.role}: {m.text}" for m in t.messages).lower())
    grams = [" ".join(words[i:i + k]) for i in range(max(1, len(words) - k + 1))]
    return {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big") for g in grams}


class NearDuplicates:
    """MinHash + LSH banding: candidates share a band, then the real shingle Jaccard decides.

    Roughly O(n) for n conversations (plus the few candidate pairs per bucket).
    """

    PRIME = (1 << 61) - 1

    def __init__(self, threshold: float, num_perm: int = 64, bands: int = 16, seed: int = 0):
        rng = random.Random(seed)
        self.threshold = threshold
        self.perms = [(rng.randrange(1, self.PRIME), rng.randrange(0, self.PRIME)) for _ in range(num_perm)]
        self.rows = num_perm // bands
        self.buckets: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
        self.kept: list[tuple[str, set[int]]] = []

    def check_add(self, cid: str, shingles: set[int]) -> tuple[str, float] | None:
        """Return ``(id, similarity)`` of an earlier near duplicate, or add this one and return None."""
        p = self.PRIME
        sig = [min(((a * s + b) % p) for s in shingles) if shingles else 0 for a, b in self.perms]
        keys = [(i, tuple(sig[i * self.rows:(i + 1) * self.rows])) for i in range(len(sig) // self.rows)]
        seen: set[int] = set()
        for key in keys:
            for j in self.buckets.get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                other_id, other = self.kept[j]
                inter = len(shingles & other)
                sim = inter / (len(shingles) + len(other) - inter) if shingles or other else 1.0
                if sim >= self.threshold:
                    return other_id, sim
        idx = len(self.kept)
        self.kept.append((cid, shingles))
        for key in keys:
            self.buckets[key].append(idx)
        return None


def split_of(cid: str, validation_fraction: float, seed: int = 0) -> str:
    """``"validation"`` or ``"train"``, from a hash of the conversation id (stable across runs)."""
    return "validation" if _unit(cid, seed) < validation_fraction else "train"


def _unit(cid: str, seed: int) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{cid}".encode()).digest()[:8], "big") / 2.0 ** 64


# --------------------------------------------------------------------------------------------
# Redaction of whole transcripts
# --------------------------------------------------------------------------------------------
def _mask(text: str, redactor: Redactor) -> str:
    """The *before* side of a report example: PII spans shown as ``⟨KIND⟩``, never the original."""
    out, pos = [], 0
    for r in redactor.find(text):
        out.append(text[pos:r.start])
        out.append(f"⟨{r.kind}⟩")
        pos = r.end
    out.append(text[pos:])
    return "".join(out)


def _redact_meta(value: Any, redactor: Redactor, counts: Counter[str]) -> Any:
    if isinstance(value, str):
        text, found = redactor.redact(value)
        counts.update(r.kind for r in found)
        return text
    if isinstance(value, dict):
        return {k: _redact_meta(v, redactor, counts) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_meta(v, redactor, counts) for v in value]
    return value


def redact_transcript(t: Transcript, redactor: Redactor,
                      counts: Counter[str]) -> tuple[Transcript, list[dict[str, str]]]:
    """Redact every message, string meta value and, if needed, the id. Returns examples too."""
    messages, examples = [], []
    for m in t.messages:
        text, found = redactor.redact(m.text)
        if found:
            counts.update(r.kind for r in found)
            examples.append({"kinds": ",".join(sorted({r.kind for r in found})),
                             "before": _mask(m.text, redactor), "after": text})
        messages.append(Message(m.role, text, m.time))
    cid = t.id
    if redactor.find(cid):
        counts["ID"] += 1
        cid = "conv-" + hashlib.sha256(cid.encode()).hexdigest()[:16]
    meta = _redact_meta(t.meta, redactor, counts)
    return Transcript(cid, tuple(messages), t.source, meta), examples


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------
@dataclass
class PrepareReport:
    out_dir: str
    files: int
    records: int
    records_rejected: dict[str, int]
    files_rejected: dict[str, int]
    redecoded_lines: int
    conversations: int
    dropped: dict[str, int]
    train: int
    validation: int
    redactions: dict[str, int]
    steps: list[dict[str, Any]]
    problem_examples: dict[str, list[str]]
    redaction_examples: list[dict[str, str]]
    settings: dict[str, Any]

    @property
    def kept(self) -> int:
        return self.train + self.validation

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir, "settings": self.settings,
            "input": {"files": self.files, "records": self.records, "records_rejected": self.records_rejected,
                      "files_rejected": self.files_rejected,
                      "redecoded_lines": self.redecoded_lines, "conversations": self.conversations},
            "steps": self.steps, "dropped": self.dropped,
            "kept": {"train": self.train, "validation": self.validation, "total": self.kept},
            "redactions": self.redactions,
            "examples": {"problems": self.problem_examples, "redactions": self.redaction_examples},
        }

    def to_markdown(self) -> str:
        md = ["# Transcript preparation report", "",
              f"{self.files} file(s), {self.records} record(s) read, {self.conversations} conversation(s); "
              f"kept {self.kept} ({self.train} train, {self.validation} validation).", "",
              "## Steps", "", "| step | in | out | dropped |", "|---|---|---|---|"]
        md += [f"| {s['step']} | {s['in']} | {s['out']} | {s['in'] - s['out']} |" for s in self.steps]
        md += ["", "## Rejected files", ""]
        md += [f"- {k}: {v}" for k, v in sorted(self.files_rejected.items())] or ["- none"]
        md += ["", "## Rejected records (lines, rows)", ""]
        md += [f"- {k}: {v}" for k, v in sorted(self.records_rejected.items())] or ["- none"]
        if self.redecoded_lines:
            md.append(f"- re-decoded from cp1252 (kept): {self.redecoded_lines}")
        md += ["", "## Dropped conversations", ""]
        md += [f"- {k}: {v}" for k, v in sorted(self.dropped.items())] or ["- none"]
        md += ["", "## Redactions", ""]
        md += [f"- {k}: {v}" for k, v in sorted(self.redactions.items())] or ["- none"]
        if self.problem_examples:
            md += ["", "## Examples of problems", ""]
            for reason, items in sorted(self.problem_examples.items()):
                md += [f"- **{reason}**: " + "; ".join(f"`{i}`" for i in items)]
        if self.redaction_examples:
            md += ["", "## Examples of redactions (personal data shown as ⟨KIND⟩)", ""]
            for ex in self.redaction_examples:
                md += [f"- {ex['before']!r} → {ex['after']!r}"]
        return "\n".join(md) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def prepare(paths: Iterable[Path | str], out_dir: Path | str, *, redactor: Redactor, min_turns: int = 2,
            min_agent_turns: int = 1, near_dup_threshold: float = 0.9, validation_fraction: float = 0.1,
            seed: int = 0, store_db: Path | str | None = None, max_bytes: int | None = DEFAULT_MAX_BYTES,
            max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, encoding_fallback: str | None = "cp1252",
            examples: int = 5) -> PrepareReport:
    """Read, normalise, redact, filter, de-duplicate, split and write a prepared data set.

    Steps, each counted in the report: read → normalise (NFC, whitespace, control characters,
    same-role merge) → redact (before anything is written) → filter (empty, too short, no
    reply, abandoned, flagged, escalated without resolution) → exact duplicates → near
    duplicates (shingle Jaccard ≥ ``near_dup_threshold`` via MinHash-LSH) → split by id hash.
    Raises :class:`TranscriptError` when nothing is left.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), not {validation_fraction}")
    if not 0.0 < near_dup_threshold <= 1.0:
        raise ValueError(f"near_dup_threshold must be in (0, 1], not {near_dup_threshold}")
    out = Path(out_dir)
    ledger = Ledger()
    paths = [Path(p) for p in paths]
    steps: list[dict[str, Any]] = []

    read = list(read_transcripts(paths, ledger, max_bytes=max_bytes, max_line_bytes=max_line_bytes,
                                 encoding_fallback=encoding_fallback))
    if store_db is not None:
        read += read_store(store_db, ledger)
    steps.append({"step": "read", "in": ledger.conversations, "out": len(read)})

    normalised = []
    for t in read:
        n = normalise(t)
        if n.messages:
            normalised.append(n)
        else:
            ledger.drop("empty", t.source, "no text after normalisation")
    steps.append({"step": "normalise", "in": len(read), "out": len(normalised)})

    counts: Counter[str] = Counter()
    red_examples: list[dict[str, str]] = []
    redacted = []
    for t in normalised:
        r, ex = redact_transcript(t, redactor, counts)
        redacted.append(r)
        for e in ex:
            if len(red_examples) < examples and all(e["kinds"] != x["kinds"] for x in red_examples):
                red_examples.append(e)
    steps.append({"step": "redact", "in": len(normalised), "out": len(redacted)})

    filtered = []
    for t in redacted:
        reason = filter_reason(t, min_turns=min_turns, min_agent_turns=min_agent_turns)
        if reason:
            ledger.drop(reason, t.source, f"conversation {_short(t.id)}")
        else:
            filtered.append(t)
    steps.append({"step": "filter", "in": len(redacted), "out": len(filtered)})

    seen: dict[str, str] = {}
    unique = []
    for t in filtered:
        key = _content_key(t)
        if key in seen:
            ledger.drop("exact duplicate", t.source, f"same as {_short(seen[key])}")
        else:
            seen[key] = t.id
            unique.append(t)
    steps.append({"step": "exact duplicates", "in": len(filtered), "out": len(unique)})

    lsh = NearDuplicates(near_dup_threshold, seed=seed)
    distinct = []
    for t in unique:
        hit = lsh.check_add(t.id, _shingles(t))
        if hit:
            ledger.drop("near duplicate", t.source, f"{hit[1]:.2f} similar to {_short(hit[0])}")
        else:
            distinct.append(t)
    steps.append({"step": "near duplicates", "in": len(unique), "out": len(distinct)})

    if not distinct:
        reasons = ", ".join(f"{k} {v}"
                            for k, v in (ledger.files_rejected + ledger.rejected + ledger.dropped).most_common())
        raise TranscriptError(
            f"nothing to prepare: {ledger.records} record(s) read from {len(paths) + (store_db is not None)} "
            f"input(s) and none is usable ({reasons or 'no input'}); nothing was written",
            ledger.problems())

    train = [t for t in distinct if split_of(t.id, validation_fraction, seed) == "train"]
    validation = [t for t in distinct if split_of(t.id, validation_fraction, seed) == "validation"]
    if not validation and validation_fraction > 0 and len(distinct) >= 2:
        # tiny data sets: hold out the conversation with the lowest hash (still deterministic)
        pick = min(distinct, key=lambda t: _unit(t.id, seed))
        validation = [pick]
        train = [t for t in train if t is not pick]
    steps.append({"step": "split", "in": len(distinct), "out": len(train) + len(validation)})

    report = PrepareReport(
        out_dir=str(out), files=ledger.files, records=ledger.records, records_rejected=dict(ledger.rejected),
        files_rejected=dict(ledger.files_rejected),
        redecoded_lines=ledger.redecoded, conversations=ledger.conversations, dropped=dict(ledger.dropped),
        train=len(train), validation=len(validation), redactions=dict(counts), steps=steps,
        problem_examples={**{k: list(v) for k, v in ledger.examples.items()},
                          **({"re-decoded": ledger.redecoded_examples} if ledger.redecoded_examples else {})},
        redaction_examples=red_examples,
        settings={"min_turns": min_turns, "min_agent_turns": min_agent_turns,
                  "near_dup_threshold": near_dup_threshold, "validation_fraction": validation_fraction,
                  "seed": seed, "order_id_pattern": redactor.order_id_pattern, "names": redactor.names,
                  "encoding_fallback": encoding_fallback},
    )
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "validation.jsonl", validation)
    _atomic_write(out / "report.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    _atomic_write(out / "report.md", report.to_markdown())
    return report
