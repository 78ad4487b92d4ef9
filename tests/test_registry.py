"""The model registry: versions, promotion, rollback, the atomic pointer and hot pick-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from botkit.config import LocalLMConfig
from botkit.errors import BotkitError
from training.registry import ModelRegistry, RegistryError, current_lm_config, hash_files


def make_adapter(tmp_path: Path, name: str, payload: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": 8}), encoding="utf-8")
    (d / "adapter_model.safetensors").write_text(payload, encoding="utf-8")
    return d


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_register_copies_and_numbers_versions(reg: ModelRegistry, tmp_path: Path) -> None:
    a = make_adapter(tmp_path, "a", "weights-1")
    v1 = reg.register("lm", a, {"base_model": "tiny", "data_hash": hash_files(a), "metrics": {"loss": 3.0}})
    v2 = reg.register("lm", make_adapter(tmp_path, "b", "weights-2"), {"base_model": "tiny"}, move=True)
    assert (v1.version, v1.label, v2.version) == (1, "v0001", 2)
    assert v1.path == reg.root / "lm" / "v0001"
    assert (v1.path / "adapter_model.safetensors").read_text() == "weights-1"
    assert a.exists() and not (tmp_path / "b").exists()  # copy vs move
    meta = json.loads((v1.path / "metadata.json").read_text())
    assert meta["status"] == "candidate" and meta["base_model"] == "tiny" and meta["created_at"]
    assert meta["metrics"] == {"loss": 3.0} and len(meta["data_hash"]) == 64
    assert [v.version for v in reg.list("lm")] == [1, 2]
    assert reg.list("retriever") == []
    assert reg.current("lm") is None
    assert not [p for p in (reg.root / "lm").iterdir() if p.name.endswith(".tmp")]


def test_promote_promote_rollback(reg: ModelRegistry, tmp_path: Path) -> None:
    reg.register("lm", make_adapter(tmp_path, "a", "1"), {})
    reg.register("lm", make_adapter(tmp_path, "b", "2"), {})
    assert reg.promote("lm", 1, "first gate passed", "ci").version == 1
    assert reg.current("lm").version == 1  # type: ignore[union-attr]
    reg.promote("lm", "v0002", "better loss", "alice")
    assert reg.current("lm").version == 2  # type: ignore[union-attr]
    assert reg.get("lm", 1).status == "retired"
    back = reg.rollback("lm", "complaints", "bob")
    assert back.version == 1 and reg.current("lm").version == 1  # type: ignore[union-attr]
    assert reg.get("lm", 2).status == "rolled_back" and reg.get("lm", 1).status == "promoted"

    events = reg.history("lm")
    assert [(e.event, e.version, e.previous) for e in events] == [
        ("register", 1, None), ("register", 2, None), ("promote", 1, None), ("promote", 2, 1), ("rollback", 1, 2)]
    assert events[3].reason == "better loss" and events[3].by == "alice" and events[4].by == "bob"
    lines = (reg.root / "lm" / "events.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["event"] == "rollback"

    # The pointer is one complete JSON document and no temp file is left beside it.
    pointer = json.loads((reg.root / "lm" / "current.json").read_text())
    assert pointer["version"] == 1 and pointer["stack"] == [1]
    assert sorted(p.name for p in (reg.root / "lm").iterdir() if not p.name.startswith("v0")) == [
        ".lock", "current.json", "events.jsonl"]

    with pytest.raises(RegistryError, match="no previous version"):
        reg.rollback("lm")
    assert reg.current("lm").version == 1  # type: ignore[union-attr]


def test_errors(reg: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="nothing is promoted"):
        reg.rollback("lm")
    with pytest.raises(RegistryError, match="does not exist"):
        reg.promote("lm", 7, "x", "y")
    reg.register("lm", make_adapter(tmp_path, "a", "1"), {})
    with pytest.raises(RegistryError, match=r"version 3 does not exist \(known: v0001\)"):
        reg.get("lm", 3)
    with pytest.raises(RegistryError, match="bad version"):
        reg.get("lm", "latest")
    with pytest.raises(RegistryError, match="unknown model kind 'tts'"):
        reg.list("tts")
    with pytest.raises(RegistryError, match="not a directory"):
        reg.register("lm", tmp_path / "missing", {})
    reg.promote("lm", 1, "x", "y")
    with pytest.raises(RegistryError, match="already current"):
        reg.promote("lm", 1, "x", "y")
    assert isinstance(RegistryError("x"), BotkitError)
    # Failed operations logged nothing.
    assert [e.event for e in reg.history("lm")] == ["register", "promote"]


def test_watch_sees_promotion_from_another_instance(reg: ModelRegistry, tmp_path: Path) -> None:
    reg.register("lm", make_adapter(tmp_path, "a", "1"), {})
    reg.register("lm", make_adapter(tmp_path, "b", "2"), {})
    check = reg.watch("lm")
    assert check() is None

    other = ModelRegistry(reg.root)  # e.g. the CLI in another process
    other.promote("lm", 1, "gate", "ci")
    seen = check()
    assert seen is not None and seen.version == 1
    assert check() is seen  # unchanged pointer: cached, no re-read

    other.promote("lm", 2, "gate", "ci")
    assert check().version == 2  # type: ignore[union-attr]
    other.rollback("lm")
    assert check().version == 1  # type: ignore[union-attr]


def test_current_lm_config(reg: ModelRegistry, tmp_path: Path) -> None:
    base = LocalLMConfig(model_path="models/tiny", max_new_tokens=50)
    assert current_lm_config(reg, base) is base
    reg.register("lm", make_adapter(tmp_path, "a", "1"), {"base_model": "models/tiny"})
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    reg.register("lm", merged, {"merged": True})

    reg.promote("lm", 1, "x", "y")
    cfg = current_lm_config(reg, base)
    assert cfg.adapter_path == str(reg.root / "lm" / "v0001") and cfg.model_path == "models/tiny"
    assert cfg.max_new_tokens == 50 and base.adapter_path is None

    reg.promote("lm", 2, "x", "y")
    cfg = current_lm_config(reg, base)
    assert cfg.model_path == str(reg.root / "lm" / "v0002") and cfg.adapter_path is None


def test_failed_pointer_write_keeps_old_state(reg: ModelRegistry, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import training.registry as registry_module

    reg.register("lm", make_adapter(tmp_path, "a", "1"), {})
    reg.register("lm", make_adapter(tmp_path, "b", "2"), {})
    reg.promote("lm", 1, "x", "y")
    before = (reg.root / "lm" / "current.json").read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(registry_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        reg.promote("lm", 2, "x", "y")
    monkeypatch.undo()
    assert (reg.root / "lm" / "current.json").read_bytes() == before
    assert reg.current("lm").version == 1  # type: ignore[union-attr]
    assert not [p.name for p in (reg.root / "lm").iterdir() if p.name.endswith(".tmp")]
    assert [e.event for e in reg.history("lm")][-1] == "promote" and len(reg.history("lm")) == 3
