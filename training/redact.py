"""Redact personal data from support transcripts before anything is written to disk.

:class:`Redactor` finds e-mail addresses, phone numbers, payment cards (Luhn-checked), IBANs
(mod-97 checked), street addresses, the project's order ids (only when a pattern is given)
and people's names where a cue makes them detectable, and replaces each with a typed
placeholder such as ``[EMAIL]`` or ``[NAME]``.

It is deliberately conservative where precision matters for training data: numbers that
merely look like cards (order numbers, a 16-digit number failing the Luhn check, tracking
numbers, prices, dates, error codes such as ``PAY-402``) are kept, and names are only taken
after cues ("my name is", "I'm", "this is", Mr/Ms/Mrs/Dr, greetings "Hi Anna," and
sign-offs "Thanks, Anna") with a stop list, so "Hi there" or "I'm Canadian" stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

KINDS: tuple[str, ...] = ("EMAIL", "PHONE", "CARD", "IBAN", "ADDRESS", "ORDER_ID", "NAME")


@dataclass(frozen=True)
class Redaction:
    """One redacted span: its kind and where it was in the original text.

    ``original`` is kept for evaluation only; it is excluded from ``repr`` so that logging a
    redaction never prints the personal data it removed.
    """

    kind: str
    start: int
    end: int
    original: str = field(repr=False, default="")

    @property
    def original_span(self) -> tuple[int, int]:
        return (self.start, self.end)

    @property
    def placeholder(self) -> str:
        return f"[{self.kind}]"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = re.sub(r"\s+", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_PHONES = [
    # +1 (800) 555-0147, +44 20 7946 0958, +31 6 1234 5678, +49-30-901820
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w-])"),
    # (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132, 1-800-555-0199
    re.compile(r"(?<![\w-])(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-])"),
    # UK national: 07700 900123, 020 7946 0958, 0161 496 0000
    re.compile(r"(?<![\w-])0\d{2,4}[ -]\d{3,6}(?:[ -]\d{3,4})?(?![\w-])"),
]
_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
           r"Close|Crescent|Parkway|Pkwy|Highway|Hwy|Square|Sq|Row|Gardens|Mews)")
_STREET_WORD = r"(?:[A-Z][a-zA-Z'’]+\.?|\d+(?:st|nd|rd|th))"
_UNIT = r"(?:(?:,\s*|\s+)(?:Apt|Apartment|Unit|Suite|Ste|Flat|Fl|Floor|#)\.?\s*#?[A-Za-z0-9-]+)"
_CITY = r"(?:,\s*[A-Z][a-zA-Z'’.-]+(?!\w)(?:\s+[A-Z][a-zA-Z'’.-]+(?!\w)){0,2})"
_STATE = r"(?:,?\s+[A-Z]{2}(?!\w))"
_ZIP = r"(?:,?\s+\d{5}(?:-\d{4})?(?!\d))"
_POSTCODE = r"(?:,?\s+[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b)"
_CA_POSTCODE = r"(?:,?\s+[A-Z]\d[A-Z]\s?\d[A-Z]\d\b)"
_ADDRESS = re.compile(
    rf"(?:\b(?:Apt|Apartment|Unit|Suite|Flat)\.?\s*#?[A-Za-z0-9-]+,?\s+)?"
    rf"\b\d{{1,5}}[A-Za-z]?(?:-\d{{1,5}})?\s+(?:{_STREET_WORD}\s+){{1,4}}{_SUFFIX}\b\.?"
    rf"{_UNIT}?(?:{_CITY}(?:{_STATE})?)?(?:{_ZIP}|{_POSTCODE}|{_CA_POSTCODE})?"
)

_NAME_TOK = r"[A-Z][a-z]+(?:['’-][A-Z]?[a-z]+)?|[A-Z]['’][A-Z][a-z]+|Mc[A-Z][a-z]+"
_FULL = rf"(?:{_NAME_TOK})(?:\s+(?:{_NAME_TOK}))?"
# Words that follow the cues but are not names: adjectives, nationalities, product and brand
# words, days and months, pronoun-ish openers.
STOP_WORDS = frozenset("""
the a an and but or not no yes so just still also only really very happy glad sorry afraid here there
this that it its is was be going trying looking hoping writing calling contacting having wondering
canadian american british french german dutch spanish italian european irish scottish english welsh
mexican australian belgian polish swedish danish new based back out in on at from with
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december today tomorrow yesterday
tallow pine ember hearth cedar alder evergreen support team everyone all folks guys customer customers
order orders refund return returns account chat service bot assistant agent manager
please thanks thank welcome hello hi hey dear sir madam
""".split())

_CUE_INTRO = re.compile(
    rf"(?i:\b(?:my name is|my name's|name's|i am|i'm|im|this is|it's|call me|you're speaking with|"
    rf"you are speaking with|speaking with|you're chatting with|chatting with))\s+(?P<n>{_FULL})\b"
)
_CUE_TITLE = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?\s+(?P<n>{_FULL})\b")
_CUE_GREET = re.compile(
    rf"\b(?:Hi|Hello|Hey|Dear|Morning|Good morning|Good afternoon|Good evening|"
    rf"Thanks|Thank you|Thanks so much|Thanks again|Many thanks|Cheers|Bye|Goodbye|You're welcome|You’re welcome|"
    rf"Welcome back)"
    rf"(?:,\s*|\s+)(?P<n>{_FULL})(?=\s*(?:[,!.?:;]|$))"
)
_CUE_SIGNOFF = re.compile(
    rf"(?:\b(?:Regards|Best regards|Kind regards|Best wishes|Best|Cheers|Thanks|Thank you|Many thanks)"
    rf"[,!.]?\s*\n?\s*[-–—]?\s*|^\s*[-–—]\s*)(?P<n>{_FULL})\s*[.!]?\s*$"
)


def _name_ok(name: str) -> bool:
    words = name.split()
    return bool(words) and words[0].lower() not in STOP_WORDS


@dataclass
class Redactor:
    """Find personal data in text and replace it with typed placeholders.

    ``order_id_pattern`` is the project's order-number regex (e.g. ``TP-\\d{6}``); order ids are
    only redacted when one is given. ``names`` turns cue-based name detection on or off.
    ``keep`` lists exact strings never to redact (e.g. the company's own support phone number).
    """

    order_id_pattern: str | None = None
    names: bool = True
    keep: Iterable[str] = ()

    def __post_init__(self) -> None:
        self._order = re.compile(rf"(?<![\w-])(?:{self.order_id_pattern})(?![\w-])") if self.order_id_pattern else None
        self._keep = frozenset(self.keep)

    def find(self, text: str) -> list[Redaction]:
        """The spans to redact, left to right, never overlapping."""
        cands: list[tuple[int, int, int, str]] = []  # (priority, start, end, kind)
        kept: list[tuple[int, int]] = []
        for k in self._keep:
            i = text.find(k) if k else -1
            while i >= 0:
                kept.append((i, i + len(k)))
                i = text.find(k, i + 1)

        def add(prio: int, kind: str, start: int, end: int) -> None:
            if all(end <= s or start >= e for s, e in kept):
                cands.append((prio, start, end, kind))

        for m in _EMAIL.finditer(text):
            add(0, "EMAIL", m.start(), m.end())
        if self._order is not None:
            for m in self._order.finditer(text):
                add(1, "ORDER_ID", m.start(), m.end())
        for m in _IBAN.finditer(text):
            if iban_ok(m.group()):
                add(2, "IBAN", m.start(), m.end())
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                add(3, "CARD", m.start(), m.end())
        for m in _ADDRESS.finditer(text):
            add(4, "ADDRESS", m.start(), m.end())
        for rx in _PHONES:
            for m in rx.finditer(text):
                digits = re.sub(r"\D", "", m.group())
                if 7 <= len(digits) <= 15:
                    add(5, "PHONE", m.start(), m.end())
        if self.names:
            for rx in (_CUE_TITLE, _CUE_INTRO, _CUE_GREET, _CUE_SIGNOFF):
                for m in rx.finditer(text):
                    name = m.group("n")
                    # a trailing stop word ("Anna Thanks") is not part of the name
                    parts = name.split()
                    if len(parts) == 2 and parts[1].lower() in STOP_WORDS:
                        name = parts[0]
                    if _name_ok(name):
                        add(6, "NAME", m.start("n"), m.start("n") + len(name))
        cands.sort(key=lambda c: (c[0], -(c[2] - c[1]), c[1]))
        taken: list[tuple[int, int, str]] = []
        for _prio, start, end, kind in cands:
            if all(end <= s or start >= e for s, e, _ in taken):
                taken.append((start, end, kind))
        taken.sort()
        return [Redaction(kind, s, e, text[s:e]) for s, e, kind in taken]

    def redact(self, text: str) -> tuple[str, list[Redaction]]:
        """Return the text with every finding replaced by ``[KIND]``, and the findings."""
        found = self.find(text)
        out: list[str] = []
        pos = 0
        for r in found:
            out.append(text[pos:r.start])
            out.append(r.placeholder)
            pos = r.end
        out.append(text[pos:])
        return "".join(out), found
