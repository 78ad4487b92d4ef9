"""PII redaction: precision/recall on an annotated fixture, and must/must-not cases."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.redaction import load_fixture, prf, score
from training.redact import Redactor, iban_ok, luhn_ok

FIXTURE = Path(__file__).parent / "fixtures" / "pii.jsonl"
REALWORLD = Path(__file__).parent / "fixtures" / "pii" / "realworld.jsonl"
HELDOUT = Path(__file__).parent / "fixtures" / "pii" / "heldout.jsonl"


def _score() -> tuple[dict[str, tuple[float, float]], float, float]:
    redactor = Redactor(order_id_pattern=r"TP-\d{6}")
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        gold = Counter((p["kind"], p["text"]) for p in row["pii"])
        pred = Counter((r.kind, r.original) for r in redactor.redact(row["text"])[1])
        for (kind, _), n in (gold & pred).items():
            tp[kind] += n
        for (kind, _), n in (pred - gold).items():
            fp[kind] += n
        for (kind, _), n in (gold - pred).items():
            fn[kind] += n
    per_kind = {}
    for kind in set(tp) | set(fp) | set(fn):
        p = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else 1.0
        r = tp[kind] / (tp[kind] + fn[kind]) if tp[kind] + fn[kind] else 1.0
        per_kind[kind] = (p, r)
    t, f_p, f_n = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return per_kind, t / (t + f_p), t / (t + f_n)


def test_fixture_precision_and_recall() -> None:
    per_kind, precision, recall = _score()
    print("per kind (precision, recall):", per_kind, "overall:", precision, recall)
    assert len(FIXTURE.read_text().splitlines()) >= 55
    assert precision >= 0.9, per_kind
    assert recall >= 0.9, per_kind
    for kind in ("EMAIL", "CARD", "IBAN", "ORDER_ID"):
        assert per_kind[kind] == (1.0, 1.0), (kind, per_kind[kind])


def test_realworld_fixture_precision_and_recall_per_kind() -> None:
    """The hand-written fixture of tests/fixtures/pii (README: provenance): >= 0.95 overall."""
    rows = load_fixture(REALWORLD)
    redactor = Redactor()

    def find(text: str) -> list[tuple[int, int, str]]:
        return [(r.start, r.end, r.kind) for r in redactor.find(text)]

    overlap, exact = score(find, rows), score(find, rows, exact=True)
    per_kind = {k: tuple(round(x, 2) for x in prf(c)) for k, c in sorted(overlap.items())}
    print("per kind (precision, recall, F1), overlap match:", per_kind)
    assert sum(len(g) for _, g in rows) >= 120 and sum(not g for _, g in rows) >= 45
    p, r, _ = prf(overlap["ALL"])
    assert p >= 0.95 and r >= 0.95, per_kind
    for kind in ("PHONE", "ADDRESS", "NAME", "EMAIL", "CARD", "IBAN"):
        assert min(prf(overlap[kind])[:2]) >= 0.9, (kind, per_kind[kind])
    pe, re_, _ = prf(exact["ALL"])
    assert pe >= 0.9 and re_ >= 0.9, {k: prf(c) for k, c in exact.items()}


def test_heldout_fixture_precision_and_recall() -> None:
    """The fixture written blind to the redactor (tests/fixtures/pii/README.md): >= 0.95 overall.

    Before this fixture's fixes the redactor scored P 0.97 / R 0.85 on it (addresses 0.68,
    names 0.79 recall; a Luhn-valid IMEI taken for a card).
    """
    rows = load_fixture(HELDOUT)
    redactor = Redactor()

    def find(text: str) -> list[tuple[int, int, str]]:
        return [(r.start, r.end, r.kind) for r in redactor.find(text)]

    overlap = score(find, rows)
    per_kind = {k: tuple(round(x, 2) for x in prf(c)) for k, c in sorted(overlap.items())}
    print("held-out per kind (precision, recall, F1), overlap match:", per_kind)
    assert sum(len(g) for _, g in rows) >= 120 and sum(not g for _, g in rows) >= 45
    p, r, _ = prf(overlap["ALL"])
    assert p >= 0.95 and r >= 0.95, per_kind
    for kind in ("PHONE", "ADDRESS", "NAME", "EMAIL", "CARD", "IBAN"):
        assert min(prf(overlap[kind])[:2]) >= 0.9, (kind, per_kind[kind])


@pytest.mark.parametrize("text, expected", [
    # a match right after an e-mail address, or two addresses in a row (issue 9, defect 10)
    ("mail anna@example.com(415) 555-0132 now", "mail [EMAIL][PHONE] now"),
    ("0@0.AA.0@0.AA", "[EMAIL].[EMAIL]"),
    ("a@b.example.c@d.example", "[EMAIL].[EMAIL]"),
    ("01000000+10000000", None),
])
def test_redacting_twice_equals_once(text: str, expected: str | None) -> None:
    redactor = Redactor()
    once = redactor.redact(text)[0]
    if expected is not None:
        assert once == expected
    assert redactor.redact(once)[0] == once


@pytest.mark.parametrize("text, kind, original", [
    ("can u update it to søren@exämple.dk", "EMAIL", "søren@exämple.dk"),
    ("es9121000418450200051332 es mi cuenta", "IBAN", "es9121000418450200051332"),
    ("refund to DE89 3704 0044 0532 0130 00 EUR", "IBAN", "DE89 3704 0044 0532 0130 00"),
    ("bitte an lindenweg 3, 80331 münchen schicken", "ADDRESS", "lindenweg 3, 80331 münchen"),
    ("Mariahilfer Straße 45/3/12, 1060 Wien", "ADDRESS", "Mariahilfer Straße 45/3/12, 1060 Wien"),
    ("send to 88 queen st, apt 1207, toronto ON M5H 2N2", "ADDRESS", "88 queen st, apt 1207, toronto ON M5H 2N2"),
    ("can you put it under Anneke van der Berg", "NAME", "Anneke van der Berg"),
    ("name on the account: Nguyễn Thị Lan", "NAME", "Nguyễn Thị Lan"),
    ("ok that works. thanks, Mateusz", "NAME", "Mateusz"),
    ("ship to 221b baker street, london nw1 6xe please", "ADDRESS", "221b baker street, london nw1 6xe"),
    ("its 9 oxford rd, manchester m13 9pl", "ADDRESS", "9 oxford rd, manchester m13 9pl"),
])
def test_must_redact_heldout_forms(text: str, kind: str, original: str) -> None:
    found = Redactor().redact(text)[1]
    assert [(r.kind, r.original) for r in found] == [(kind, original)]


@pytest.mark.parametrize("text, kind, original", [
    # the misses of issue 9: national phone formats, continental addresses, an address's tail,
    # names with non-ASCII letters or without a cue
    ("call (020) 7946 0958", "PHONE", "(020) 7946 0958"),
    ("Nummer 030 12345678", "PHONE", "030 12345678"),
    ("au 06 12 34 56 78", "PHONE", "06 12 34 56 78"),
    ("手机 13800138000", "PHONE", "13800138000"),
    ("to Hauptstraße 5, 10115 Berlin", "ADDRESS", "Hauptstraße 5, 10115 Berlin"),
    ("au 12 rue de Rivoli, 75001 Paris", "ADDRESS", "12 rue de Rivoli, 75001 Paris"),
    ("to 1600 Pennsylvania Avenue NW, Washington, DC 20500.", "ADDRESS",
     "1600 Pennsylvania Avenue NW, Washington, DC 20500"),
    ("my name is José Müller", "NAME", "José Müller"),
    ("Łukasz Wójcik is the account holder", "NAME", "Łukasz Wójcik"),
    ("Emma Johnson placed the order", "NAME", "Emma Johnson"),
    ("card 4111 1111 1111 1111 please", "CARD", "4111 1111 1111 1111"),
    ("card 4111-1111-1111-1111 please", "CARD", "4111-1111-1111-1111"),
    ("mail me: someone@example.org", "EMAIL", "someone@example.org"),
    ("ring +1 (800) 555-0199", "PHONE", "+1 (800) 555-0199"),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN", "DE89 3704 0044 0532 0130 00"),
    ("to 12 Oak Street, Boston, MA 02110", "ADDRESS", "12 Oak Street, Boston, MA 02110"),
    ("my name is Anna", "NAME", "Anna"),
    ("Hi Anna, welcome back", "NAME", "Anna"),
    ("Thanks, Anna", "NAME", "Anna"),
    ("Mrs Patel rang", "NAME", "Patel"),
    ("order TP-123456 is late", "ORDER_ID", "TP-123456"),
])
def test_must_redact(text: str, kind: str, original: str) -> None:
    out, found = Redactor(order_id_pattern=r"TP-\d{6}").redact(text)
    assert [(r.kind, r.original) for r in found] == [(kind, original)]
    assert original not in out and f"[{kind}]" in out


@pytest.mark.parametrize("text", [
    "Hi there, can you help?",
    "I'm sorry, I'm Canadian and I'm happy",
    "Is this 1234 5678 9012 3456 number ok?",          # 16 digits, fails Luhn
    "My order TP-123456 is late",                        # no order pattern configured
    "Before St. Patrick's day please",
    "It cost $129.99 on 2024-03-15",
    "Checkout said PAY-402 then PAY-409",
    "Tracking 1Z999AA10123456784",
    "UPS gave me 1Z 999 AA1 01 2345 6784",
    "USPS tracking 9400 1000 0000 0000 0000 00",
    "FedEx tracking number 7749 8888 1234",
    "Amazon order #112-4567890-1234567",
    "My order number is 4500123456",
    "Der Preis war 1.299,00 € am 15.03.2024",
    "Will it arrive by Friday? May I change the address?",
    "The Amber Rose jar and the Sage Green candle",
    "Return reference RT-55120",
    "NL91ABNA0417164301",                                # fails mod-97
    "IMEI 356938035643809 is on the box",                # Luhn-valid, but no card network's prefix/length
    "shipped via dhl 3 days ago, 12345 units",
    "hey its broken again",
])
def test_must_not_redact(text: str) -> None:
    out, found = Redactor().redact(text)
    assert found == [] and out == text


def test_order_ids_only_with_a_pattern_and_names_can_be_off() -> None:
    assert Redactor().redact("TP-123456")[1] == []
    assert Redactor(names=False).redact("my name is Anna")[1] == []
    assert Redactor(keep=["+1 (800) 555-0147"]).redact("call +1 (800) 555-0147")[1] == []


def test_checks_and_spans() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")
    text = "email a@b.example or call 415-555-0132"
    out, found = Redactor().redact(text)
    assert out == "email [EMAIL] or call [PHONE]"
    assert [text[r.start:r.end] for r in found] == ["a@b.example", "415-555-0132"]
    assert "a@b.example" not in repr(found)
