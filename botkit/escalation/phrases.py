"""The phrase syntax (literal words or ``re:`` regex), the default phrase tables, money amounts."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

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
    ("human please",
     r"\b(?:humans?|persons?|agents?|representatives?|operators?)\s+(?:please|pls|plz|now|asap|only)\b"),
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
