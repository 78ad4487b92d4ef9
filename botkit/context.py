"""Reading a message in the context of the conversation, before retrieval.

Two things are resolved here, both deterministically and recorded on the stored turn:

* follow-ups: "and how long does that take?" means nothing alone. A message that may lean on
  the conversation (led by a connective, a pronoun with few words of its own, or short and
  either unclear alone or answering a clarifying question) is searched twice, alone and with
  the previous question's key terms; the combined reading wins only when it finds an answer
  whose best hit stands out from the runner-up at least as clearly (see :func:`read_in_context`
  and docs/confidence.md, "Follow-ups");
* answers to a clarifying question: "2", "the second one" or a topic's words pick one of
  the options the bot offered.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence

from botkit.types import SearchResult, Turn

Search = Callable[[str], Awaitable[SearchResult]]

_LEAD = re.compile(r"^(and|but|also|plus|so|then|what about|how about|what if|ok(ay)?,? and|and what|and how)\b", re.I)
_ANAPHORA = re.compile(r"\b(it|its|that|this|those|these|they|them|their|there|one|ones|same|such)\b", re.I)
_ORDINALS = {"1": 0, "one": 0, "first": 0, "2": 1, "two": 1, "second": 1, "3": 2, "three": 2, "third": 2,
             "last": -1}
_WORD = re.compile(r"[a-z0-9]+")
_TERM = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")  # words, keeping "two-factor", "PAY-402", "hasn't" whole
# Words that carry no topic: a follow-up's content words are what is left of it without these,
# and a question's key terms are what is left of it to carry into the next search.
_FUNCTION_WORDS = frozenset("""
a about after again also am an and any anything are as at be been before being but by can could did do does
doing done for from get got had has have having he her here him his how i if in into is it its just me might
more much my no not now of off ok okay on once only or other our out please plus really same she should so
some still such than that the their them then there these they this those to too up us very was we were what
when where which who why will with would yes yet you your
""".split())


def looks_like_followup(text: str, max_words: int) -> bool:
    words = text.split()
    if not words:
        return False
    if _LEAD.search(text.strip()):  # "and ...", "what about ..." lean on what came before, even when longer
        return len(words) <= 2 * max_words
    return len(words) <= max_words and bool(_ANAPHORA.search(text))


def resolve_followup(text: str, history: Sequence[Turn], max_words: int) -> str:
    """The text-only reading (one search, no comparison): the message, or the previous
    question plus the message when :func:`looks_like_followup`. The engine uses
    :func:`read_in_context`; this stays as the baseline benchmarks/followups.py measures."""
    if max_words <= 0 or not looks_like_followup(text, max_words):
        return text
    previous = next((t for t in reversed(history) if t.role == "customer"), None)
    if previous is None:
        return text
    return f"{previous.resolved_query or previous.text} {text}"


def _is_function_word(word: str) -> bool:
    lowered = word.lower().replace("’", "'")
    return (lowered in _FUNCTION_WORDS or lowered.endswith("n't")  # don't, can't, hasn't
            or lowered.split("'")[0] in _FUNCTION_WORDS)  # it's, I'd, what's


def content_words(text: str) -> list[str]:
    """The message's own topic words: everything but function words and pronouns."""
    return [w for w in _TERM.findall(text) if not _is_function_word(w)]


def key_terms(question: str) -> str:
    """What a question carries into the next search: its content words, in order, once each.
    "How much does shipping cost in the US?" -> "shipping cost". The bot's reply is never
    used: its wording would pull the search back to the article it came from."""
    seen: set[str] = set()
    kept = []
    for word in content_words(question):
        if word.lower() not in seen:
            seen.add(word.lower())
            kept.append(word)
    return " ".join(kept)


def may_lean_on_context(text: str, max_words: int) -> bool:
    """Whether the message might need the previous question, before any search: led by a
    connective ("and for furniture?"), or leaning on a pronoun while saying little of its own
    ("can I still send it back if it's been lit?": 3 content words). A full question with a
    pronoun ("My card got declined with PAY-402, what does it mean?") has words enough of its own."""
    if max_words <= 0 or not text.split():
        return False
    if looks_like_followup(text, max_words):
        return True
    return (len(text.split()) <= 2 * max_words and bool(_ANAPHORA.search(text))
            and len(content_words(text)) <= max_words // 2)


def margin(result: SearchResult) -> float:
    """How clearly the best hit stands out: its score minus the runner-up's (its score when
    alone; -1 when nothing was found)."""
    if not result.hits:
        return -1.0
    return result.hits[0].score - (result.hits[1].score if len(result.hits) > 1 else 0.0)


def _combined_wins(alone: SearchResult, combined: SearchResult) -> bool:
    """Whether the reading with the previous question wins: only when it finds an answer (a
    merged query that answers nothing is no better than the message alone, and reads worse in
    the transcript); then when the message alone found none, or the combined best hit stands
    out at least as clearly as the lone one (ties go to the follow-up reading)."""
    if not combined.answered:
        return False
    return not alone.answered or margin(combined) >= margin(alone)


def _after_clarify(history: Sequence[Turn]) -> bool:
    """Whether the bot's last turn asked which topic the customer meant: the reply that did not
    pick an option (resolve_choice found none) most likely narrows that question down."""
    last_bot = next((t for t in reversed(history) if t.role == "bot"), None)
    return last_bot is not None and last_bot.action == "clarify"


async def read_in_context(text: str, history: Sequence[Turn], search: Search, *, max_words: int,
                          unclear_margin: float = 0.02) -> tuple[str, SearchResult]:
    """The query to answer with and its search result.

    The message is searched alone first. It is searched again with the previous customer
    question's key terms in front when it may lean on the conversation: it reads like a
    follow-up (:func:`may_lean_on_context`), or it is short (at most ``max_words`` words) and
    either answers the bot's clarifying question or is unclear alone (its best hit within
    ``unclear_margin`` of the runner-up: the bot would have to ask which). The combined reading
    is kept only when it finds an answer that stands out at least as clearly (see
    :func:`_combined_wins`). So "how long does the refund take after that?" after "How do I
    start a return?" stays alone (refund timing stands out), while "what about canada?" after a
    shipping-cost question is read as "shipping cost what about canada?". ``max_words`` 0
    switches follow-ups off (the message is always read alone).
    """
    alone = await search(text)
    previous = next((t for t in reversed(history) if t.role == "customer"), None)
    if previous is None or max_words <= 0:
        return text, alone
    short = len(text.split()) <= max_words
    if not (may_lean_on_context(text, max_words)
            or (short and (_after_clarify(history) or margin(alone) < unclear_margin))):
        return text, alone
    terms = key_terms(previous.resolved_query or previous.text)
    if not terms:
        return text, alone
    query = f"{terms} {text}"
    combined = await search(query)
    return (query, combined) if _combined_wins(alone, combined) else (text, alone)


def resolve_choice(text: str, options: Sequence[Mapping[str, object]]) -> Mapping[str, object] | None:
    """Which offered option a reply to a clarifying question picks, if it clearly picks one."""
    if not options:
        return None
    lowered = text.lower().strip().rstrip(".!")
    words = _WORD.findall(lowered)
    if 0 < len(words) <= 4:
        for word in words:
            if word in _ORDINALS:
                index = _ORDINALS[word]
                if -len(options) <= index < len(options):
                    return options[index]
    # otherwise: the option whose title shares clearly more words with the reply than the others
    said = set(words)
    scores = []
    for option in options:
        title_words = {w for w in _WORD.findall(str(option.get("title", "")).lower()) if len(w) > 2}
        scores.append(len(said & title_words) / max(1, len(title_words)))
    best = max(range(len(options)), key=lambda i: scores[i])
    ranked = sorted(scores, reverse=True)
    if ranked[0] >= 0.34 and (len(ranked) == 1 or ranked[0] - ranked[1] >= 0.2):
        return options[best]
    return None
