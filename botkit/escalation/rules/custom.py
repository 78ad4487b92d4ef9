"""Rule ``custom``: a rule written outside botkit, named in bot.yaml as ``module:function``.

The built-in rule types are a closed list (one pydantic model each); this type is how a
third party's rule is configured without changing botkit::

    escalation:
      rules:
        - type: custom
          factory: "acme_rules:build_vip_refund"   # importable module : function
          options: {limit: 500}                    # handed to the function as they are

The function is called once, when the engine is built (``build_rules``), as
``function(options, name) -> Rule``; it validates ``options`` itself (a pydantic model of
its own is the usual way) and returns the rule. The same contract as the built-in rules
holds: the rule is a pure function of the conversation state. Its Escalation's ``reason``
is the rule's own code and its ``rule`` should be ``name``, the list name (``"3:custom"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field

from botkit.errors import ConfigError
from botkit.escalation.base import Rule
from botkit.schema import StrictModel

RuleFactory = Callable[[Mapping[str, Any], str], Rule]
"""What ``factory`` names: ``(options, name) -> Rule``."""


class CustomRuleConfig(StrictModel):
    """A rule from a Python function: ``factory`` is ``module:function``, called as
    ``function(options, name)`` when the engine is built, returning the rule. Reason: the
    rule's own."""

    type: Literal["custom"] = "custom"
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", max_length=300)
    options: dict[str, Any] = Field(default_factory=dict)


def _resolve(target: str, name: str) -> RuleFactory:
    module_name, _, attr = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except ImportError as exc:
        raise ConfigError(f"escalation rule {name}: cannot import {module_name!r} for factory {target!r} ({exc}); "
                          "install the package that provides it, or put it on PYTHONPATH") from None
    except AttributeError:
        raise ConfigError(f"escalation rule {name}: module {module_name!r} has no {attr!r} (factory {target!r}); "
                          "check the function's name") from None
    if not callable(found):
        raise ConfigError(f"escalation rule {name}: factory {target!r} is not a function")
    return found


def _build_custom(cfg: CustomRuleConfig, name: str) -> Rule:
    try:
        rule = _resolve(cfg.factory, name)(dict(cfg.options), name)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"escalation rule {name} ({cfg.factory}): bad options {dict(cfg.options)!r}: {exc}") from None
    if not callable(rule):
        raise ConfigError(f"escalation rule {name}: factory {cfg.factory!r} returned {type(rule).__name__}, "
                          "not a rule (a function of the conversation state)")
    return rule
