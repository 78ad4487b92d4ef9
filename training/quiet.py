"""Library warnings that say nothing to a botkit user, silenced by name (never all warnings).

transformers 5 warns that ``is_gradient_checkpointing`` is deprecated each time peft or the
Trainer asks a model about it: once in fine-tuning, again in the evaluation gate, again per
model loaded. It concerns transformers' own callers, not botkit's configuration.
"""

from __future__ import annotations

import warnings

KNOWN: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r".*`is_gradient_checkpointing` is deprecated"),
)


def quiet_library_warnings() -> None:
    """Ignore the warnings in :data:`KNOWN` from now on in this process (idempotent)."""
    for category, message in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category)
