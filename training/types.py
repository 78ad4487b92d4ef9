"""Transcript data shared by ingestion, fine-tuning, evaluation and retriever training.

On disk a prepared data set is a directory::

    train.jsonl        one conversation per line (redacted), the format below
    validation.jsonl   held-out conversations (split by conversation, deterministically)
    report.json        counts per step and per redaction kind, examples
    report.md          the same for people

Each line: ``{"id": "...", "messages": [{"role": "customer"|"agent"|"bot"|"system",
"text": "...", "time": "ISO-8601" | null}], "meta": {...}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Role = Literal["customer", "agent", "bot", "system"]
ROLES: tuple[str, ...] = ("customer", "agent", "bot", "system")


@dataclass(frozen=True)
class Message:
    role: Role
    text: str
    time: str | None = None


@dataclass(frozen=True)
class Transcript:
    id: str
    messages: tuple[Message, ...]
    source: str = ""  # "file:line" it came from
    meta: dict[str, Any] = field(default_factory=dict)  # resolved / escalated / flagged / channel ...

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "messages": [{"role": m.role, "text": m.text, "time": m.time} for m in self.messages],
                "meta": self.meta}

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "") -> "Transcript":
        return cls(str(obj["id"]), tuple(Message(m["role"], m["text"], m.get("time")) for m in obj["messages"]),
                   source, dict(obj.get("meta") or {}))


def write_jsonl(path: Path, transcripts: list[Transcript]) -> None:
    """Write atomically (temp file + rename): a crash never leaves half a data set."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for t in transcripts:
            fh.write(json.dumps(t.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_prepared(path: Path) -> list[Transcript]:
    """Read a prepared (already validated and redacted) split file."""
    with path.open(encoding="utf-8") as fh:
        return [Transcript.from_json(json.loads(line), f"{path}:{i}") for i, line in enumerate(fh, 1) if line.strip()]
