"""Which language a customer wrote in, from the text alone, with no model to load.

Most of the world's scripts name their language outright: Han characters are Chinese
(unless kana say Japanese), Hangul is Korean, Thai script is Thai, and so on. So detection
first counts the letters of each script (:data:`SCRIPTS`); a message whose letters are
mostly in one of these scripts is in its language, whatever its length. CJK characters
count three times, because one of them carries about as much as a short Latin word: an
order number or a brand name in Latin letters does not outvote a Chinese sentence.

Latin script is shared by dozens of languages. By default a Latin-script message is taken
to be in the knowledge base's own language (``default``): that errs on the side that never
hurts, as an English question is never told that the help centre "is not in its language".
With ``latin=True`` (``knowledge.detect_latin: true``) :func:`detect_language` asks
``langdetect`` (the optional ``languages`` extra; 2.5 MB, offline profiles, Apache-2.0) when
the message has at least :data:`LATIN_MIN_WORDS` words, none of them an unambiguous English
word (:data:`ENGLISH_WORDS`, when the KB is English), and langdetect gives it a probability
of :data:`LATIN_MIN_PROB`. It is off by default because it still misfires on terse English
(1 of the demo's 70 English queries, "cedar linen duvet in king size?", is called Dutch).

This module is in botkit's core so that both the knowledge base (which searches the
customer's language) and the responders (which say when it has nothing in it) can use it.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

# (first, last code point, language). Order matters only for overlaps (none here).
SCRIPTS: tuple[tuple[int, int, str], ...] = (
    (0x3040, 0x30FF, "ja"),  # hiragana, katakana
    (0x31F0, 0x31FF, "ja"),  # katakana phonetic extensions
    (0xFF66, 0xFF9F, "ja"),  # half-width katakana
    (0x1100, 0x11FF, "ko"),  # hangul jamo
    (0x3130, 0x318F, "ko"),  # hangul compatibility jamo
    (0xAC00, 0xD7AF, "ko"),  # hangul syllables
    (0x3400, 0x4DBF, "zh"),  # CJK extension A
    (0x4E00, 0x9FFF, "zh"),  # CJK unified ideographs
    (0xF900, 0xFAFF, "zh"),  # CJK compatibility ideographs
    (0x20000, 0x2FA1F, "zh"),  # CJK extensions B-F and supplement
    (0x0E00, 0x0E7F, "th"),
    (0x0600, 0x06FF, "ar"),  # Arabic (Persian and Urdu share it: reported as ar)
    (0x0750, 0x077F, "ar"),
    (0x0590, 0x05FF, "he"),
    (0x0400, 0x04FF, "ru"),  # Cyrillic (Ukrainian, Bulgarian... share it: reported as ru)
    (0x0370, 0x03FF, "el"),
    (0x0900, 0x097F, "hi"),  # Devanagari
    (0x0980, 0x09FF, "bn"),
    (0x0B80, 0x0BFF, "ta"),
    (0x10A0, 0x10FF, "ka"),
    (0x0530, 0x058F, "hy"),
)
CJK_WEIGHT = 3
LATIN_MIN_WORDS = 4
LATIN_MIN_PROB = 0.99
# English words that no other common Latin-script language spells the same way ("in", "do",
# "a", "to", "am" are left out: Dutch, Portuguese, Polish, German have them). One of them in a
# message keeps it English when English is the knowledge base's language: langdetect called
# "how do i file my taxes in canada" Somali and "do you guys sell cars" Spanish.
ENGLISH_WORDS = frozenset(
    "the my me is are was were be been you your we our it its how what where when why which who can could would "
    "should will does did don't dont have has had of and or for with from at by this that there not yes please "
    "hi hello thanks thank get got any some if i'm im".split())

# English names, for the sentence that says a language is not in the help centre.
NAMES: dict[str, str] = {
    "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "th": "Thai", "ar": "Arabic", "he": "Hebrew",
    "ru": "Russian", "el": "Greek", "hi": "Hindi", "bn": "Bengali", "ta": "Tamil", "ka": "Georgian",
    "hy": "Armenian", "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "vi": "Vietnamese", "id": "Indonesian",
    "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish", "cs": "Czech", "ro": "Romanian",
    "hu": "Hungarian", "uk": "Ukrainian",
}


@dataclass(frozen=True)
class Detection:
    """``language``: an ISO 639-1 code, or ``default`` when the text did not tell.
    ``how``: ``script`` (its letters' script), ``langdetect`` (a Latin-script text langdetect
    was sure of), or ``default`` (no letters, too short, or no detector for its script)."""

    language: str
    how: str


def _script_of(ch: str) -> str | None:
    cp = ord(ch)
    if cp < 0x0370:
        return "latin" if ch.isalpha() else None
    for lo, hi, lang in SCRIPTS:
        if lo <= cp <= hi:
            return lang
    if 0x1E00 <= cp <= 0x1EFF:  # Latin extended additional (Vietnamese)
        return "latin"
    return None


def script_counts(text: str) -> dict[str, int]:
    """Letters per script (``latin`` or a language code), CJK characters weighted by :data:`CJK_WEIGHT`."""
    counts: dict[str, int] = {}
    for ch in unicodedata.normalize("NFC", text):
        script = _script_of(ch)
        if script is not None:
            counts[script] = counts.get(script, 0) + (CJK_WEIGHT if script in ("zh", "ja", "ko") else 1)
    return counts


_detector_lock = threading.Lock()
_langdetect_ready: bool | None = None


def _langdetect(text: str) -> str | None:
    """langdetect's answer when it is installed and sure; None otherwise."""
    global _langdetect_ready
    with _detector_lock:
        if _langdetect_ready is None:
            try:
                from langdetect import DetectorFactory

                DetectorFactory.seed = 0  # langdetect samples at random: the same text must get the same answer
                _langdetect_ready = True
            except ImportError:
                _langdetect_ready = False
    if not _langdetect_ready:
        return None
    from langdetect import detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    try:
        with _detector_lock:  # its factory loads profiles lazily and is not thread-safe doing so
            best = detect_langs(text)[0]
    except (LangDetectException, IndexError):
        return None
    lang = str(best.lang).split("-")[0]
    return lang if best.prob >= LATIN_MIN_PROB else None


def detect_language(text: str, default: str = "en", *, latin: bool = False) -> Detection:
    """The language ``text`` is written in; ``default`` (the knowledge base's language) when unsure.

    ``latin=True`` asks langdetect about Latin-script texts (``knowledge.detect_latin`` in bot.yaml);
    by default every Latin-script text is taken to be in ``default``.
    """
    counts = script_counts(text)
    if not counts:
        return Detection(default, "default")
    # Japanese writes Han characters too; any kana among them makes the text Japanese
    if counts.get("ja") and counts.get("zh"):
        counts["ja"] += counts.pop("zh")
    script, n = max(counts.items(), key=lambda kv: kv[1])
    if script != "latin":
        return Detection(script, "script")
    words = re.findall(r"[^\W\d_][\w']*", text.lower())
    if latin and len(words) >= LATIN_MIN_WORDS and not (default == "en" and ENGLISH_WORDS.intersection(words)):
        found = _langdetect(text)
        if found is not None:
            return Detection(found, "langdetect")
    return Detection(default, "default")


def language_name(code: str) -> str:
    """``th`` -> ``Thai``; an unknown code is returned as it is."""
    return NAMES.get(code, code)


# What the extractive responder says in a language the help centre has, where its own
# sentences would otherwise be English. Keyed by language code; English is the responder's default.
DONT_KNOW: dict[str, str] = {
    "zh": "抱歉，我在帮助中心里没有找到这个问题的答案。您可以换个说法再问一次；如果您愿意，我也可以为您转接人工客服。",
}
CLARIFY: dict[str, str] = {
    "zh": "我可以帮您。下面哪一项最接近您的问题？\n{listing}\n（请回复编号或主题。）",
}


def not_in_language(code: str, kb_languages: tuple[str, ...]) -> str:
    """The fixed English sentence that precedes a reply when the help centre has nothing in ``code``."""
    have = " and ".join(language_name(x) for x in kb_languages) or "English"
    return (f"Sorry, our help centre is not available in {language_name(code)} yet, "
            f"so this reply is in {have}.")
