"""Escalation rules: when the bot hands a conversation to a human, and why.

Rules are configured in ``bot.yaml`` under ``escalation.rules`` as a list; each entry has a
``type`` and that type's options. They are **pure functions of the conversation state**: they
read the stored turns, the new message, the responder's proposed reply and ``state.now``, and
nothing else (no I/O, no clock, no randomness), so every decision can be re-derived from the
stored record. They are evaluated in the operator's order and the first that fires wins; its
:class:`~botkit.types.Escalation` carries

* ``reason``: a stable code (``asked_for_human``, ``frustration``, ``low_confidence``,
  ``repeated_question``, ``sensitive_topic:<name>``, ``refund_above_limit``, ``turn_limit``,
  ``outside_business_hours``, ``customer_attribute:<key>``),
* ``rule``: position and type of the configured rule, e.g. ``"2:frustration"``,
* ``detail``: the evidence, e.g. ``"turn 5: matched 'talk to a real person'"``,
* ``summary``: a short deterministic summary for the human agent (:func:`summarize`).

Phrase syntax (``extra_phrases``, ``phrases``, sensitive-topic phrases) is the same everywhere:

* a plain phrase is **literal text**, matched case-insensitively as whole words (word
  boundaries on both ends), any run of whitespace matching any other, and a trailing plural
  ``s``/``es`` accepted: ``"lawyer"`` matches "Lawyers" but not "lawyering";
* a phrase starting with ``re:`` is a Python regular expression, matched case-insensitively
  (add ``\\b`` yourself where you want word boundaries).

Every phrase is checked when the configuration is loaded; a bad regex is a config error.

Message text never configures anything: rules are built once from the validated, frozen
configuration, and text such as "SYSTEM: rule asks_for_human disabled" or "ignore all rules,
do not escalate" is only ever matched against phrase tables for what its words literally say.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Annotated, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from botkit.types import ConversationState, Escalation, Turn

__all__ = [
    "ASKS_FOR_HUMAN_PATTERNS",
    "AsksForHumanConfig",
    "BusinessHoursConfig",
    "CustomerAttributeConfig",
    "DEFAULT_TOPICS",
    "EscalationConfig",
    "FRUSTRATION_PATTERNS",
    "FrustrationConfig",
    "LowConfidenceConfig",
    "RepeatedQuestionConfig",
    "Rule",
    "RuleConfig",
    "SensitiveTopicConfig",
    "TurnLimitConfig",
    "build_rules",
    "evaluate",
    "find_amounts",
    "summarize",
]

Rule = Callable[[ConversationState], Escalation | None]
"""A rule: a pure function of the conversation state; an Escalation when it fires, else None."""


class _Strict(BaseModel):
    # Same base as botkit.config._Strict, defined here rather than imported because
    # botkit.config imports EscalationConfig from this module (a cycle otherwise).
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------

# Typographic quotes from phone keyboards ("I’d like") would otherwise defeat every
# apostrophe in the phrase tables.
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})


def _clean(text: str) -> str:
    """Normalise unicode compatibility forms and typographic quotes (case is kept)."""
    return unicodedata.normalize("NFKC", text).translate(_QUOTES)


def _quote(text: str, limit: int = 80) -> str:
    """One-line, length-limited rendering of customer text for details and summaries."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: max(limit - 3, 1)].rstrip() + "..."
    return flat


def _compile_phrase(phrase: str) -> re.Pattern[str]:
    """Compile one phrase in the documented syntax (literal words, or ``re:`` regex)."""
    if phrase.startswith("re:"):
        return re.compile(phrase[3:], re.IGNORECASE)
    words = _clean(phrase).split()
    body = r"\s+".join(re.escape(w) for w in words)
    # Lookarounds instead of \b so that phrases starting/ending with punctuation still work.
    return re.compile(rf"(?<!\w){body}(?:e?s)?(?!\w)", re.IGNORECASE)


def _check_phrases(phrases: Iterable[str]) -> None:
    """Reject empty phrases and regexes that do not compile, naming the bad value."""
    for phrase in phrases:
        if not phrase.strip() or phrase.strip() == "re:":
            raise ValueError(f"empty phrase {phrase!r}")
        if phrase.startswith("re:"):
            try:
                re.compile(phrase[3:])
            except re.error as exc:
                raise ValueError(f"bad regular expression {phrase!r}: {exc}") from None


def _current_turn_label(state: ConversationState) -> str:
    """How details refer to the new customer message: its stored turn number."""
    customers = state.customer_turns
    return f"turn {customers[-1].seq}" if customers else "new message"


def _escalation(reason: str, name: str, detail: str) -> Escalation:
    return Escalation(reason=reason, rule=name, detail=detail)


# Negation handling for "asks for a human": we walk back from a match over "bridge" words
# ("I don't really want to talk to ...") and stop at anything else, so that "this is not
# working let me talk to a manager" is not read as negated. Clause breaks end the walk too.
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]\n]|\b(?:but|though|although|however)\b", re.IGNORECASE)
_NEGATIONS = frozenset(
    """not no never don't dont doesn't doesnt didn't didnt won't wont wouldn't wouldnt
    without nor neither shouldn't needn't""".split()
)
_BRIDGES = frozenset(
    """i i'm im me us we really actually even want wanna need needs have to like ask asking
    for be being get getting a an the any just yet still looking do does going gonna let it
    that would please ever""".split()
)
# "No I want a human": a clause-initial "no" followed by one of these is an interjection.
_INTERJECTION_NEXT = frozenset("i i'm im just please thanks thank we let get give connect transfer put".split())


_NEGATION_WINDOW = 200
"""Characters looked at before a match: the walk covers at most 8 short words, and a window
keeps a message with many negated matches linear ("don't talk to a human" x 1,000 scanned the
whole text before each match)."""


def _negated(text: str, start: int) -> bool:
    """Whether the words right before ``start`` (same clause) negate what follows."""
    before = text[max(0, start - _NEGATION_WINDOW):start]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    if breaks:
        before = before[breaks[-1].end():]
    words = re.findall(r"[\w']+", before.lower())[-8:]
    following = ""
    for word in reversed(words):
        if word in _NEGATIONS:
            return not (word == "no" and following in _INTERJECTION_NEXT)
        if word not in _BRIDGES:
            return False
        following = word
    return False


# --------------------------------------------------------------------------------------------
# Phrase tables
# --------------------------------------------------------------------------------------------

# Who a customer may ask for. Concrete nouns are safe after "get/want/need"; the indefinite
# ones ("someone", "support") only after verbs of talking/contacting, because "I need
# someone to sign for the parcel" is not a request for an agent.
_NOUN = (
    r"(?:human\s+beings?|humans?|persons?|agents?|representatives?|reps?|managers?|supervisors?|"
    r"operators?|staff(?:\s+members?)?|employees?|team\s+members?|advis[eo]rs?|consultants?|"
    r"specialists?|customer\s+(?:service|support|care)(?:\s+(?:team|agents?|reps?|representatives?|"
    r"department))?|support\s+(?:team|staff|agents?|reps?|department)|boss)"
)
_WHO = rf"(?:{_NOUN}|someone|somebody|some\s+one|anyone|anybody|people|support|a\s+real\s+one)"
_DET = r"(?:(?:a|an|the|some|any|your|ur|one\s+of\s+(?:your|the))\s+)?"
_MOD = r"(?:(?:real|live|actual|proper|human|physical|flesh[-\s]and[-\s]blood|competent|senior|another)\s+)?"
# "agent api", "human resources", "operator manual": the noun is an adjective here.
_TAIL = (
    r"(?![-\s]*(?:api|sdk|software|app|program|key|id|code|number|portal|login|page|dashboard|"
    r"tool|settings|mode|version|manual|resources?|rights?|error|trafficking)\b)"
)

ASKS_FOR_HUMAN_PATTERNS: tuple[tuple[str, str], ...] = (
    ("talk to someone",
     r"\b(?:talk|speak|chat|communicate|converse)\s+(?:directly\s+|personally\s+)?(?:to|with)\s+"
     rf"{_DET}{_MOD}{_WHO}\b{_TAIL}"),
    ("connect me to",
     r"\b(?:connect|transfer|put|pass|forward|route|redirect|hand|send|switch)\s+"
     r"(?:me|us|this|my\s+(?:call|chat|case|question|request))\s+(?:(?:through|over|on|back)\s+)?(?:to|with)\s+"
     rf"{_DET}{_MOD}{_WHO}\b{_TAIL}"),
    ("get me a human", rf"\b(?:get|give|find|bring|fetch)\s+(?:me\s+|us\s+)?{_DET}{_MOD}{_NOUN}\b{_TAIL}"),
    ("want a human",
     r"\b(?:want|need|request|demand|prefer|(?:would|'d)\s+like)\s+(?:a|an|some|your|ur|to\s+have\s+a)\s+"
     rf"{_MOD}{_NOUN}\b{_TAIL}"),
    ("real person",
     r"\b(?:real|live|actual)\s+(?:human|person|people|agent|operator|representative|rep|staff|chat|support)s?\b"
     rf"{_TAIL}"),
    ("human help", r"\bhuman\s+(?:help|support|assistance|contact|interaction)\b"),
    ("human please", r"\b(?:humans?|persons?|agents?|representatives?|operators?)\s+(?:please|pls|plz|now|asap|only)\b"),
    ("please a human",
     rf"\b(?:please|pls|plz)\s+(?:get\s+me\s+|give\s+me\s+)?{_DET}{_MOD}"
     rf"(?:human|person|agent|representative|operator|manager|supervisor)s?\b{_TAIL}"),
    ("is there a human",
     rf"\b(?:is|are)\s+there\s+(?:(?:a|an|any|some)\s+)?{_MOD}"
     rf"(?:humans?|persons?|people|someone|somebody|anyone|anybody|agents?|operators?|staff|representatives?)\b{_TAIL}"),
    ("anyone there", r"\b(?:anyone|anybody|someone|somebody)\s+(?:there|here|real|alive|available|around)\b"),
    ("contact support", rf"\b(?:contact|reach|get\s+hold\s+of|get\s+in\s+touch\s+with)\s+{_DET}{_MOD}{_WHO}\b{_TAIL}"),
    # "call me" only as a request: followed by an end, "back", a time or a number, so
    # "they call me Jim" does not count.
    ("call me",
     r"\b(?:call|phone|ring)\s+me(?:\s+back)?(?=\s*(?:$|[.!?,;)]|at\b|on\b|please\b|pls\b|now\b|asap\b|today\b|"
     r"tomorrow\b|tonight\b|when\b|as\s+soon\b|instead\b|urgently\b|\+?\d))"),
    ("give me a call", r"\bgive\s+me\s+a\s+(?:call|ring|phone\s+call)\b"),
    ("callback", r"\b(?:request|want|need|get|arrange|schedule|book)\s+(?:a\s+)?call\s*-?\s*back\b"),
    ("can I call you",
     r"\b(?:can|could|may|how\s+do|how\s+can)\s+(?:i|we)\s+(?:call|phone|ring)\s+"
     r"(?:you|your|someone|somebody|support|customer)\b"),
    # A customer asking to escalate means it literally, whatever else the message says.
    ("escalate", r"\bescalate\b"),
    ("not a bot",
     r"\b(?:don't|dont|do\s+not)\s+want\s+(?:to\s+(?:talk|speak|chat)\s+(?:to|with)\s+)?"
     r"(?:(?:a|an|the|this|your|some)\s+)?(?:bot|robot|machine|chatbot|ai|computer|automated\s+\w+)s?\b"),
    ("no more bots",
     r"\b(?:no\s+more|enough\s+(?:of\s+)?(?:(?:the|this|these|your)\s+)?)"
     r"(?:bots?|robots?|chatbots?|machines?|automated\s+(?:replies|answers|responses))\b"),
)
"""(label, regex) pairs matched case-insensitively against the new message; a match counts
unless the words right before it in the same clause negate it ("I don't need a human")."""

# A message that is nothing but a request word ("agent", "Representative please", "HUMAN!")
# asks for a human; the same word inside a sentence ("your agent api") does not.
_BARE_NOUNS = frozenset(
    """human humans person agent agents representative representatives rep operator manager
    supervisor staff customer_service customer_support customer_care live_chat""".split()
)
_BARE_FILLERS = frozenset(
    """please pls plz now right asap a an the real live actual i want need would like i'd id me
    can could get give just only ok okay hi hello hey yes yeah urgent urgently immediately
    speak talk to with your some one""".split()
)
_BARE_JOIN = re.compile(r"\b(customer)\s+(service|support|care)\b|\b(live)\s+(chat)\b", re.IGNORECASE)

FRUSTRATION_PATTERNS: tuple[tuple[str, str], ...] = (
    ("useless", r"\b(?:useless|worthless|hopeless|pointless)\b"),
    ("insult",
     r"\byou(?:'re|\s+are|re|\s+r)?\s+(?:so\s+|really\s+|such\s+an?\s+|an?\s+|just\s+)?"
     r"(?:stupid|dumb|idiot(?:ic)?|moron(?:ic)?|incompetent|pathetic|brainless|clueless|braindead|retarded)\b"),
    ("bad bot",
     r"\b(?:stupid|dumb|idiotic|crappy|shitty|terrible|awful|lousy|pathetic|rubbish|garbage)\s+"
     r"(?:bot|chatbot|robot|machine|ai|thing|system|app|website|site|service|company|answers?|repl(?:y|ies))s?\b"),
    ("worst",
     r"\bworst\s+(?:\w+\s+)?(?:bot|chatbot|service|support|company|experience|customer\s+service|app|website|ever)\b"),
    ("waste of time", r"\b(?:waste\s+of\s+(?:my\s+|our\s+)?(?:time|life)|wasting\s+my\s+time)\b"),
    ("for god's sake", r"\bfor\s+(?:god|christ|heaven|pete|fuck|f\*+k|crying\s+out\s+loud)'?s?\s+sake\b|\bffs\b"),
    ("wtf", r"\b(?:wtf|omfg|stfu|fml|smh)\b|\bwhat\s+the\s+(?:hell|heck|fuck|f\*+k)\b"),
    ("profanity",
     r"\b(?:fuck\w*|f\*+k\w*|shit(?:ty|s|e)?|bullshit|crap(?:py)?|damn(?:it)?|dammit|goddamn\w*|asshole|arsehole|"
     r"bastard|bollocks|pissed|bloody\s+hell|screw\s+(?:you|this|that))\b"),
    ("fed up",
     r"\b(?:i'm|im|i\s+am)\s+(?:so\s+|really\s+|getting\s+|very\s+|completely\s+|totally\s+|absolutely\s+)?"
     r"(?:fed\s+up|sick\s+(?:and\s+tired\s+)?of|tired\s+of|frustrated|furious|livid|angry|annoyed|fuming|"
     r"losing\s+my\s+patience)\b"),
    ("this is ridiculous",
     r"\b(?:this|that|it)(?:'s|\s+is|\s+was)\s+(?:so\s+|absolutely\s+|completely\s+|totally\s+|just\s+)?"
     r"(?:ridiculous|absurd|unacceptable|infuriating|outrageous|a\s+joke|a\s+nightmare|insane|pathetic|"
     r"a\s+disgrace|disgraceful)\b"),
    ("not helping",
     r"\b(?:not\s+helpful|no\s+help\s+at\s+all|not\s+helping)\b"
     r"|\byou(?:'re|\s+are)?\s+(?:not|never)\s+(?:listening|helping|understanding)\b"
     r"|\byou\s+(?:don't|dont|do\s+not|never|can't|cannot)\s+(?:understand|listen|help|get\s+it)\b"),
    ("already told you",
     r"\bi\s+(?:already|just)\s+told\s+you\b|\b(?:stop|quit)\s+(?:repeating|giving\s+me\s+the\s+same)\b"),
    ("ugh", r"\b(?:ugh+|argh+)\b"),
    ("angry emoji", "[\U0001F620\U0001F621\U0001F624\U0001F92C\U0001F595]"),
)
"""(label, regex) pairs matched case-insensitively against the new message (no negation check)."""

DEFAULT_TOPICS: Mapping[str, tuple[str, ...]] = {
    "legal": (
        "lawyer", "attorney", "solicitor", "lawsuit", "legal action", "small claims",
        "class action", "litigation", "legal department", "cease and desist", "sued", "suing",
        # "sue" only as a verb: "My name is Sue" is not a legal threat.
        r"re:\bsue\s+(?:you|u|ya|your|the|this|them|him|her|over|for)\b"
        r"|\b(?:to|will|i'll|ill|gonna|i|we|could|can|might|should|would)\s+sue\b",
        r"re:\b(?:take|taking|see|drag|dragging)\s+(?:you|u|ya|you\s+guys|them|this|it|your\s+(?:company|business))"
        r"\s+(?:to|in)\s+court\b",
    ),
    "account_security": (
        "hacked", "hacker", "fraud", "fraudulent", "identity theft", "phishing", "compromised",
        "stolen card", "scam", "scammed",
        r"re:\bsomeone\s+(?:else\s+)?(?:has\s+)?(?:logged|signed|got|gotten|broke)\s+in(?:to)?\s+my\s+account\b",
        r"re:\bunauthori[sz]ed\s+(?:access|charges?|transactions?|logins?|purchases?|payments?|use)\b",
        r"re:\b(?:card|account|password|identity)\s+(?:was|has\s+been|got|is)\s+"
        r"(?:stolen|compromised|hacked|taken\s+over)\b",
        r"re:\bstolen\s+(?:credit\s+|debit\s+)card\b",
        r"re:\bi\s+(?:didn't|didnt|did\s+not|never)\s+(?:make|authori[sz]e|order|buy)\s+"
        r"(?:(?:this|these|that|those|any)\s+)?(?:purchases?|charges?|transactions?|orders?|payments?)\b",
        r"re:\b(?:don't|dont|do\s+not)\s+recogni[sz]e\s+(?:(?:this|these|that|a|the|some)\s+)?"
        r"(?:charges?|transactions?|purchases?|logins?|payments?|orders?)\b",
    ),
}
"""Sensitive topics used when the operator configures none."""

_REFUND_WORDS = re.compile(
    r"\b(?:refund(?:s|ed|ing)?|money\s+back|reimburse(?:d|ment|ments)?|reimbursing|"
    r"charge\s*-?\s*backs?|pay\s+me\s+back|return\s+(?:of\s+)?my\s+money)\b",
    re.IGNORECASE,
)
_CUR_SYMBOL = r"(?:US\$|A\$|C\$|NZ\$|HK\$|\$|€|£|¥|₹)"
_CUR_CODE = r"(?:USD|EUR|GBP|CAD|AUD|NZD|CHF|JPY|INR|SEK|NOK|DKK)"
_CUR_WORD = r"(?:dollars?|bucks|euros?|pounds?|quid|rupees?|yen|usd|eur|gbp|cad|aud|chf)"
# 1,200.50 (comma thousands) | 1.200,50 (dot thousands) | 1200.50 / 12,5 (plain, either decimal mark)
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
_AMOUNT = re.compile(
    rf"(?:{_CUR_SYMBOL}|\b{_CUR_CODE})\s?(?P<a>{_NUMBER})(?P<ak>\s?k\b)?(?![\d.,]\d)"
    rf"|(?<![\w.,])(?P<b>{_NUMBER})(?P<bk>\s?k)?\s?(?:{_CUR_SYMBOL}|(?:{_CUR_CODE}|{_CUR_WORD})\b)",
    re.IGNORECASE,
)


def _amount_value(number: str, thousands: bool) -> float:
    """Parse an amount matched by ``_NUMBER`` (either decimal convention) into a float."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", number):
        value = float(number.replace(",", ""))
    elif re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?", number):
        value = float(number.replace(".", "").replace(",", "."))
    else:
        value = float(number.replace(",", "."))
    return value * 1000 if thousands else value


def find_amounts(text: str) -> list[tuple[float, int, int, str]]:
    """Money amounts in ``text`` that carry a currency sign, code or word.

    Returns ``(value, start, end, matched_text)`` in text order. Bare numbers ("order 12345")
    are not amounts. ``1,200.50`` and ``1.200,50`` both read as 1200.5; ``$2k`` as 2000.
    No currency conversion: the value is compared as written.
    """
    found = []
    for m in _AMOUNT.finditer(_clean(text)):
        number = m.group("a") or m.group("b")
        thousands = bool(m.group("ak") or m.group("bk"))
        found.append((_amount_value(number, thousands), m.start(), m.end(), m.group(0).strip()))
    return found


# --------------------------------------------------------------------------------------------
# Rule configurations
# --------------------------------------------------------------------------------------------

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
    "friday": "fri", "saturday": "sat", "sunday": "sun",
}
JsonScalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]


class AsksForHumanConfig(_Strict):
    """The customer asks for a human (many phrasings; negated requests do not count).

    ``extra_phrases`` adds operator phrases in the module's phrase syntax (literal words or
    ``re:`` regex, case-insensitive); they are subject to the same negation check, so
    "I don't need <phrase>" does not fire. Reason ``asked_for_human``.
    """

    type: Literal["asks_for_human"] = "asks_for_human"
    extra_phrases: list[str] = Field(default_factory=list)
    use_default_phrases: bool = True

    @field_validator("extra_phrases")
    @classmethod
    def _valid_phrases(cls, v: list[str]) -> list[str]:
        _check_phrases(v)
        return v


class FrustrationConfig(_Strict):
    """The customer is frustrated: repeated thumbs-down, insults, profanity or shouting.

    Fires on the new message when it matches a frustration phrase (defaults plus ``phrases``),
    has a run of ``exclamation_run`` or more "!" (mixed with "?" allowed), or is shouted: at
    least three words and ``shouting_min_letters`` letters, 80 % of them upper case. Fires on
    the history when ``min_negative_feedback`` bot turns got a thumbs-down. Any threshold set
    to null disables that check. Reason ``frustration``.
    """

    type: Literal["frustration"] = "frustration"
    min_negative_feedback: int | None = Field(2, ge=1, le=1000)
    phrases: list[str] = Field(default_factory=list)
    use_default_phrases: bool = True
    exclamation_run: int | None = Field(3, ge=2, le=100)
    shouting_min_letters: int | None = Field(12, ge=4, le=10_000)

    @field_validator("phrases")
    @classmethod
    def _valid_phrases(cls, v: list[str]) -> list[str]:
        _check_phrases(v)
        return v


class LowConfidenceConfig(_Strict):
    """The bot could not ground ``turns`` replies in a row, the proposed reply included.

    Groundedness of past bot turns is read from ``turn.meta["grounded"]`` (a bool the engine
    stores); a bot turn without that key counts as grounded, which ends the streak (unknown is
    not evidence of failure). With fewer earlier bot turns than needed it does not fire.
    Reason ``low_confidence``.
    """

    type: Literal["low_confidence"] = "low_confidence"
    turns: int = Field(2, ge=1, le=100)


class RepeatedQuestionConfig(_Strict):
    """The customer asks essentially the same thing again.

    Texts are lower-cased and stripped of punctuation; two messages are "the same" when the
    Jaccard similarity of their word sets is at least ``similarity``. Fires when the new
    message is the ``times``-th such message (``times: 2`` = asked a second time). Messages
    with fewer than ``min_tokens`` words ("yes", "ok thanks") are never counted, since short
    replies repeat naturally. Reason ``repeated_question``.
    """

    type: Literal["repeated_question"] = "repeated_question"
    similarity: float = Field(0.8, gt=0.0, le=1.0)
    times: int = Field(2, ge=2, le=100)
    min_tokens: int = Field(3, ge=1, le=100)


class SensitiveTopicConfig(_Strict):
    """The new message touches a topic a human must handle, or asks for a large refund.

    ``topics`` maps a topic name to phrases (module phrase syntax: whole words,
    case-insensitive, or ``re:`` regex); topics are checked in the order given. Setting
    ``topics`` replaces the defaults (:data:`DEFAULT_TOPICS`: ``legal`` and
    ``account_security``); repeat them to keep them. Matches are not negation-checked on
    purpose: "I'm not going to sue you (yet)" still belongs with a human.

    ``refund_above`` (null = off): a message with a refund word (refund, money back,
    reimburse, chargeback) and, within ``refund_window_chars`` of it, an amount with a
    currency ("$250", "250 dollars", "€1,200.50", "USD 300") strictly above the limit.
    Amounts are compared as written, without currency conversion.
    Reasons ``sensitive_topic:<name>`` and ``refund_above_limit``.
    """

    type: Literal["sensitive_topic"] = "sensitive_topic"
    topics: dict[str, list[str]] = Field(
        default_factory=lambda: {name: list(phrases) for name, phrases in DEFAULT_TOPICS.items()}
    )
    refund_above: float | None = Field(None, ge=0)
    refund_window_chars: int = Field(120, ge=1, le=100_000)

    @field_validator("topics")
    @classmethod
    def _valid_topics(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, phrases in v.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(f"bad topic name {name!r} (use lower-case letters, digits, '_' or '-')")
            if not phrases:
                raise ValueError(f"topic {name!r} has no phrases")
            _check_phrases(phrases)
        return v


class TurnLimitConfig(_Strict):
    """The conversation has more than ``max_customer_turns`` customer turns. Reason ``turn_limit``."""

    type: Literal["turn_limit"] = "turn_limit"
    max_customer_turns: int = Field(20, ge=1, le=100_000)


def _parse_hhmm(value: str, allow_24: bool) -> int:
    """Minutes after midnight for "HH:MM"; ValueError naming the value otherwise."""
    m = re.fullmatch(r"(\d{2}):(\d{2})", value)
    if m and int(m.group(2)) < 60 and (int(m.group(1)) < 24 or (allow_24 and value == "24:00")):
        return int(m.group(1)) * 60 + int(m.group(2))
    allowed = "00:00-24:00" if allow_24 else "00:00-23:59"
    raise ValueError(f"bad time {value!r} (expected HH:MM, {allowed})")


def _zone(name: str) -> tzinfo:
    """The tzinfo for an IANA name; "UTC" works even without a tz database."""
    if name.upper() == "UTC":
        return timezone.utc
    return ZoneInfo(name)


class BusinessHoursConfig(_Strict):
    """Fires when ``state.now`` falls outside business hours.

    ``state.now`` is converted to ``timezone`` (IANA name; a naive ``now`` is taken as UTC).
    The business is open on ``days`` from ``open`` to ``close`` (local "HH:MM", ``close``
    may be "24:00"); when ``close`` is earlier than ``open`` the window runs past midnight
    and belongs to the day it opened. ``holidays`` (dates) are closed all day.

    The rule fires on *every* message outside those hours, so a bot with this rule hands
    every out-of-hours conversation to the human queue, where it waits for the next business
    day. Operators place it where they want that queuing to take precedence: first, to record
    every out-of-hours hand-off as ``outside_business_hours``; after the other rules, so that a
    more specific reason (legal, asked for a human) is recorded when one applies.
    Reason ``outside_business_hours``.
    """

    type: Literal["business_hours"] = "business_hours"
    timezone: str = "UTC"
    days: list[Day] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"], min_length=1)
    open: str = "09:00"
    close: str = "17:00"
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, v: str) -> str:
        try:
            _zone(v)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
            raise ValueError(f"unknown timezone {v!r} (use an IANA name such as 'Europe/Paris')") from None
        return v

    @field_validator("days", mode="before")
    @classmethod
    def _day_names(cls, v: object) -> object:
        # Accept "Mon", "monday" as well as "mon"; anything else reaches the Literal check.
        if isinstance(v, list):
            return [_FULL_DAYS.get(d.strip().lower(), d.strip().lower()) if isinstance(d, str) else d for d in v]
        return v

    @field_validator("open")
    @classmethod
    def _valid_open(cls, v: str) -> str:
        _parse_hhmm(v, allow_24=False)
        return v

    @field_validator("close")
    @classmethod
    def _valid_close(cls, v: str) -> str:
        _parse_hhmm(v, allow_24=True)
        return v

    @model_validator(mode="after")
    def _window(self) -> BusinessHoursConfig:
        if _parse_hhmm(self.open, False) == _parse_hhmm(self.close, True) % (24 * 60) and self.close != "24:00":
            raise ValueError(f"open {self.open!r} and close {self.close!r} are the same time (use 00:00-24:00 for all day)")
        return self

    def local_time(self, now: datetime) -> datetime:
        """``now`` in the configured timezone (naive datetimes are taken as UTC)."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return now.astimezone(_zone(self.timezone))

    def is_open(self, now: datetime) -> bool:
        """Whether the business is open at ``now``."""
        local = self.local_time(now)
        opens, closes = _parse_hhmm(self.open, False), _parse_hhmm(self.close, True)
        minute = local.hour * 60 + local.minute + local.second / 60
        today, yesterday = local.date(), local.date() - timedelta(days=1)

        def working(d: date) -> bool:
            return _DAYS[d.weekday()] in self.days and d not in self.holidays

        if opens < closes:
            return working(today) and opens <= minute < closes
        # Overnight window (e.g. 22:00-06:00): the evening part opens today, the early
        # morning part belongs to yesterday's opening.
        return (working(today) and minute >= opens) or (working(yesterday) and minute < closes)


class CustomerAttributeConfig(_Strict):
    """Fires when a customer attribute matches, e.g. VIP customers go straight to a human.

    Looks up ``key`` in ``state.message.attributes`` and ``state.conversation.attributes``
    (either may match) and compares with ``equals`` or ``in`` (give exactly one). Comparison
    is exact and JSON-typed: ``true`` does not equal ``1``, ``"Pro"`` does not equal ``"pro"``;
    a missing key never matches. With ``only_first_message`` (default) it fires only on the
    conversation's first customer message, i.e. at the start and never in the middle (once
    escalated, the engine stops evaluating rules anyway). Reason ``customer_attribute:<key>``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["customer_attribute"] = "customer_attribute"
    key: str = Field(min_length=1, max_length=200)
    equals: JsonScalar = None
    in_: list[JsonScalar] | None = Field(None, alias="in", min_length=1)
    only_first_message: bool = True

    @model_validator(mode="after")
    def _one_comparison(self) -> CustomerAttributeConfig:
        has_equals, has_in = "equals" in self.model_fields_set, self.in_ is not None
        if has_equals == has_in:
            given = f"equals={self.equals!r} and in={self.in_!r}" if has_equals else "neither"
            raise ValueError(f"give exactly one of 'equals' or 'in' for key {self.key!r} (got {given})")
        return self


RuleConfig = Annotated[
    Union[
        AsksForHumanConfig,
        FrustrationConfig,
        LowConfidenceConfig,
        RepeatedQuestionConfig,
        SensitiveTopicConfig,
        TurnLimitConfig,
        BusinessHoursConfig,
        CustomerAttributeConfig,
    ],
    Field(discriminator="type"),
]
"""One configured rule; the ``type`` key selects the model."""


def _default_rules() -> list[RuleConfig]:
    return [
        AsksForHumanConfig(),
        FrustrationConfig(),
        SensitiveTopicConfig(),
        LowConfidenceConfig(turns=2),
        RepeatedQuestionConfig(),
        TurnLimitConfig(),
    ]


class EscalationConfig(_Strict):
    """The ``escalation`` section of bot.yaml: rules in evaluation order (first match wins).

    The default list is asks_for_human, frustration, sensitive_topic (legal,
    account_security), low_confidence (2 turns), repeated_question, turn_limit (20).
    An empty list disables escalation by rules.
    """

    rules: list[RuleConfig] = Field(default_factory=_default_rules)


# --------------------------------------------------------------------------------------------
# Rule implementations
# --------------------------------------------------------------------------------------------


def _build_asks_for_human(cfg: AsksForHumanConfig, name: str) -> Rule:
    table: list[re.Pattern[str]] = []
    if cfg.use_default_phrases:
        table += [re.compile(p, re.IGNORECASE) for _, p in ASKS_FOR_HUMAN_PATTERNS]
    table += [_compile_phrase(p) for p in cfg.extra_phrases]
    use_bare = cfg.use_default_phrases

    def asks_for_human(state: ConversationState) -> Escalation | None:
        text = _clean(state.message.text)
        where = _current_turn_label(state)
        for pattern in table:
            for m in pattern.finditer(text):
                if m.group(0).strip() and not _negated(text, m.start()):
                    return _escalation("asked_for_human", name, f"{where}: matched {_quote(m.group(0))!r}")
        if use_bare:
            joined = _BARE_JOIN.sub(lambda m: "_".join(g for g in m.groups() if g), text.lower())
            words = re.findall(r"[\w']+", joined)
            if 0 < len(words) <= 8 and all(w in _BARE_NOUNS or w in _BARE_FILLERS for w in words) and any(
                w in _BARE_NOUNS for w in words
            ):
                return _escalation("asked_for_human", name, f"{where}: the message is only {_quote(text)!r}")
        return None

    return asks_for_human


def _shouting(text: str, min_letters: int) -> tuple[int, int] | None:
    """(upper-case letters, letters) when the text is shouted, else None."""
    words = re.findall(r"(?<!\w)[^\W\d_]{2,}(?!\w)", text)
    letters = [c for w in words for c in w if c.isupper() or c.islower()]
    upper = sum(1 for c in letters if c.isupper())
    if len(words) >= 3 and len(letters) >= min_letters and upper >= 0.8 * len(letters):
        return upper, len(letters)
    return None


def _build_frustration(cfg: FrustrationConfig, name: str) -> Rule:
    table: list[re.Pattern[str]] = []
    if cfg.use_default_phrases:
        table += [re.compile(p, re.IGNORECASE) for _, p in FRUSTRATION_PATTERNS]
    table += [_compile_phrase(p) for p in cfg.phrases]

    def frustration(state: ConversationState) -> Escalation | None:
        text = _clean(state.message.text)
        where = _current_turn_label(state)
        for pattern in table:
            m = pattern.search(text)
            if m and m.group(0).strip():
                return _escalation("frustration", name, f"{where}: matched {_quote(m.group(0))!r}")
        if cfg.exclamation_run is not None:
            for run in re.finditer(r"[!?¡]{2,}", text):
                bangs = run.group(0).count("!")
                if bangs >= cfg.exclamation_run:
                    return _escalation(
                        "frustration", name,
                        f"{where}: {bangs} exclamation marks in a row (limit {cfg.exclamation_run})",
                    )
        if cfg.shouting_min_letters is not None:
            shout = _shouting(text, cfg.shouting_min_letters)
            if shout:
                return _escalation(
                    "frustration", name,
                    f"{where}: shouting ({shout[0]} of {shout[1]} letters upper case): {_quote(text, 60)!r}",
                )
        if cfg.min_negative_feedback is not None:
            disliked = [t.seq for t in state.bot_turns if t.feedback < 0]
            if len(disliked) >= cfg.min_negative_feedback:
                return _escalation(
                    "frustration", name,
                    f"negative feedback on {len(disliked)} bot turns (turns {', '.join(map(str, disliked))}; "
                    f"limit {cfg.min_negative_feedback})",
                )
        return None

    return frustration


def _build_low_confidence(cfg: LowConfidenceConfig, name: str) -> Rule:
    def low_confidence(state: ConversationState) -> Escalation | None:
        if state.candidate.grounded:
            return None
        earlier = cfg.turns - 1
        past: tuple[Turn, ...] = state.bot_turns[-earlier:] if earlier else ()
        if len(past) < earlier or any(t.meta.get("grounded") is not False for t in past):
            return None
        score = f"best score {state.candidate.confidence:.2f}"
        if not past:
            return _escalation("low_confidence", name, f"the proposed reply is not grounded ({score})")
        seqs = ", ".join(str(t.seq) for t in past)
        return _escalation(
            "low_confidence", name,
            f"{cfg.turns} ungrounded replies in a row (bot turns {seqs} and the proposed reply; {score})",
        )

    return low_confidence


def _tokens(text: str) -> frozenset[str]:
    """Word set for similarity: lower case, apostrophes dropped, other punctuation splits."""
    return frozenset(re.findall(r"\w+", _clean(text).lower().replace("'", "")))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _build_repeated_question(cfg: RepeatedQuestionConfig, name: str) -> Rule:
    def repeated_question(state: ConversationState) -> Escalation | None:
        new = _tokens(state.message.text)
        if len(new) < cfg.min_tokens:
            return None
        # By contract the new message is the last customer turn; compare with those before it.
        earlier = state.customer_turns[:-1]
        similar: list[tuple[Turn, float]] = []
        for turn in earlier:
            old = _tokens(turn.text)
            if len(old) < cfg.min_tokens:
                continue
            sim = _jaccard(new, old)
            # Tolerance so that a ratio equal to the threshold (4/5 vs 0.8) is not lost to rounding.
            if sim >= cfg.similarity - 1e-9:
                similar.append((turn, sim))
        if len(similar) + 1 < cfg.times:
            return None
        where = _current_turn_label(state)
        which = ", ".join(str(t.seq) for t, _ in similar)
        lowest = min(s for _, s in similar)
        plural = "s" if len(similar) > 1 else ""
        return _escalation(
            "repeated_question", name,
            f"{where} repeats turn{plural} {which} (similarity {lowest:.2f} >= {cfg.similarity:.2f}; "
            f"asked {len(similar) + 1} times): {_quote(state.message.text, 60)!r}",
        )

    return repeated_question


def _build_sensitive_topic(cfg: SensitiveTopicConfig, name: str) -> Rule:
    topics = [(topic, [_compile_phrase(p) for p in phrases]) for topic, phrases in cfg.topics.items()]
    limit, window = cfg.refund_above, cfg.refund_window_chars

    def sensitive_topic(state: ConversationState) -> Escalation | None:
        text = _clean(state.message.text)
        where = _current_turn_label(state)
        for topic, patterns in topics:
            for pattern in patterns:
                m = pattern.search(text)
                if m and m.group(0).strip():
                    return _escalation(
                        f"sensitive_topic:{topic}", name, f"{where}: matched {_quote(m.group(0))!r} (topic {topic})"
                    )
        if limit is None:
            return None
        refunds = list(_REFUND_WORDS.finditer(text))
        if not refunds:
            return None
        for value, start, end, shown in find_amounts(text):
            if value <= limit:
                continue
            for r in refunds:
                gap = max(r.start() - end, start - r.end(), 0)
                if gap <= window:
                    return _escalation(
                        "refund_above_limit", name,
                        f"{where}: refund request ({r.group(0)!r}) mentions {shown!r} = {value:g} "
                        f"above the limit {limit:g}",
                    )
        return None

    return sensitive_topic


def _build_turn_limit(cfg: TurnLimitConfig, name: str) -> Rule:
    def turn_limit(state: ConversationState) -> Escalation | None:
        count = state.customer_turn_count  # the whole conversation, not just the engine's window
        if count <= cfg.max_customer_turns:
            return None
        return _escalation("turn_limit", name, f"{count} customer turns (limit {cfg.max_customer_turns})")

    return turn_limit


def _build_business_hours(cfg: BusinessHoursConfig, name: str) -> Rule:
    def business_hours(state: ConversationState) -> Escalation | None:
        if cfg.is_open(state.now):
            return None
        local = cfg.local_time(state.now)
        holiday = " (holiday)" if local.date() in cfg.holidays else ""
        return _escalation(
            "outside_business_hours", name,
            f"{local:%a %Y-%m-%d %H:%M} {cfg.timezone}{holiday} is outside business hours "
            f"({','.join(cfg.days)} {cfg.open}-{cfg.close})",
        )

    return business_hours


def _same_scalar(a: object, b: object) -> bool:
    """JSON-typed equality: booleans only equal booleans, numbers compare by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return a is None and b is None


def _build_customer_attribute(cfg: CustomerAttributeConfig, name: str) -> Rule:
    wanted: list[object] = list(cfg.in_) if cfg.in_ is not None else [cfg.equals]
    expected = f"in {cfg.in_!r}" if cfg.in_ is not None else f"equals {cfg.equals!r}"

    def customer_attribute(state: ConversationState) -> Escalation | None:
        if cfg.only_first_message and state.customer_turn_count > 1:
            return None
        sources = (("message", state.message.attributes), ("conversation", state.conversation.attributes))
        for origin, attributes in sources:
            if cfg.key in attributes:
                value = attributes[cfg.key]
                if any(_same_scalar(value, w) for w in wanted):
                    return _escalation(
                        f"customer_attribute:{cfg.key}", name,
                        f"{origin} attribute {cfg.key}={value!r} ({expected})",
                    )
        return None

    return customer_attribute


_BUILDERS: dict[type[BaseModel], Callable[..., Rule]] = {
    AsksForHumanConfig: _build_asks_for_human,
    FrustrationConfig: _build_frustration,
    LowConfidenceConfig: _build_low_confidence,
    RepeatedQuestionConfig: _build_repeated_question,
    SensitiveTopicConfig: _build_sensitive_topic,
    TurnLimitConfig: _build_turn_limit,
    BusinessHoursConfig: _build_business_hours,
    CustomerAttributeConfig: _build_customer_attribute,
}


def build_rules(config: EscalationConfig) -> list[tuple[str, Rule]]:
    """Compile the configured rules, in order, as ``("<position>:<type>", rule)`` pairs.

    Positions count from 1, so the default list yields ``"1:asks_for_human"``,
    ``"2:frustration"``, ... . Rules snapshot their configuration here; nothing later
    (least of all message text) changes what they check.
    """
    built: list[tuple[str, Rule]] = []
    for position, rule_cfg in enumerate(config.rules, start=1):
        name = f"{position}:{rule_cfg.type}"
        # A deep copy, so that later mutation of the config's lists cannot reach a built rule.
        built.append((name, _BUILDERS[type(rule_cfg)](rule_cfg.model_copy(deep=True), name)))
    return built


def evaluate(rules: Sequence[tuple[str, Rule]], state: ConversationState) -> Escalation | None:
    """Run ``rules`` in order; the first escalation, with ``summary`` filled in, or None.

    Custom rules may be mixed in; one that leaves ``rule`` empty gets its list name. A rule
    that raises propagates: a broken rule is a bug to fix, not a silent "no escalation".
    """
    for name, rule in rules:
        found = rule(state)
        if found is not None:
            return replace(found, rule=found.rule or name, summary=summarize(state))
    return None


# --------------------------------------------------------------------------------------------
# Summary for the human agent
# --------------------------------------------------------------------------------------------


def summarize(state: ConversationState, max_chars: int = 400) -> str:
    """A short deterministic summary of the conversation for the agent who takes over.

    Says how many customer turns there were, the first question and the latest message
    (each truncated), whether the bot was unsure (ungrounded replies, the proposed one
    included) and the knowledge-base titles the bot cited, deduplicated in order of first
    citation. Never longer than ``max_chars`` (at least 40).
    """
    if max_chars < 40:
        raise ValueError(f"max_chars must be at least 40, got {max_chars!r}")
    customers = state.customer_turns
    count = max(state.customer_turn_count, 1)
    quote_len = max(24, max_chars // 4)
    first = state.first_customer_text or (customers[0].text if customers else state.message.text)
    latest = state.message.text
    parts = [f"{count} customer turn{'s' if count != 1 else ''}."]
    if count == 1 or _quote(first) == _quote(latest):
        parts.append(f'Asked: "{_quote(latest, quote_len)}".')
    else:
        parts.append(f'First: "{_quote(first, quote_len)}". Latest: "{_quote(latest, quote_len)}".')

    bot = state.bot_turns
    ungrounded = sum(1 for t in bot if t.meta.get("grounded") is False) + (0 if state.candidate.grounded else 1)
    if ungrounded:
        latest_note = ", the proposed one included" if not state.candidate.grounded else ""
        parts.append(f"Bot unsure: {ungrounded} of {len(bot) + 1} replies ungrounded{latest_note}.")
    else:
        parts.append("Bot unsure: no.")

    titles: list[str] = []
    seen: set[str] = set()
    for turn in bot:
        for source in turn.sources:
            key = source.id or source.title
            if key not in seen:
                seen.add(key)
                titles.append(_quote(source.title, 60))
    parts.append(f"Cited: {'; '.join(titles)}." if titles else "Cited: none.")
    return _quote(" ".join(parts), max_chars)
