"""Which responder wrote a reply and why a generated text was replaced (``responder`` /
``fallback``), end to end: the generative responder on a real tiny GPT-2 (gibberish, so
ungrounded; or stopped by ``max_time_s``; or given a prompt too long for it), the stored bot
turn, the agent console's JSON API and the web chat reply frame; and `botkit models promote`
refusing a version the evaluation gate refused unless ``--force``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lm_fixtures import make_hit, make_request, one_torch_thread, tiny_lm_dir  # noqa: F401 - pytest fixtures

from botkit.config import DialogueConfig, LocalLMConfig
from botkit.errors import GenerationError
from botkit.responders.extractive import ExtractiveResponder
from botkit.responders.generative import GenerativeResponder, fallback_code
from botkit.types import IncomingMessage, Reply, Turn, fallback_from_note
from tests.conftest import open_kb
from tests.test_auth import staff  # noqa: F401 - signed-in browsers (on this module's `client`)

QUESTION = "How long do I have to send something back?"
HITS = [make_hit("return-policy", score=0.82), make_hit("return-policy", "Return shipping", score=0.71)]


def lm_config(path: Path, **kw: Any) -> LocalLMConfig:
    return LocalLMConfig(model_path=str(path), **{"threads": 1, "max_new_tokens": 30, **kw})


def generative(path: Path, **kw: Any) -> GenerativeResponder:
    from botkit.generation.local import LocalCausalLM

    dialogue = DialogueConfig(responder="local-lm", local_lm=lm_config(path, **kw))
    return GenerativeResponder(LocalCausalLM(dialogue.local_lm, Path("/")), ExtractiveResponder(), dialogue)  # type: ignore[arg-type]


# --- the codes -----------------------------------------------------------------------------------

def test_fallback_codes_from_errors_and_old_notes() -> None:
    assert fallback_code(TimeoutError()) == "timeout"
    assert fallback_code(GenerationError("ran past max_time_s=1s", code="timeout")) == "timeout"
    assert fallback_code(GenerationError("the prompt fills ...", code="prompt_too_long")) == "prompt_too_long"
    assert fallback_code(GenerationError("HTTP 400")) == "error"
    assert GenerationError("x").code is None
    # Turns stored before the codes existed still say why, from their note.
    assert fallback_from_note("generated reply not grounded: overlap 0.1") == "ungrounded"
    assert fallback_from_note("generation failed: local-lm:x: generation ran past max_time_s=2s") == "timeout"
    assert fallback_from_note("responder failed: RuntimeError") == "error"
    assert fallback_from_note("") is None


# --- the generative responder on a real tiny model -----------------------------------------------

async def test_ungrounded_generation_falls_back_with_code(tiny_lm_dir: Path) -> None:
    responder = generative(tiny_lm_dir)
    await responder.start()
    try:
        final = await responder.respond(make_request(QUESTION, HITS))
    finally:
        await responder.close()
    assert final.responder == "extractive" and final.fallback == "ungrounded"
    assert final.note.startswith("generated reply not grounded: ")


async def test_timed_out_generation_falls_back_with_timeout(tiny_lm_dir: Path) -> None:
    responder = generative(tiny_lm_dir, max_new_tokens=2000, max_time_s=0.02)
    await responder.start()
    try:
        final = await responder.respond(make_request(QUESTION, HITS))
    finally:
        await responder.close()
    assert final.responder == "extractive" and final.fallback == "timeout"
    assert "max_time_s=0.02" in final.note


async def test_a_prompt_longer_than_the_budget_falls_back_with_prompt_too_long(tiny_lm_dir: Path) -> None:
    """The rules, one passage and the question alone exceed max_prompt_tokens: the real model is never run."""
    responder = generative(tiny_lm_dir, max_prompt_tokens=64)
    await responder.start()
    try:
        final = await responder.respond(make_request(QUESTION + " " + "please " * 200, HITS))
    finally:
        await responder.close()
    assert final.responder == "extractive" and final.fallback == "prompt_too_long"
    assert "max_prompt_tokens=64" in final.note and final.sources


class Failing:
    """A generator that writes a little, then fails as a remote or local model can."""

    name = "openai:stub"

    def __init__(self, exc: BaseException):
        self.exc = exc

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def stream(self, messages: Any) -> Any:
        yield "Partial "
        raise self.exc


@pytest.mark.parametrize(("exc", "code"), [
    (GenerationError("the prompt (5000 tokens) fills the model's 4096 positions", code="prompt_too_long"),
     "prompt_too_long"),
    (GenerationError("openai:stub: start() was not called", code="not_started"), "not_started"),
    (GenerationError("http://x answered HTTP 400 (not retried)"), "error"),
    (TimeoutError(), "timeout"),
])
async def test_every_failed_generation_says_why_as_a_code(exc: BaseException, code: str) -> None:
    responder = GenerativeResponder(Failing(exc), ExtractiveResponder(), DialogueConfig())  # type: ignore[arg-type]
    items = [item async for item in responder.respond_stream(make_request(QUESTION, HITS))]
    final = items[-1]
    assert items[0] == "Partial " and final.responder == "extractive" and final.fallback == code
    assert final.note.startswith("generation failed: ")


# --- engine, store, console and web chat ---------------------------------------------------------

@pytest.fixture
async def client(demo_dir: Path, tmp_path: Path, embedder: Any, tiny_lm_dir: Path, aiohttp_client: Any) -> Any:
    """The whole server with a generative responder on the tiny GPT-2 (its replies are ungrounded)."""
    from botkit.app.server import build_app
    from botkit.engine import Engine
    from botkit.escalation import EscalationConfig, build_rules, summarize
    from botkit.project import Project
    from botkit.store import SQLiteConversationStore
    from knowledge.retriever import KnowledgeRetriever

    config = yaml.safe_load((demo_dir / "bot.yaml").read_text(encoding="utf-8"))
    config["channels"] = {}
    (demo_dir / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    engine = Engine(retriever=KnowledgeRetriever(open_kb(demo_dir, embedder)), responder=generative(tiny_lm_dir),
                    store=SQLiteConversationStore(tmp_path / "conversations.sqlite3"),
                    rules=build_rules(EscalationConfig()), summarize=summarize)
    return await aiohttp_client(build_app(Project.load(demo_dir), engine))


@pytest.mark.slow
async def test_stored_turn_and_console_carry_responder_and_fallback(client: Any, staff: Any) -> None:
    from botkit.app.keys import ENGINE

    engine = client.app[ENGINE]
    ungrounded = await engine.handle(IncomingMessage("g1", "how long do I have to return an item?", channel="webchat"))
    assert ungrounded.action == "answer" and ungrounded.sources
    assert ungrounded.responder == "extractive" and ungrounded.fallback == "ungrounded"
    out = ungrounded.to_json()
    assert out["responder"] == "extractive" and out["fallback"] == "ungrounded"
    assert out["fallback_detail"].startswith("generated reply not grounded: ")

    # The same responder, now stopped by its time bound (the config is read per generation).
    lm = engine.responder.generator
    lm.config = lm.config.model_copy(update={"max_new_tokens": 2000, "max_time_s": 0.02})
    timed_out = await engine.handle(IncomingMessage("g1", "how long do I have to return an item?", channel="webchat"))
    assert timed_out.responder == "extractive" and timed_out.fallback == "timeout"
    assert "max_time_s" in timed_out.fallback_detail

    stored = [t for t in await engine.store.turns("g1") if t.role == "bot"]
    assert [(t.responder, t.fallback) for t in stored] == [("extractive", "ungrounded"), ("extractive", "timeout")]
    assert stored[0].meta["fallback"] == "ungrounded" and stored[1].meta["fallback"] == "timeout"
    assert stored[0].fallback_detail.startswith("generated reply not grounded")

    admin = await staff("ada", "admin")  # admins read every conversation, handed off or not
    status, conv = await admin.call("GET", "/api/console/conversations/g1")
    assert status == 200
    bots = [t for t in conv["turns"] if t["kind"] == "bot"]
    assert [(t["responder"], t["fallback"]) for t in bots] == [("extractive", "ungrounded"), ("extractive", "timeout")]
    assert bots[0]["fallback_detail"].startswith("generated reply not grounded") and bots[0]["author"] == "extractive"
    customers = [t for t in conv["turns"] if t["kind"] == "customer"]
    assert all(t["responder"] is None and t["fallback"] is None for t in customers)

    # The web chat's reply frame carries the two codes (not the detail, which can name servers).
    from connectors.webchat import protocol

    frame = protocol.reply(timed_out, "m1", lambda _id: None)
    assert frame["responder"] == "extractive" and frame["fallback"] == "timeout" and "fallback_detail" not in frame


def test_reply_json_without_fallback_and_old_turns() -> None:
    plain = Reply("c", "answer", "hi", 0.9, responder="local-lm:tallow").to_json()
    assert plain["responder"] == "local-lm" and plain["responder_name"] == "local-lm:tallow"
    assert plain["fallback"] is None and plain["fallback_detail"] is None
    silent = Reply("c", "handoff", "").to_json()
    assert silent["responder"] is None and silent["fallback"] is None
    from datetime import UTC, datetime

    old = Turn("c", 2, "bot", "x", datetime.now(UTC), author="extractive",
               meta={"note": "generated reply not grounded: 2 of 9 content words"})
    assert old.fallback == "ungrounded" and old.responder == "extractive"


# --- the evaluation gate and `botkit models promote` ---------------------------------------------

def _register(project_dir: Path, tmp_path: Path, name: str, gate: dict[str, Any] | None) -> str:
    from botkit.project import Project
    from training.registry import ModelRegistry

    artefact = tmp_path / name
    artefact.mkdir()
    (artefact / "adapter_config.json").write_text("{}")
    meta: dict[str, Any] = {"metrics": {"loss": 2.5}}
    if gate is not None:
        meta["gate"] = gate
    return ModelRegistry.for_project(Project.load(project_dir)).register("lm", artefact, meta).label


def test_promote_refuses_a_gate_refused_version_unless_forced(demo_dir: Path, tmp_path: Path, capsys: Any) -> None:
    from botkit.app.cli import main
    from botkit.project import Project
    from training.registry import GateRefused, ModelRegistry

    reasons = ["loss (primary): 2.5000 vs 2.4000, improvement -0.1000 < required margin 0.01"]
    passed = _register(demo_dir, tmp_path, "a", {"promote": True, "reasons": ["loss: better"]})
    refused = _register(demo_dir, tmp_path, "b", {"promote": False, "reasons": reasons})
    project = ["--project", str(demo_dir)]

    assert main(["models", "list", "--json", *project]) == 0
    listed = {v["version"]: v for v in json.loads(capsys.readouterr().out)}
    assert listed[refused]["gate"] == {"promote": False, "reasons": reasons}
    assert listed[passed]["gate"]["promote"] is True
    assert {"version", "status", "metrics", "gate"} <= set(listed[refused])

    assert main(["models", "promote", passed, *project, "--author", "t"]) == 0  # the gate said yes
    capsys.readouterr()
    assert main(["models", "promote", refused, *project, "--author", "t"]) == 1
    err = capsys.readouterr().err
    assert "did not pass the evaluation gate" in err and reasons[0] in err and "--force" in err
    registry = ModelRegistry.for_project(Project.load(demo_dir))
    assert registry.current("lm").label == passed  # nothing changed
    with pytest.raises(GateRefused) as info:
        registry.promote("lm", refused, reason="api", by="t")
    assert info.value.reasons == reasons

    assert main(["models", "promote", refused, "--force", *project, "--author", "t"]) == 0
    assert "forced" in capsys.readouterr().out
    assert registry.current("lm").label == refused
    last = registry.history("lm")[-1]
    assert last.event == "promote" and "forced" in last.reason and last.by == "t"
