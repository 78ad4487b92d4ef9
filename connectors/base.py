"""The connector registry: channel names to connector factories.

The seam itself (:class:`~botkit.channels.Connector`, :class:`~botkit.channels.ConnectorContext`,
:class:`~botkit.channels.OutgoingMessage`, :func:`~botkit.channels.as_text`,
:func:`~botkit.channels.validate_section`) is :mod:`botkit.channels`; it is re-exported here.

Connectors are found by name: the built-in ones, plus any installed package that declares an
entry point in the ``botkit.connectors`` group, e.g. in its pyproject.toml::

    [project.entry-points."botkit.connectors"]
    whatsapp = "botkit_whatsapp:create"

where ``create(context: ConnectorContext) -> Connector``. botkit itself needs no change.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

# The seam itself is in botkit's core (no aiohttp needed to describe a connector); these names
# stay importable from here for connectors written against connectors.base.
from botkit.channels import Connector, ConnectorContext, ConnectorFactory, OutgoingMessage, as_text, validate_section
from botkit.errors import ConfigError

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "botkit.connectors"
_BUILTIN: dict[str, str] = {
    "webchat": "connectors.webchat:create",
    "telegram": "connectors.telegram:create",
}


def _load(target: str) -> ConnectorFactory:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)


def available() -> dict[str, str]:
    """Connector names and where they come from (built in, or an installed package)."""
    found = {name: f"builtin ({target})" for name, target in _BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = f"{ep.dist.name if ep.dist else 'package'} ({ep.value})"
    return found


def factory(name: str) -> ConnectorFactory:
    """The factory for a channel name; installed packages can add and override names."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    if name in _BUILTIN:
        return _load(_BUILTIN[name])
    raise ConfigError(f"channels.{name}: no connector named {name!r} (available: {', '.join(sorted(available()))}); "
                      f"a third-party connector registers itself in the {ENTRY_POINT_GROUP!r} entry-point group")


__all__ = ["ENTRY_POINT_GROUP", "Connector", "ConnectorContext", "ConnectorFactory", "OutgoingMessage", "as_text",
           "available", "factory", "validate_section"]
