"""The configuration shown in the README is valid (the README must stay true)."""

import re
from pathlib import Path

import yaml

from botkit.app.convtest import ConversationSuite
from botkit.config import parse_config

README = Path(__file__).resolve().parent.parent / "README.md"


def yaml_blocks() -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)]


def test_readme_yaml_examples_validate():
    blocks = yaml_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        if "tests" in block:
            ConversationSuite.model_validate(block)
        else:
            cfg = parse_config(block)
            if "escalation" in block:
                assert len(cfg.escalation.rules) == len(block["escalation"]["rules"])


def test_readme_mentions_every_cli_command():
    from botkit.app.cli import build_parser

    text = README.read_text()
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for command in sub.choices:
        assert f"botkit {command}" in text or f"botkit --project demo {command}" in text, command
