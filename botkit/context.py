"""Reading a message in the context of the conversation, before retrieval.

Two things are resolved here, both deterministically and recorded on the stored turn:

* follow-ups: "and how long does that take?" means nothing alone; a short message led by
  a connective or leaning on a pronoun is read together with the previous question;
* answers to a clarifying question: "2", "the second one" or a topic's words pick one of
  the options the bot offered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from botkit.types import Turn

_LEAD = re.compile(r"^(and|but|also|plus|so|then|what about|how about|what if|ok(ay)?,? and|and what|and how)\b", re.I)
_ANAPHORA = re.compile(r"\b(it|its|that|this|those|these|they|them|their|there|one|ones|same|such)\b", re.I)
_ORDINALS = {"1": 0, "one": 0, "first": 0, "2": 1, "two": 1, "second": 1, "3": 2, "three": 2, "third": 2,
             "last": -1}
_WORD = re.compile(r"[a-z0-9]+")


def looks_like_followup(text: str, max_words: int) -> bool:
    words = text.split()
    if not words:
        return False
    if _LEAD.search(text.strip()):  # "and ...", "what about ..." lean on what came before, even when longer
        return len(words) <= 2 * max_words
    return len(words) <= max_words and bool(_ANAPHORA.search(text))


def resolve_followup(text: str, history: Sequence[Turn], max_words: int) -> str:
    """The text to retrieve with: the message, or the previous question plus the message."""
    if max_words <= 0 or not looks_like_followup(text, max_words):
        return text
    previous = next((t for t in reversed(history) if t.role == "customer"), None)
    if previous is None:
        return text
    return f"{previous.resolved_query or previous.text} {text}"


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
