"""The base of every model botkit validates from YAML: :class:`StrictModel`.

A module of its own (importing only pydantic) so that botkit.config, botkit.escalation,
connectors and the conversation tests can all share one base without importing each
other: botkit.config imports EscalationConfig from botkit.escalation, so the base could
not live in botkit.config without a cycle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen pydantic model that rejects unknown keys.

    Unknown keys are errors rather than silently ignored so that a typo in a YAML file
    (``retreival:``) is reported with the allowed keys instead of quietly using defaults;
    frozen so a validated config can be shared between tasks without anyone changing it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
