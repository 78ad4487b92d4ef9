"""training.pipeline's registry steps, without training anything: when a candidate is promoted,
what the event log records, and how a by-hand promotion past the gate is reported.

The train/gate steps themselves run end to end (tiny models) in test_training_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from botkit.errors import BotkitError
from training.pipeline import Candidate, find_version, promote_if_passed, promote_version, version_record
from training.registry import GateRefused, ModelRegistry


def _artefact(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_model.safetensors").write_text(name, encoding="utf-8")
    return d


@pytest.fixture()
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_promote_if_passed_needs_both_the_gate_and_permission(reg: ModelRegistry, tmp_path: Path) -> None:
    mv = reg.register("lm", _artefact(tmp_path, "a"), {})
    assert not promote_if_passed(reg, Candidate("lm", mv, passed=False, reason="r"), by="ann")
    assert not promote_if_passed(reg, Candidate("lm", mv, passed=True, reason="r"), by="ann", allowed=False)
    assert reg.current("lm") is None
    assert promote_if_passed(reg, Candidate("lm", mv, passed=True, reason="passed the evaluation gate"), by="ann")
    current = reg.current("lm")
    assert current is not None and current.version == mv.version
    last = reg.history("lm")[-1]
    assert (last.event, last.reason, last.by) == ("promote", "passed the evaluation gate", "ann")


def test_find_version_defaults_to_the_one_in_service(reg: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(BotkitError, match=r"no retriever version is in service; `botkit models list --kind retriever`"):
        find_version(reg, "retriever", None)
    reg.register("lm", _artefact(tmp_path, "a"), {})
    v2 = reg.register("lm", _artefact(tmp_path, "b"), {"base_model": "tiny", "metrics": {"loss": 1.5}})
    reg.promote("lm", 1, reason="x", by="ann")
    assert find_version(reg, "lm", None).version == 1
    assert find_version(reg, "lm", "v0002").version == v2.version
    record = version_record(find_version(reg, "lm", 2))
    assert record["version"] == "v0002" and record["base_model"] == "tiny" and record["metrics"] == {"loss": 1.5}
    assert record["gate"] is None


def test_promote_version_reports_a_forced_promotion(reg: ModelRegistry, tmp_path: Path) -> None:
    refused = {"gate": {"promote": False, "reasons": ["rouge_l fell by 0.2"]}}
    reg.register("lm", _artefact(tmp_path, "a"), refused)
    reg.register("lm", _artefact(tmp_path, "b"), {"gate": {"promote": True, "reasons": []}})
    with pytest.raises(GateRefused, match="rouge_l fell by 0.2"):
        promote_version(reg, "lm", 1, reason="manual promotion", by="ann")
    assert promote_version(reg, "lm", 2, reason="manual promotion", by="ann").forced is False
    forced = promote_version(reg, "lm", 1, reason="manual promotion", by="ann", force=True)
    assert forced.forced is True and forced.version.version == 1
