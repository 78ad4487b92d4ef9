"""Redact personal data from support transcripts before anything is written to disk.

:class:`Redactor` finds e-mail addresses, phone numbers, payment cards (Luhn-checked), IBANs
(mod-97 checked), street addresses, the project's order ids (only when a pattern is given)
and people's names, and replaces each with a typed placeholder such as ``[EMAIL]`` or ``[NAME]``.

* Phones: national and international forms of many regions (``(020) 7946 0958``,
  ``030 12345678``, ``089/1234567``, ``06 12 34 56 78``, ``13800138000``, ``+49 (0)30 901820``),
  checked with ``phonenumbers`` (Google's libphonenumber metadata). Numbers led by a word such
  as "tracking", "order", "invoice" or "UPS", or next to a code ("1Z 999 AA1 01 2345 6784"),
  dates and bare digit runs (order numbers, EANs) are kept.
* Addresses: number-first (US/UK/FR/CN: "1600 Pennsylvania Avenue NW, Washington, DC 20500",
  "12 rue de Rivoli, 75001 Paris"), street-first (DE/NL/ES/IT: "Hauptstraße 5, 10115 Berlin",
  "Via Roma 15, 00184 Roma"; a street without a type word only with a postcode after it),
  Japanese block numbers with a ward ("1-1 Chiyoda, Chiyoda-ku, Tokyo 100-8111") and PO boxes,
  each with its unit, city, district, state and postcode.
* Names: after a cue ("my name is", "I'm", "this is", Mr/Ms/Mrs/Dr, greetings "Hi Anna," and
  sign-offs "Thanks, Anna") with a stop list, so "Hi there" or "I'm Canadian" stay; and without
  a cue when a given name from :mod:`training.given_names` starts it ("Emma Johnson placed the
  order", "Zoë asked"), except names that are also ordinary words ("Will", "May", "Amber").
  Letters outside ASCII count ("José Müller", "Łukasz Wójcik").

Every pattern runs in time linear in the text: repetitions are bounded and no two adjacent
quantifiers can match the same characters (tests/test_regex_bounds.py times adversarial input).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers

from training.given_names import AMBIGUOUS, CHINESE_SURNAMES, FAMILY_FIRST_SURNAMES, GIVEN_NAMES

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


# IBAN lengths per country (the SWIFT IBAN registry, ISO 13616).
IBAN_LENGTHS: dict[str, int] = {cc: int(n) for cc, n in (p.split(":") for p in """
AD:24 AE:23 AL:28 AT:20 AZ:28 BA:20 BE:16 BG:22 BH:22 BI:27 BR:29 BY:28 CH:21 CR:22 CY:28 CZ:24 DE:22 DJ:27
DK:18 DO:28 EE:20 EG:29 ES:24 FI:18 FK:18 FO:18 FR:27 GB:22 GE:22 GI:23 GL:18 GR:27 GT:28 HR:21 HU:28 IE:22
IL:23 IQ:23 IS:26 IT:27 JO:30 KW:30 KZ:20 LB:28 LC:32 LI:21 LT:20 LU:20 LV:21 LY:25 MC:27 MD:24 ME:22 MK:19
MN:20 MR:27 MT:31 MU:30 NI:28 NL:18 NO:15 OM:23 PK:24 PL:28 PS:29 PT:25 QA:29 RO:24 RS:22 RU:33 SA:24 SC:31
SD:18 SE:24 SI:19 SK:24 SM:27 SO:23 ST:25 SV:28 TL:23 TN:24 TR:26 UA:29 VA:22 VG:24 XK:20
""".split())}


def iban_ok(iban: str) -> bool:
    """Mod-97 valid, of a country that has IBANs, and as long as that country's IBANs."""
    s = re.sub(r"\s+", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s) or len(s) != IBAN_LENGTHS.get(s[:2]):
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban_span(text: str, start: int, end: int) -> int | None:
    """The end of a valid IBAN starting at ``start``, cut to its country's length ("... 00 EUR")."""
    want = IBAN_LENGTHS.get(text[start:start + 2].upper(), 0)
    n = 0
    for i in range(start, end):
        if text[i] != " ":
            n += 1
            if n == want:
                return i + 1 if iban_ok(text[start:i + 1]) else None
    return None


def card_brand_ok(digits: str) -> bool:
    """Whether the number's issuer prefix (IIN) and length are a card network's (Visa, Mastercard,
    Amex, Discover, JCB, Diners, UnionPay, Maestro), so that an IMEI or a parcel number that
    happens to pass Luhn is kept."""
    n, p2, p3, p4 = len(digits), int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if 3528 <= p4 <= 3589 or p2 == 62 or p4 == 6011 or 644 <= p3 <= 649 or p2 == 65:
        return 16 <= n <= 19
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:
        return 14 <= n <= 19
    return (p2 == 50 or 56 <= p2 <= 69) and 12 <= n <= 19  # Maestro


def _char_class(test: str) -> str:
    """A character class body of the Latin, Greek and Cyrillic letters for which ``test`` holds."""
    chars = [chr(c) for c in range(0x41, 0x530) if getattr(chr(c), test)() and chr(c).isalpha()]
    chars += [chr(c) for c in range(0x1E00, 0x1F00) if getattr(chr(c), test)()]  # Vietnamese
    ranges: list[list[str]] = []
    for ch in chars:
        if ranges and ord(ch) == ord(ranges[-1][1]) + 1:
            ranges[-1][1] = ch
        else:
            ranges.append([ch, ch])
    return "".join(re.escape(a) if a == b else f"{re.escape(a)}-{re.escape(b)}" for a, b in ranges)


_UP = _char_class("isupper")
_LO = _char_class("islower")
_L = _UP + _LO

# --- e-mail, IBAN, card -------------------------------------------------------------------
# Local part and domain labels may hold non-ASCII letters ("søren@exämple.dk"); a local part
# never starts with a dot, so an address right after another one ("a@b.co.c@d.co") is found.
_EM = rf"[{_L}0-9_%+-]"
_LABEL = rf"[{_L}0-9](?:[{_L}0-9-]{{0,62}})"
_EMAIL = re.compile(
    rf"(?<!{_EM}){_EM}[{_L}0-9._%+-]{{0,63}}@{_LABEL}(?:\.{_LABEL}){{0,8}}\.[{_L}]{{2,24}}(?![{_L}0-9_])")
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?\b")
_CARD = re.compile(r"(?<![\w-])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![\w-])(?![ -]\d)")

# --- phones -------------------------------------------------------------------------------
# A candidate: optional +country code (and the German "(0)"), an optional area code in
# parentheses, then digit groups with one separator between them; never part of a longer
# number, code, amount or date. Each group is bounded and needs a separator before it, so a
# failed match backtracks over at most a few dozen characters.
_PHONE = re.compile(
    r"(?<![\w+#@$€£¥/.,:-])(?<!\d[ ./-])"
    r"(?:\+\d{1,3}[ .-]?(?:\(0\)[ .-]?)?)?(?:\(\d{1,5}\)[ .-]?)?"
    r"\d{1,12}(?:[ .\-/]\d{1,8}){0,5}"
    r"(?![\w]|[ .,/-]\d)"
)
_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{2,4}")
# The last words before a number that make it something other than a phone number.
_NOT_PHONE_WORDS = frozenset("""
tracking track waybill order orders invoice ref reference case ticket item sku ean isbn serial model parcel
shipment ups usps fedex dhl label customer account article part receipt transaction booking confirmation
""".split())
_ZERO_REGIONS = ("GB", "DE", "FR", "NL", "IT", "ES", "CN", "JP", "AU", "CH", "BE", "AT", "BR", "IN", "PL")
"""Regions tried for a national number with a trunk 0 or an area code in parentheses."""
_PLAIN_REGIONS = ("US", "ES", "IT", "PL", "CN", "IN", "BR")
"""Regions whose national numbers are written without a trunk 0 (NANP, ES, IT mobiles, ...)."""


@lru_cache(maxsize=4096)
def _valid_phone(number: str) -> bool:
    """Whether ``number`` (as written, "(0)" removed) is a phone number of a plausible region."""
    digits = re.sub(r"\D", "", number)
    if not 8 <= len(digits) <= 15:
        return False
    if number.startswith("+"):
        try:
            parsed = phonenumbers.parse(number, None)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_possible_number(parsed)
    grouped = not digits == number
    if not grouped and not (re.fullmatch(r"1[3-9]\d{9}", digits) or digits[0] == "0"):
        return False  # a bare digit run: an order number or EAN, unless a CN mobile or national 0...
    if digits[0] == "0" or number.startswith("("):
        regions: tuple[str, ...] = _ZERO_REGIONS
    else:
        if len(digits) < 9:
            return False
        regions = _PLAIN_REGIONS
    for region in regions:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(number, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def _phone_ok(text: str, start: int, end: int) -> bool:
    number = text[start:end]
    if _DATE.fullmatch(number):
        return False
    before = text[max(0, start - 40):start].split()
    if before and any(ch.isdigit() for ch in before[-1]):
        return False  # the tail of a code: "1Z 999 AA1 01 2345 6784"
    if any(w.strip(".,:;#()").lower() in _NOT_PHONE_WORDS for w in before[-3:]):
        return False
    return _valid_phone(number.replace("(0)", ""))


# --- addresses ----------------------------------------------------------------------------
_CAPW = rf"[{_UP}][{_L}'’-]{{0,30}}(?!\w)"  # a capitalised word: "Saint-Honoré", "II", "NW"
_PART = r"(?:de|du|des|del|della|di|da|la|le|den|der|dem|van|von|het|y)"
_PHRASE = rf"(?:[lLdD]['’])?{_CAPW}(?:[ ](?:{_PART}[ ]){{0,2}}(?:[lLdD]['’])?{_CAPW}){{0,3}}"  # "de la Constitución"
_NUM = r"\d{1,5}[A-Za-z]?(?:[-/](?:\d{1,5}[A-Za-z]?|[IVX]{1,4})){0,3}"  # 12a, 45/3/12, 123-II
_DIR = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)"
_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
           r"Close|Crescent|Parkway|Pkwy|Highway|Hwy|Square|Sq|Row|Gardens|Mews|Loop|Circle|Alley)")
_UNIT_WORD = (r"(?i:Apt|Apartment|Unit|Suite|Ste|Flat|Fl|Floor|Room|Rm|apto|apartamento|piso|dpto|depto|bus|bte|"
              r"boîte|m|lok|lokal|top|whg|interno|int|scala|esc|puerta|porta|trappa|lgh)")
_UNIT = (rf"(?:,?[ ]{_UNIT_WORD}\.?[ ]?#?[A-Za-z0-9-]{{1,6}}(?![\w-])"
         r"|,?[ ]\d{1,2}[º°ª](?:[ ]?[A-Za-z](?![\w-]))?"  # ES/PT floor and door: 3º B
         r"|[ ][A-Z][ ]\d{1,3}(?![\w-]))")  # Nordic staircase and flat: 10 A 5
_AFTER_PART = r"(?=[ ]{0,3}(?:[,.;:!?)\n]|$|\d|[A-Z]{1,2}\d|[A-Z]{2}\b))"
_CITY = rf"(?:{_CAPW}|[{_LO}][{_L}'’-]{{1,30}}(?!\w))"  # after a postcode, a city may be typed in lower case
_POSTCODE_FORM = (
    rf"(?:,?[ ]{{1,3}}(?:"
    r"[A-Z]{2}[ ]{1,2}\d{5}(?:-\d{4})?(?!\d)"                 # US state + ZIP
    r"|[A-Z]{1,2}\d[A-Z\d]?[ ]?\d[A-Z]{2}\b"                  # UK
    r"|[A-Z]\d[A-Z][ ]?\d[A-Z]\d\b"                          # CA
    r"|\d{3}-\d{4}(?!\d)"                                    # JP
    rf"|\d{{4}}[ ]?[A-Z]{{2}}[ ]{{1,2}}{_CAPW}"                # NL: 1015 CJ Amsterdam
    rf"|(?:\d{{4,5}}|\d{{4}}-\d{{3}}|\d{{2}}-\d{{3}}|\d{{3}}[ ]\d{{2}})[ ]{{1,2}}{{city}}"  # 10115 Berlin, PT, PL, SE
    rf"(?:[ ](?:am|an|der|sur|upon|on|im)[ ]{_CAPW}|[ ]{_CAPW})?"  # Frankfurt am Main
    r"|(?:[A-Za-z]{2}[ ])?[A-Z]\d[A-Z][ ]?\d[A-Z]\d\b"         # CA with its province: ON M5H 2N2
    r"|\d{5}-\d{3}(?!\d)"                                    # BR CEP
    r"|(?:NSW|VIC|QLD|SA|WA|TAS|NT|ACT)[ ]\d{4}(?!\d)"          # AU state + postcode
    r"|\d{6}(?!\d)|\d{5}(?:-\d{4})?(?!\d)"                   # CN; US ZIP alone
    r"|[a-z]{2,20}(?:[ ][a-z]{2,20})?,?[ ][a-z]{2}[ ]\d{5}(?!\d)"  # typed in lower case: springfield il 62704
    r"|[a-z]{1,2}\d[a-z\d]?[ ]\d[a-z]{2}\b"                 # UK typed in lower case (_UK_LOWER)
    r"))"
)
_POSTCODE = _POSTCODE_FORM.replace("{city}", _CAPW)
_POSTCODE_LOWER = _POSTCODE_FORM.replace("{city}", _CITY)
_STATE = r"(?:[ ]?-[ ]?[A-Z]{2}\b)?"  # São Paulo - SP
_TAIL = rf"{_UNIT}?(?:,[ ]{{1,3}}{_CAPW}(?:[ ]{_CAPW}){{0,2}}{_STATE}{_AFTER_PART}){{0,3}}{_POSTCODE}?"
# Typed in lower case, a street needs its postcode: "88 queen st, apt 1207, toronto ON M5H 2N2".
_LWORD = rf"[{_L}][{_L}'’-]{{0,30}}(?![\w'’-])"
_UK_LOWER = r"[a-z]{1,2}\d[a-z\d]?[ ]\d[a-z]{2}\b"  # a UK postcode typed in lower case: m13 9pl
_AFTER_PART_LOWER = _AFTER_PART[:-2] + "|" + _UK_LOWER + "))"
_TAIL_NEEDS_CODE = (rf"{_UNIT}?(?:,[ ]{{1,3}}{_LWORD}(?:[ ]{_LWORD}){{0,2}}{_STATE}{_AFTER_PART_LOWER}){{0,3}}"
                    rf"{_POSTCODE_LOWER}")
_EU_POSTCODE = rf",?[ ]{{1,3}}(?:\d{{5}}|\d{{4}}[ ]?[A-Z]{{2}})[ ]{{1,2}}{_CAPW}"
_STREET_SUFFIX = (r"(?:straße|strasse|str\.|weg|allee|platz|gasse|ring|damm|ufer|gracht|laan|straat|plein|kade|singel|"
                  r"dijk|markt|steig|chaussee|gatan|gata|gate|vägen|väg|gade|vej|veien|vei|tie|katu|kuja)")
_STREET_WORD = (r"(?:Straße|Strasse|Str\.|Weg|Allee|Platz|Gasse|Ring|Damm|Ufer|Chaussee|gate|gata|gatan|vei|veien|"
                r"vej|gade|väg|vägen|straat|laan|weg)")
_PREFIX = (r"(?:Calle|C/|Avenida|Avda\.|Av\.|Plaza|Paseo|Carrer|Via|Viale|Piazza|Piazzale|Corso|Largo|Vicolo|Rua|"
           r"Travessa|Alameda|[Uu]l\.|[Aa]l\.|Ulica|Aleja)")
_HEADS = (
    # 1600 Pennsylvania Avenue NW / 500 W 2nd St / No. 1 Jianguomenwai Avenue / Flat 2, 45 High Street
    rf"(?:{_UNIT_WORD}\.?[ ]?#?[A-Za-z0-9-]{{1,6}},?[ ])?(?:No\.[ ]?)?{_NUM}[ ]{{1,2}}(?:{_DIR}[ ])?"
    rf"(?:(?:{_CAPW}|\d{{1,4}}(?:st|nd|rd|th))[ ]){{1,4}}{_SUFFIX}\b\.?(?:[ ]{_DIR}\b)?",
    r"\d{1,5}[ ](?:[a-z]{2,20}[ ]){1,2}(?:street|avenue|road|lane|drive|boulevard)\b",  # 14 elm street
    # 12 rue de Rivoli / 8 bis boulevard Haussmann
    rf"\d{{1,4}}(?:[ ]?(?:bis|ter|[A-Z]))?,?[ ](?i:rue|avenue|av\.|boulevard|bd|place|allée|impasse|chemin|"
    rf"quai|cours|route|square|passage)[ ](?:{_PART}[ ]){{0,2}}{_PHRASE}",
    # Calle Mayor 10 / Via Roma 15 / Corso Vittorio Emanuele II 21
    rf"{_PREFIX}[ ]?(?:{_PART}[ ]){{0,2}}{_PHRASE},?[ ]{_NUM}(?=[ ]{{0,3}}(?:[,.;:!?)\n]|$|\d{{4,5}}[ ])|{_UNIT})",
    # Hauptstraße 5 / Musterstr. 12a / Keizersgracht 123
    rf"[{_UP}][{_LO}]{{0,30}}{_STREET_SUFFIX}[ ]?{_NUM}",
    # Mariahilfer Straße 45 / Karl Johans gate 15
    rf"{_PHRASE}[ ]{_STREET_WORD}[ ]{_NUM}",
    # Unter den Linden 77, 10117 Berlin / Damrak 1, 1012 LG Amsterdam: only with the postcode
    rf"{_PHRASE}[ ]{_NUM}(?={_EU_POSTCODE})",
    # 2-8-1 Nishi-Shinjuku, Shinjuku-ku
    rf"\d{{1,4}}(?:-\d{{1,4}}){{1,2}}[ ]{_CAPW},[ ]{_CAPW}-(?:ku|shi|gun|cho|machi)\b",
    r"(?:P\.?[ ]?O\.?[ ]?Box|Postfach|Apartado|Casella[ ]Postale|Bo[iî]te[ ]Postale)[ ]\d{1,6}(?:[ ]\d{2}){0,3}(?!\d)",
)
_LHEADS = (
    # lindenweg 3 / via giuseppe garibaldi 7 / c/ de balmes 150 / 742 evergreen terrace / 12 rue de la paix
    rf"[{_L}][{_LO}]{{0,30}}{_STREET_SUFFIX}[ ]?{_NUM}",
    rf"(?i:{_PREFIX})[ ]?(?:{_PART}[ ]){{0,2}}{_LWORD}(?:[ ]{_LWORD}){{0,3}},?[ ]{_NUM}",
    rf"{_NUM}[ ](?:{_LWORD}[ ]){{1,3}}(?i:{_SUFFIX}|rue|via|calle)\b\.?",
    rf"\d{{1,4}}(?:[ ]?(?:bis|ter))?,?[ ](?i:rue|avenue|boulevard|bd|place|allée|impasse|chemin|quai)[ ]"
    rf"(?:{_PART}[ ]){{0,2}}{_LWORD}(?:[ ]{_LWORD}){{0,3}}",
)
_ADDRESSES = ([re.compile(rf"(?<![\w'’-]){head}{_TAIL}") for head in _HEADS]
              + [re.compile(rf"(?<![\w'’-]){head}{_TAIL_NEEDS_CODE}") for head in _LHEADS])

# --- names --------------------------------------------------------------------------------
_NAME_TOK = rf"(?:Mc|Mac|O['’]|D['’])?[{_UP}][{_LO}]+(?:['’-][{_UP}]?[{_LO}]+){{0,3}}"
_NPART = r"(?:van|von|de|der|den|del|della|di|da|das|dos|du|la|le|ter|ten|bin|ibn|al|el|y|zu)"
_FULL = rf"(?:{_NAME_TOK})(?:[ ](?:{_NPART}[ ]){{0,2}}(?:{_NAME_TOK})){{0,2}}"  # Anneke van der Berg
_JOIN = re.compile(rf"[ ](?:{_NPART}[ ]){{0,2}}")
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
please thanks thank welcome hello hi hey dear sir madam can could would should will did does do is are
my your our his her their i we you he she they what when where why how which who if as of for to by
""".split())

_INTRO_WORDS = (
    r"my name is|my name's|name's|i am|i'm|im|this is|it's|its|call me|you're speaking with|you are speaking with|"
    r"speaking with|you're chatting with|chatting with|ask for|under the name(?: of)?|put it under|"
    r"(?:full |account |card ?holder(?:'s)? |recipient(?:'s)? )?name(?: on the (?:account|card|order|booking))?"
    r"(?: is)?[ ]?:|account holder(?: is)?:?|addressed to|signed by|"
    r"me llamo|mi nombre es|je m'appelle|je m’appelle|mon nom est|ich heiße|ich heisse|mein name ist|"
    r"mi chiamo|il mio nome è|mijn naam is|ik heet|jag heter|mitt namn är|nazywam się|meu nome é|eu me chamo"
)
_CUE_INTRO = re.compile(
    rf"(?i:\b(?:{_INTRO_WORDS}))[ ]{{1,3}}(?P<n>{_FULL})(?!\w)"
)
# After the same cues, a known given name typed in lower case: "hey its sinead".
_CUE_INTRO_LOWER = re.compile(rf"(?i:\b(?:{_INTRO_WORDS}))[ ]{{1,3}}(?P<n>[{_LO}]{{2,20}})(?![\w'’-])")
# "Søren Lindqvist here" at the start of a message or after a greeting.
_CUE_HERE = re.compile(rf"(?:^|[,.!?:;\n][ ]{{0,3}})(?P<n>{_FULL})[ ]here\b", re.M)
_CUE_TITLE = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?[ ](?P<n>{_FULL})(?!\w)")
_CUE_GREET = re.compile(
    rf"\b(?i:Hi|Hello|Hey|Dear|Morning|Good morning|Good afternoon|Good evening|"
    rf"Thanks|Thank you|Thanks so much|Thanks again|Many thanks|Cheers|Bye|Goodbye|You're welcome|You’re welcome|"
    rf"Welcome back|Danke|Merci|Gracias|Grazie|Bonjour|Hallo|Hola|Ciao|Hej|Tack|Dzięki|Dziękuję|Obrigad[oa])"
    rf"(?:,[ ]{{0,3}}|[ ]{{1,3}})(?P<n>{_FULL})(?=[ \t]{{0,3}}(?:[,!.?:;\n]|$))"
)
# Each separator between the sign-off and the name is bounded and can match in one way only
# (the former "\s*\n?\s*[-–—]?\s*" took 55 s on "Thanks" + 2,000 spaces).
_CUE_SIGNOFF = re.compile(
    rf"(?:\b(?:Regards|Best regards|Kind regards|Best wishes|Best|Cheers|Thanks|Thank you|Many thanks)"
    rf"[,!.]?[ \t]{{0,3}}(?:\n[ \t]{{0,3}})?(?:[-–—][ \t]{{0,3}})?|^[ \t]{{0,3}}[-–—][ \t]{{0,3}})"
    rf"(?P<n>{_FULL})[ \t]{{0,3}}(?:[.!][ \t]{{0,3}})?$"
)
_CAP_TOKEN = re.compile(rf"(?<![\w'’-]){_NAME_TOK}(?![\w'’-])")
_SAINT = re.compile(r"\b(?:St|Ste|Saint|Sainte|San|Santa|Santo|São|Sankt)\.?[ ]\Z")  # "St. Patrick's day"


def _fold(word: str) -> str:
    """Lower case without accents, possessive "'s" dropped: "Zoë's" -> "zoe"."""
    word = re.sub(r"['’]s$", "", word).lower()
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _is_given(word: str) -> bool:
    first = re.sub(r"['’]s$", "", word).lower().split("-")[0]
    return (first in GIVEN_NAMES or _fold(first) in GIVEN_NAMES) and first not in AMBIGUOUS \
        and _fold(first) not in AMBIGUOUS


def _trim_name(text: str, start: int, name: str) -> tuple[int, int] | None:
    """The span of a name found at ``start``: stop words cut off the end, a possessive dropped."""
    words = name.split(" ")
    while words and words[-1].lower() in STOP_WORDS:
        words.pop()
    if not words or words[0].lower() in STOP_WORDS:
        return None
    kept = " ".join(words)
    kept = re.sub(r"['’]s$", "", kept)
    return start, start + len(kept)


def _gazetteer_names(text: str) -> list[tuple[int, int]]:
    """Names without a cue: a known given name (or Chinese surname) and the capitalised words after it."""
    toks = list(_CAP_TOKEN.finditer(text))
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(toks):
        tok = toks[i].group()
        chinese = _fold(tok) in CHINESE_SURNAMES or _fold(tok) in FAMILY_FIRST_SURNAMES
        if (not (_is_given(tok) or chinese) or tok.lower() in STOP_WORDS
                or _SAINT.search(text, max(0, toks[i].start() - 10), toks[i].start())):
            i += 1
            continue
        j = i
        while (j + 1 < len(toks) and j - i < 2 and _JOIN.fullmatch(text, toks[j].end(), toks[j + 1].start())
               and toks[j + 1].group().lower() not in STOP_WORDS
               and not re.search(r"['’]s$", toks[j].group())):
            j += 1
        if chinese and j == i:
            i += 1
            continue
        found = _trim_name(text, toks[i].start(), text[toks[i].start():toks[j].end()])
        if found:
            spans.append(found)
        i = j + 1
    return spans


Detector = Callable[[str], Iterable[tuple[int, int]]]
_CONTEXT = 48
"""Characters a detector may look back at before a match (look-behinds, "tracking" before a number)."""


class _Stage:
    """One detector's pass: its matches on the text as masked so far, longest first, each masked as
    "[XX..X]" (the way it reads once redacted) as it is taken; then, next to each span taken, the
    detector runs again on a window of the masked text, so that a match whose look-around saw
    characters now masked ("anna@example.com(415) 555-0132", "0@0.AA.0@0.AA") is found and
    redacting the output again finds nothing new. Each span costs two windows of bounded size,
    so the pass stays linear in the text.
    """

    def __init__(self, detect: Detector, reach: int, chars: list[str], spans: _Spans, kept: _Spans) -> None:
        self.detect, self.reach, self.chars, self.spans, self.kept = detect, reach, chars, spans, kept
        self.found: list[tuple[int, int]] = []
        self.todo: list[tuple[int, int]] = []

    def run(self) -> list[tuple[int, int]]:
        self._take_from(0, len(self.chars), lambda s, e: True)
        n = len(self.chars)
        while self.todo:
            start, end = self.todo.pop()
            lo = max(0, end - _CONTEXT)  # a match just after the span, with its left context

            def just_after(s: int, e: int, p: int = end) -> bool:
                return p <= s <= p + 3

            self._take_from(lo, min(n, end + self.reach), just_after)
            lo = max(0, start - self.reach - _CONTEXT)  # a match just before it

            def just_before(s: int, e: int, p: int = start, lo: int = lo) -> bool:
                return p - 3 <= e <= p and (lo == 0 or s - lo >= _CONTEXT)

            self._take_from(lo, min(n, start + 8), just_before)
        return self.found

    def _take_from(self, lo: int, hi: int, wanted: Callable[[int, int], bool]) -> None:
        window = "".join(self.chars[lo:hi])
        cands = sorted({(lo + s, lo + e) for s, e in self.detect(window)}, key=lambda c: (c[0] - c[1], c[0]))
        for start, end in cands:
            cut = (start == lo and lo > 0) or (end == hi and hi < len(self.chars))
            if start >= end or cut or not wanted(start, end):
                continue
            if self.kept.overlaps(start, end) or self.spans.overlaps(start, end):
                continue
            self.spans.force(start, end)
            self.found.append((start, end))
            self.todo.append((start, end))
            self.chars[start:end] = ["]"] if end - start == 1 else ["["] + ["X"] * (end - start - 2) + ["]"]


def _find_emails(text: str) -> Iterable[tuple[int, int]]:
    return [m.span() for m in _EMAIL.finditer(text)]


def _find_ibans(text: str) -> Iterable[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        end = _iban_span(text, m.start(), m.end())
        if end is not None:
            yield m.start(), end


def _find_cards(text: str) -> Iterable[tuple[int, int]]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 12 <= len(digits) <= 19 and luhn_ok(digits) and card_brand_ok(digits):
            yield m.span()


def _find_addresses(text: str) -> Iterable[tuple[int, int]]:
    for rx in _ADDRESSES:
        for m in rx.finditer(text):
            yield m.span()


def _find_phones(text: str) -> Iterable[tuple[int, int]]:
    for m in _PHONE.finditer(text):
        if _phone_ok(text, m.start(), m.end()):
            yield m.span()


def _find_names(text: str) -> Iterable[tuple[int, int]]:
    for rx in (_CUE_TITLE, _CUE_INTRO, _CUE_GREET, _CUE_SIGNOFF, _CUE_HERE):
        for m in rx.finditer(text):
            span = _trim_name(text, m.start("n"), m.group("n"))
            if span:
                yield span
    for m in _CUE_INTRO_LOWER.finditer(text):
        if _is_given(m.group("n")) and m.group("n") not in STOP_WORDS:
            yield m.span("n")
    yield from _gazetteer_names(text)


class _Spans:
    """Disjoint spans kept sorted, for overlap checks in O(log n) (kept strings may overlap each other)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, start)
        return (i > 0 and self._ends[i - 1] > start) or (i < len(self._starts) and self._starts[i] < end)

    def force(self, start: int, end: int) -> None:
        """Add a span, merging it with any it overlaps."""
        i = bisect.bisect_left(self._ends, start + 1) if self._ends else 0
        j = i
        while j < len(self._starts) and self._starts[j] < end:
            start, end = min(start, self._starts[j]), max(end, self._ends[j])
            j += 1
        self._starts[i:j], self._ends[i:j] = [start], [end]


@dataclass
class Redactor:
    """Find personal data in text and replace it with typed placeholders.

    ``order_id_pattern`` is the project's order-number regex (e.g. ``TP-\\d{6}``); order ids are
    only redacted when one is given. ``names`` turns name detection on or off.
    ``keep`` lists exact strings never to redact (e.g. the company's own support phone number).
    """

    order_id_pattern: str | None = None
    names: bool = True
    keep: Iterable[str] = ()

    def __post_init__(self) -> None:
        self._order = re.compile(rf"(?<![\w-])(?:{self.order_id_pattern})(?![\w-])") if self.order_id_pattern else None
        self._keep = frozenset(self.keep)

    def find(self, text: str) -> list[Redaction]:
        """The spans to redact, left to right, never overlapping.

        The detectors run in order of priority (e-mail, order id, IBAN, card, address, phone,
        name); each sees the text with what the earlier ones took masked as ``[XXX]``, the way
        it will read once redacted, so that a match touching an earlier one is found ("anna@
        example.com(415) 555-0132") and redacting the output again finds nothing new.
        """
        kept_spans = _Spans()
        for k in self._keep:
            i = text.find(k) if k else -1
            while i >= 0:
                kept_spans.force(i, i + len(k))
                i = text.find(k, i + 1)
        spans = _Spans()
        taken: list[tuple[int, int, str]] = []
        chars = list(text)
        for kind, reach, detect in self._detectors():
            stage = _Stage(detect, reach, chars, spans, kept_spans)
            taken += [(s, e, kind) for s, e in stage.run()]
        taken.sort()
        return [Redaction(kind, s, e, text[s:e]) for s, e, kind in taken]

    def _detectors(self) -> list[tuple[str, int, Detector]]:
        """(kind, the longest match it can find, detector), in order of priority."""
        found: list[tuple[str, int, Detector]] = [("EMAIL", 340, _find_emails)]
        if self._order is not None:
            order = self._order
            found.append(("ORDER_ID", 200, lambda t: [m.span() for m in order.finditer(t)]))
        found += [("IBAN", 50, _find_ibans), ("CARD", 40, _find_cards), ("ADDRESS", 500, _find_addresses),
                  ("PHONE", 60, _find_phones)]
        if self.names:
            found.append(("NAME", 100, _find_names))  # a cue and a name of up to 3 words fit in 100
        return found

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
