"""Embedding backends and the CPU: torch-bf16 warns (once) where bf16 is emulated."""

from __future__ import annotations

import logging
import sys

import pytest

from botkit.errors import EmbeddingError
from knowledge import embedding
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.models import default_model_path


@pytest.mark.parametrize("native", [True, False])
def test_torch_bf16_warns_once_where_bf16_is_emulated(native: bool, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(embedding, "has_native_bf16", lambda: native)
    monkeypatch.setattr(embedding, "describe", lambda: "test CPU")
    monkeypatch.setattr(embedding, "_warned_emulated_bf16", False)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # start() fails right after the check
    with caplog.at_level(logging.WARNING, logger="knowledge.embedding"):
        for bf16 in (True, True, False):
            with pytest.raises(EmbeddingError):
                SentenceTransformerEmbedder(default_model_path(), bf16=bf16).start()
    warnings = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    if native:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert "emulated" in warnings[0] and "torch-fp32" in warnings[0] and "test CPU" in warnings[0]
