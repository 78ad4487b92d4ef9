"""The bot.yaml ``botkit init`` writes, generated from the config models themselves.

Every key of :class:`~botkit.config.BotConfig` is written with its default value and, above it,
its description and allowed values, so the file documents the configuration and cannot drift
from it: a key added to a model appears in the next generated file. Optional sections that are
off by default (``dialogue.local_lm``, ``dialogue.openai``), the rule types not in the default
escalation list and a channel's own keys are written as commented-out blocks.

Loading the generated file gives exactly the defaults (tests/test_newcomer.py checks it).
"""

from __future__ import annotations

import re
import textwrap
import typing
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from botkit.config import BotConfig, _models_in, parse_config

WIDTH = 100
HEADER = """\
# botkit project configuration.
# Every key is optional and shown with its default value; unknown keys are errors. Delete a
# key to keep following botkit's default for it. Commented-out blocks are optional sections,
# off by default.
"""


def _dump(value: Any) -> str:
    """One YAML value on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**9, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _choices(annotation: Any) -> list[Any]:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) annotation."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    found: list[Any] = []
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Literal:
            found += list(typing.get_args(arg))
    return found


def _comment_lines(field: FieldInfo, indent: str, required: bool) -> list[str]:
    parts = [field.description.rstrip(".")] if field.description else []
    choices = _choices(field.annotation)
    if len(choices) > 1:
        parts.append("one of: " + " | ".join(str(c) for c in choices))
    if required:
        parts.append("required")
    if not parts:
        return []
    return textwrap.wrap("; ".join(parts), width=max(40, WIDTH - len(indent) - 4), initial_indent=f"{indent}# ",
                         subsequent_indent=f"{indent}# ", break_long_words=False, break_on_hyphens=False)


def _value(model: type[BaseModel], instance: BaseModel | None, name: str) -> Any:
    """The field's value on ``instance``, else its default (``PydanticUndefined`` when required)."""
    if instance is not None:
        return getattr(instance, name)
    field = model.model_fields[name]
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _commented(lines: list[str], indent: str) -> list[str]:
    """A block turned off: ``# `` after ``indent`` on every line (uncommenting gives valid YAML)."""
    return [f"{indent}# {row[len(indent):]}" for row in lines]


def _render_model(model: type[BaseModel], instance: BaseModel | None, indent: str, out: list[str],
                  item: bool = False, channel_models: Mapping[str, type[BaseModel]] | None = None) -> None:
    """Append ``model``'s keys at ``indent``; ``item``: the first key opens a list item (``- ``)."""
    for i, (name, field) in enumerate(model.model_fields.items()):
        lead = indent[:-2] + "- " if item and i == 0 else indent
        key = field.alias or name
        value = _value(model, instance, name)
        if not indent and i and isinstance(value, (BaseModel, dict)):
            out.append("")  # a blank line before each top-level section, for reading
        if not (item and i == 0):
            out += _comment_lines(field, indent, value is PydanticUndefined)
        models = _models_in(field.annotation)
        if isinstance(value, BaseModel):
            out.append(f"{lead}{key}:")
            _render_model(type(value), value, indent + "  ", out)
        elif value is None and len(models) == 1:
            out.append(f"{lead}{key}: null")
            block = [f"{indent}{key}:"]
            _render_model(models[0], None, indent + "  ", block)
            out.append(f"{indent}# to turn it on, replace the null with (the defaults shown):")
            out += _commented(block, indent)
        elif isinstance(value, list) and models:
            out.append(f"{lead}{key}:" + (" []" if not value else ""))
            for entry in value:
                _render_item(entry, indent + "  ", out)
            unused = [m for m in models if not any(isinstance(entry, m) for entry in value)]
            if unused:
                out.append(f"{indent}  # other types, off by default (uncomment to add one):")
                for m in unused:
                    block = []
                    _render_item(m, indent + "  ", block)
                    out += _commented(block, indent + "  ")
        elif channel_models is not None and isinstance(value, dict):  # BotConfig.channels
            out.append(f"{lead}{key}:")
            for channel, section in value.items():
                out.append(f"{indent}  {channel}: {_dump(section)}")
                if channel in channel_models:
                    out.append(f"{indent}  # {channel}'s keys, with their defaults (to change one, use them "
                               f"instead of the {_dump(section)}):")
                    block = [f"{indent}  {channel}:"]
                    _render_model(channel_models[channel], None, indent + "    ", block)
                    out += _commented(block, indent + "  ")
        elif value is PydanticUndefined:
            out.append(f"{lead}{key}: <required>")
        else:
            out += _block(key, value, lead, indent)


def _render_item(entry: BaseModel | type[BaseModel], indent: str, out: list[str]) -> None:
    """One list entry (a rule): its docstring's first sentence as a comment, then its keys."""
    model = entry if isinstance(entry, type) else type(entry)
    paragraph = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    if paragraph:
        out += textwrap.wrap(re.split(r"(?<!e\.g)\. ", paragraph)[0].rstrip(".") + ".", width=WIDTH - len(indent) - 2,
                             initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ", break_long_words=False)
    _render_model(model, None if isinstance(entry, type) else entry, indent + "  ", out, item=True)


def _block(key: str, value: Any, lead: str, indent: str) -> list[str]:
    """``key: value``, on one line when it fits, else as an indented YAML block."""
    line = f"{lead}{key}: {_dump(value)}"
    if len(line) <= WIDTH or not value:
        return [line]
    if isinstance(value, str):  # folded over several lines (YAML joins them with spaces again)
        rows = yaml.safe_dump({key: value}, allow_unicode=True, width=WIDTH - len(indent)).splitlines()
        return [lead + rows[0]] + [indent + row for row in rows[1:]]
    if not isinstance(value, (dict, list)):
        return [line]
    body = yaml.safe_dump(value, default_flow_style=False, allow_unicode=True, width=10**9, sort_keys=False)
    return [f"{lead}{key}:"] + [f"{indent}  {row}" for row in body.splitlines()]


def render_bot_yaml(name: str, channel_models: Mapping[str, type[BaseModel]] | None = None) -> str:
    """The bot.yaml of a new project named ``name``: every key, with its default and what it means.

    ``channel_models``: a channel's config model by name (e.g. the web chat's), whose keys are
    written as a commented-out block under the channel (the core knows no connector).
    """
    config = parse_config({"name": name}, "the bot name")
    out: list[str] = []
    _render_model(BotConfig, config, "", out, channel_models=channel_models or {})
    return HEADER + "\n".join(out) + "\n"
