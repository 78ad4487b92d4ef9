"""Is a generated reply grounded in its passages? Cheap lexical checks, no model.

Two signals, both deliberately strict because a wrong refund amount costs more than a plainer
extractive answer:

* :func:`grounding_score`: the share of the reply's content words (lowercase, 3+ letters, minus
  stopwords and courtesy words, lightly stemmed) that occur in the passages;
* :func:`unsupported_numbers`: amounts, numbers and codes ("$79", "14", "PAY-409", "TP-100482")
  in the reply that occur in no passage. An amount must match with its currency ("$99" is not
  supported by "CA$99"); a bare number is supported by the same number anywhere.

Limits: numbers written as words ("sixty days") and paraphrases with different vocabulary are
not recognised; the latter make the check err towards the extractive fallback.
"""

from __future__ import annotations

import re

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each either else even ever every
few for from further had has have having he her here hers herself him himself his how however i if
in into is it its itself just let lets like may me might more most much must my myself neither no
nor not now of off on once one only or other our ours ourselves out over own per quite rather same
she should since so some such than that the their theirs them themselves then there these they
this those though through thus to too under until up upon very via was we were what when where
whether which while who whom whose why will with within without would yet you your yours yourself
yourselves really still already always usually often sometimes etc get got make made way thing
things something anything everything nothing need needs want wants
isn aren wasn weren don doesn didn couldn won wouldn shouldn haven hasn hadn mustn needn ain
hello hi hey dear thanks thank please sorry happy glad help helps helping hope sure course certainly
absolutely great welcome kind regards cheers assist assistance question questions answer feel free
know let us okay ok yes
""".split())
"""Function words plus the courtesy words a friendly reply adds without claiming anything."""

_WORD = re.compile(r"[a-z]+(?:['’][a-z]+)?")
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]|\(passage\s+\d+\)", re.IGNORECASE)
# [^\S\n]: "^\s*" would run over the following blank lines from every line start (quadratic).
_LIST_MARKER = re.compile(r"^[^\S\n]*\d{1,2}[.)]\s+", re.MULTILINE)
# Order matters: codes first ("PAY-409"), then amounts with a currency ("CA$99", "$7.95", "€89"),
# then bare numbers ("14", "3.5", "30%"). Thousands separators are dropped when normalising.
# Code segments are bounded so that "a-a-a-..." is scanned in linear time (each start tries a few).
_NUMBERISH = re.compile(
    r"(?P<code>\b[A-Za-z]{1,10}(?:-[A-Za-z0-9]{1,20}){0,4}-\d[A-Za-z0-9]{0,20}\b)"
    r"|(?P<amount>\b(?:[A-Z]{1,3})?[$€£¥]\s?\d+(?:[.,]\d+)*|[$€£¥]\s?\d+(?:[.,]\d+)*)"
    r"|(?P<number>\d+(?:[.,]\d+)*%?)"
)


def _stem(word: str) -> str:
    """A light suffix stripper: plurals, -ed, -ing, -ly and a final -e, so that "refunds",
    "refunded" and "refund" meet, and "charges"/"charge", "shipping"/"ship" do too."""
    w = word
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        w = w[:-1]
    for suffix in ("ing", "ied", "ed", "ly"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)] + ("y" if suffix == "ied" else "")
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":  # shipp -> ship
                w = w[:-1]
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def content_words(text: str) -> list[str]:
    """Stemmed content words of ``text``, in order (repeats kept)."""
    words = []
    for match in _WORD.finditer(text.lower()):
        word = re.split(r"['’]", match.group(0))[0]  # "isn't" -> "isn", "customer's" -> "customer"
        if len(word) >= 3 and word not in STOPWORDS:
            words.append(_stem(word))
    return words


def grounding_score(text: str, passages: list[str]) -> float:
    """Share of the reply's content words found in the passages (0.0 when it has none)."""
    words = content_words(_CITATION.sub(" ", text))
    if not words:
        return 0.0
    known = set(content_words("\n".join(passages)))
    return sum(w in known for w in words) / len(words)


def _numberish(text: str) -> list[tuple[str, str, str]]:
    """(as written, kind, normalised) for every code, amount and number in ``text``."""
    text = _LIST_MARKER.sub(" ", _CITATION.sub(" ", text))
    found = []
    for m in _NUMBERISH.finditer(text):
        kind = m.lastgroup or "number"
        raw = m.group(0)
        norm = re.sub(r"\s", "", raw.lower())
        norm = re.sub(r"(?<=\d),(?=\d{3}\b)", "", norm)  # 1,000 -> 1000
        found.append((raw, kind, norm))
    return found


def _bare(norm: str) -> str:
    """The digits of an amount or code: "ca$99" -> "99", "pay-409" -> "409"."""
    digits = re.findall(r"\d+(?:\.\d+)?", norm)
    return digits[-1] if digits else norm


def unsupported_numbers(text: str, passages: list[str]) -> list[str]:
    """Numbers, amounts and codes in ``text`` that no passage contains (as written, no repeats)."""
    full: set[str] = set()
    bare: set[str] = set()
    for _raw, _kind, norm in _numberish("\n".join(passages)):
        full.add(norm)
        bare.add(_bare(norm))
        bare.add(norm.rstrip("%"))
    missing: list[str] = []
    for raw, kind, norm in _numberish(text):
        ok = norm in full if kind in ("code", "amount") else (norm in bare or norm.rstrip("%") in bare)
        if not ok and raw not in missing:
            missing.append(raw)
    return missing


def _repetitive(words: list[str]) -> bool:
    """A degenerate loop ("refund refund refund ...") reuses passage words but says nothing."""
    return len(words) >= 8 and len(set(words)) / len(words) < 0.3


def is_grounded(text: str, passages: list[str], min_score: float) -> tuple[bool, str]:
    """Whether a reply may be sent as it is, and if not, why (a short reason for logs and notes)."""
    if not text.strip():
        return False, "empty reply"
    numbers = unsupported_numbers(text, passages)
    if numbers:
        shown = ", ".join(numbers[:5])
        return False, f"unsupported number{'s' if len(numbers) > 1 else ''} {shown}"
    words = content_words(_CITATION.sub(" ", text))
    if not words:
        return False, "no content words"
    if _repetitive(words):
        return False, "repetitive reply"
    score = grounding_score(text, passages)
    if score < min_score:
        known = set(content_words("\n".join(passages)))
        unknown = list(dict.fromkeys(w for w in words if w not in known))[:5]
        return False, f"grounding {score:.2f} < {min_score:.2f} (not in passages: {', '.join(unknown)})"
    return True, f"grounding {score:.2f}"
