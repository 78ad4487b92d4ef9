"""The ``custom`` escalation rule type: a third party's rule named in bot.yaml as module:function."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from botkit.config import load_config
from botkit.errors import ConfigError
from botkit.escalation import CustomRuleConfig, EscalationConfig, build_rules, evaluate
from botkit.types import Candidate, Conversation, ConversationState, IncomingMessage, Turn

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)

PLUGIN = '''
from pydantic import BaseModel, ConfigDict
from botkit.types import Escalation

class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str

def build(options, name):
    cfg = Options.model_validate(options)
    def rule(state):
        if cfg.word in state.message.text.lower():
            return Escalation(reason="said_" + cfg.word, rule=name, detail=f"said {cfg.word!r}")
        return None
    return rule

def not_a_rule(options, name):
    return 42

NOT_CALLABLE = "x"
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module of rule factories, as an installed package would be."""
    (tmp_path / "acme_rules_for_test.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "acme_rules_for_test"


def state(text: str) -> ConversationState:
    conv = Conversation("c1", "cli", "cust-1", "bot", NOW)
    return ConversationState(conv, (Turn("c1", 1, "customer", text, NOW),), IncomingMessage("c1", text, at=NOW),
                             Candidate("answer", "proposed", 0.9), NOW)


def rules(factory: str, options: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    return build_rules(EscalationConfig(rules=[CustomRuleConfig(factory=factory, options=options or {})]))


def test_rule_from_bot_yaml_fires_only_on_its_condition(plugin: str, tmp_path: Path) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text(textwrap.dedent(f"""
        name: test
        escalation:
          rules:
            - type: asks_for_human
            - type: custom
              factory: "{plugin}:build"
              options: {{word: cancel}}
    """), encoding="utf-8")
    built = build_rules(load_config(path).escalation)
    assert [name for name, _ in built] == ["1:asks_for_human", "2:custom"]
    found = evaluate(built, state("Please cancel my order"))
    assert found is not None
    assert (found.reason, found.rule, found.detail) == ("said_cancel", "2:custom", "said 'cancel'")
    assert found.summary  # filled in like every rule's
    assert evaluate(built, state("Where is my order?")) is None


@pytest.mark.parametrize("factory", ["no_colon", "mod:", ":attr", "mod:attr; import os", "1mod:x"])
def test_factory_must_be_module_colon_function(factory: str) -> None:
    with pytest.raises(ValidationError):
        CustomRuleConfig(factory=factory)


def test_unknown_keys_beside_options_are_rejected() -> None:
    with pytest.raises(ValidationError):
        EscalationConfig.model_validate({"rules": [{"type": "custom", "factory": "m:f", "word": "cancel"}]})


@pytest.mark.parametrize("factory, options, message", [
    ("no_such_module_for_botkit_test:build", {}, "cannot import 'no_such_module_for_botkit_test'"),
    ("{plugin}:missing", {}, "has no 'missing'"),
    ("{plugin}:NOT_CALLABLE", {}, "is not a function"),
    ("{plugin}:not_a_rule", {}, "returned int, not a rule"),
    ("{plugin}:build", {"wrod": "cancel"}, "bad options"),
])
def test_errors_name_the_rule_and_say_what_to_fix(plugin: str, factory: str, options: dict[str, object],
                                                  message: str) -> None:
    with pytest.raises(ConfigError) as err:
        rules(factory.format(plugin=plugin), options)
    assert "escalation rule 1:custom" in str(err.value)
    assert message in str(err.value)


def test_options_are_a_copy_the_rule_cannot_see_later_changes(plugin: str) -> None:
    options: dict[str, object] = {"word": "cancel"}
    cfg = EscalationConfig(rules=[CustomRuleConfig(factory=f"{plugin}:build", options=options)])
    options["word"] = "order"
    [(_, rule)] = build_rules(cfg)
    assert rule(state("cancel it")) is not None
    assert rule(state("my order")) is None
