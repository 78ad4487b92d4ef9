"""examples/: each runs as a third party would run it (``python examples/<name>.py`` from the
repo root) and asserts what it shows, so a change that breaks the public extension API
(connectors by name, custom escalation rules, custom responders) fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "custom_connector.py": [
        "ann <- bot: Click 'Forgot password' on the sign-in page.",
        "ann <- bot: I'm passing you to a member of our team now.",
        "ann <- [system] Sam from our team has joined the conversation.",
        "ann <- [Sam] Hi Ann, I'm on it.",
        "OK: queue connector found by name, answered, handed off, delivered the agent's message",
    ],
    "custom_rule.py": [
        "-- rules from bot.yaml: ['1:custom']",
        "order_total=40     -> answer (escalation: -)",
        "order_total=1200   -> escalate (escalation: order_value_above_limit)",
        "hand-off: order_value_above_limit (order_total=1200 (limit 500)); the small order got an answer",
        "OK: the order_value rule handed off only the large order",
    ],
    "custom_responder.py": [
        "-> [keyword] Ada here: we are open 8:00 to 18:00, Monday to Friday.",
        "-> [extractive] Print the label from your order page.",
        "-> [extractive] I'm sorry, I couldn't find an answer",
        "OK: keywords answered from templates, the rest by the extractive responder",
    ],
}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_shows_what_it_claims(name: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # no downloads, ever
    done = subprocess.run([sys.executable, f"examples/{name}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()
    for expected in EXPECTED[name]:
        assert any(expected in line for line in lines), f"{name}: no line with {expected!r} in:\n{done.stdout}"
