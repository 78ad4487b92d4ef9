"""Conversation tests a bot builder writes: turns of customer text with expectations.

::

    tests:
      - name: refund timing, then a human
        channel: web                  # optional
        attributes: {vip: false}      # optional, as a channel would pass them
        turns:
          - user: how long does a refund take?
            expect:
              action: answer          # answer | no_answer | clarify | escalate | handoff
              cites: refund-timing    # an article id among the reply's sources (or a list)
              contains: business days # text the reply must contain (or a list)
              not_contains: [sorry]
          - user: let me talk to a person
            expect: {action: escalate, escalation: asked_for_human}

Each test runs as a fresh conversation in a throw-away store, so running tests never
touches the project's real conversations.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from botkit.config import describe_validation_error
from botkit.engine import Engine
from botkit.errors import BotkitError, ConfigError
from botkit.schema import StrictModel
from botkit.types import IncomingMessage, Reply


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


class Expect(StrictModel):
    # no_answer: the bot declined ("couldn't find an answer"), citing nothing
    action: Literal["answer", "no_answer", "clarify", "escalate", "handoff"] | None = None
    cites: list[str] = Field(default_factory=list)
    contains: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)
    escalation: str | None = None
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)  # confidence is a probability

    _lists = field_validator("cites", "contains", "not_contains", mode="before")(_as_list)


class TurnSpec(StrictModel):
    user: str
    expect: Expect = Expect()


class ConversationCase(StrictModel):
    name: str
    channel: str = "test"
    attributes: dict[str, object] = Field(default_factory=dict)
    turns: list[TurnSpec] = Field(min_length=1)


class ConversationSuite(StrictModel):
    tests: list[ConversationCase] = Field(min_length=1)


def load_tests(path: Path) -> ConversationSuite:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML") from None
    try:
        return ConversationSuite.model_validate(data)
    except ValidationError as exc:
        lines = (f"{path}: {describe_validation_error(e, ConversationSuite)}" for e in exc.errors())
        raise ConfigError("\n".join(lines)) from None


@dataclass
class TurnResult:
    user: str
    reply: Reply | None
    failures: list[str] = field(default_factory=list)


@dataclass
class CaseResult:
    name: str
    turns: list[TurnResult]

    @property
    def passed(self) -> bool:
        return all(not t.failures for t in self.turns)


def check(expect: Expect, reply: Reply) -> list[str]:
    """Readable differences between what was expected and what the bot did."""
    problems = []
    if expect.action and reply.action != expect.action:
        problems.append(f"action: expected {expect.action!r}, got {reply.action!r}")
    cited = [s.id for s in reply.sources]
    for article in expect.cites:
        if article not in cited:
            problems.append(f"cites: expected {article!r} among the sources, got {cited or 'none'}")
    lowered = reply.text.lower()
    for text in expect.contains:
        if text.lower() not in lowered:
            problems.append(f"contains: {text!r} is not in the reply")
    for text in expect.not_contains:
        if text.lower() in lowered:
            problems.append(f"not_contains: {text!r} is in the reply")
    got = reply.escalation.reason if reply.escalation else None
    if expect.escalation and got != expect.escalation:
        problems.append(f"escalation: expected {expect.escalation!r}, got {got!r}")
    if expect.min_confidence is not None and (reply.confidence or 0.0) < expect.min_confidence:
        problems.append(f"confidence: expected at least {expect.min_confidence}, got {reply.confidence}")
    return problems


async def run_tests(engine: Engine, spec: ConversationSuite) -> list[CaseResult]:
    results = []
    for test in spec.tests:
        conversation = f"test-{uuid.uuid4().hex[:12]}"
        turns = []
        for turn in test.turns:
            try:
                reply = await engine.handle(IncomingMessage(conversation, turn.user, channel=test.channel,
                                                            customer_id="test", attributes=test.attributes))
                turns.append(TurnResult(turn.user, reply, check(turn.expect, reply)))
            except BotkitError as exc:
                turns.append(TurnResult(turn.user, None, [f"error: {exc}"]))
        results.append(CaseResult(test.name, turns))
    return results


def report(results: list[CaseResult]) -> str:
    lines = []
    for result in results:
        lines.append(f"{'PASS' if result.passed else 'FAIL'}  {result.name}")
        if result.passed:
            continue
        for i, turn in enumerate(result.turns, 1):
            if not turn.failures:
                continue
            lines.append(f"  turn {i}: user: {turn.user!r}")
            if turn.reply is not None:
                text = turn.reply.text.replace("\n", " ")
                lines.append(f"          bot ({turn.reply.action}): {text[:160]!r}")
            lines += [f"          - {f}" for f in turn.failures]
    passed = sum(r.passed for r in results)
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)


def scratch_db() -> Path:
    """A throw-away conversation database for a test run."""
    return Path(tempfile.mkdtemp(prefix="botkit-test-")) / "conversations.sqlite3"
