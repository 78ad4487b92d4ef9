"""A running bot follows the model registry: promotion and rollback take effect at the next
message, without a restart; a version that fails to start leaves the old one serving."""

from __future__ import annotations

from pathlib import Path

from botkit.responders.extractive import ExtractiveResponder
from botkit.responders.reloading import ReloadingResponder
from botkit.types import IncomingMessage, ResponderRequest, SearchResult
from training.registry import ModelRegistry

REQUEST = ResponderRequest("hello", IncomingMessage("c", "hello"), (), SearchResult("hello", (), 1, 0.5))


class Broken(ExtractiveResponder):
    async def start(self) -> None:
        raise RuntimeError("weights are corrupt")


async def test_promotion_and_rollback_are_picked_up_live(tmp_path: Path):
    registry = ModelRegistry(tmp_path / "models")
    for i in (1, 2, 3):
        art = tmp_path / f"art{i}"
        art.mkdir()
        (art / "adapter_model.safetensors").write_bytes(b"x" * i)
        registry.register("lm", art, {"note": f"model {i}"})

    def build(version):
        if version is not None and version.version == 3:
            return Broken(dont_know="v3")
        return ExtractiveResponder(dont_know=f"serving {version.label if version else 'base'}")

    other = ModelRegistry(tmp_path / "models")  # e.g. `botkit models promote` in another process
    responder = ReloadingResponder(build, registry.watch("lm"))
    await responder.start()
    assert (await responder.respond(REQUEST)).text == "serving base"
    other.promote("lm", 1, reason="first", by="ops")
    assert (await responder.respond(REQUEST)).text == "serving v0001"
    other.promote("lm", 2, reason="better", by="ops")
    assert (await responder.respond(REQUEST)).text == "serving v0002"
    other.rollback("lm", reason="complaints", by="ops")
    assert (await responder.respond(REQUEST)).text == "serving v0001"
    other.promote("lm", 3, reason="broken one", by="ops")
    assert (await responder.respond(REQUEST)).text == "serving v0001"  # v3 failed to start: v1 keeps serving
    await responder.close()
