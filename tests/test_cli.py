"""The command line, as scripts use it: exit codes, --json output, errors on stderr."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from botkit.app.cli import main
from tests.conftest import DEMO

pytestmark = pytest.mark.slow


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "bot"
    assert main(["init", str(root), "--name", "CLI bot"]) == 0
    shutil.copytree(DEMO / "kb", root / "kb", dirs_exist_ok=True)
    assert main(["--project", str(root), "kb", "import", "--author", "tester"]) == 0
    return root


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("botkit")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("botkit ")


def test_list_show_history_json(project: Path, capsys):
    code, out, _ = run(capsys, "kb", "list", "--json", "--project", str(project))
    listing = json.loads(out)
    assert code == 0 and listing["kb_version"] == 1
    ids = {a["id"] for a in listing["articles"]}
    assert {"refund-timing", "faq-paypal"} <= ids and len(ids) == len(listing["articles"])
    code, out, _ = run(capsys, "kb", "show", "faq-paypal", "--json", "--project", str(project))
    shown = json.loads(out)
    assert shown["kind"] == "faq" and len(shown["questions"]) >= 3 and shown["updated_by"] == "tester"
    code, out, _ = run(capsys, "kb", "history", "faq-paypal", "--json", "--project", str(project))
    assert [(r["rev"], r["action"], r["author"]) for r in json.loads(out)] == [(1, "create", "tester")]


def test_search_json_has_scores_sources_and_version(project: Path, capsys):
    code, out, _ = run(capsys, "kb", "search", "how", "do", "I", "reset", "my", "password",
                       "--k", "3", "--json", "--project", str(project))
    result = json.loads(out)
    assert code == 0 and result["answered"] is True and result["kb_version"] == 1
    assert result["hits"][0]["id"] == "password-reset" and len(result["hits"]) == 3
    assert result["hits"][0]["score"] >= result["threshold"] > result["hits"][-1]["score"] - 1


def test_edit_diff_rollback_delete_cycle(project: Path, capsys, tmp_path: Path):
    edited = tmp_path / "gift.md"
    edited.write_text("---\nid: gift-cards\ntitle: Gift cards\ntags: [billing]\n---\n"
                      "Gift cards now expire after 90 days.\n")
    assert run(capsys, "kb", "import", str(edited), "--project", str(project))[0] == 0
    code, out, _ = run(capsys, "kb", "diff", "gift-cards", "--from", "1", "--project", str(project))
    assert "+Gift cards now expire after 90 days." in out
    code, out, _ = run(capsys, "kb", "search", "do gift cards expire", "--json", "--project", str(project))
    assert "90 days" in json.loads(out)["hits"][0]["passage"]
    assert run(capsys, "kb", "rollback", "gift-cards", "--to", "1", "--project", str(project))[0] == 0
    code, out, _ = run(capsys, "kb", "search", "do gift cards expire", "--json", "--project", str(project))
    assert "90 days" not in json.loads(out)["hits"][0]["passage"]
    code, out, _ = run(capsys, "kb", "delete", "gift-cards", "--project", str(project))
    assert code == 0 and "kb rollback gift-cards" in out
    code, _, err = run(capsys, "kb", "show", "gift-cards", "--project", str(project))
    assert code == 1 and "no article with id 'gift-cards'" in err
    code, out, _ = run(capsys, "kb", "history", "gift-cards", "--json", "--project", str(project))
    assert [r["action"] for r in json.loads(out)] == ["create", "update", "rollback", "delete"]


def test_eval_retrieval_json(project: Path, capsys, tmp_path: Path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        '{"query": "my parcel never arrived", "expected": "lost-parcel"}\n'
        '{"query": "can I pay with paypal", "expected": "faq-paypal"}\n'
        '{"query": "what is the airspeed velocity of an unladen swallow", "expected": null}\n'
    )
    code, out, _ = run(capsys, "eval", "retrieval", "--queries", str(queries), "--json", "--project", str(project))
    result = json.loads(out)
    assert code == 0
    for key in ("n", "accuracy_at_1", "recall_at_k", "mrr", "no_answer_precision", "no_answer_recall",
                "latency_ms_p50", "latency_ms_p95"):
        assert key in result
    assert result["n"] == 3 and result["accuracy_at_1"] == 1.0 and result["no_answer_recall"] == 1.0
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p95"]


def test_bad_import_exits_1_and_imports_nothing(project: Path, capsys, tmp_path: Path):
    good = tmp_path / "good.md"
    good.write_text("---\nid: brand-new\ntitle: Brand new\n---\nNew text.\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "title": "X"\n')
    code, _, err = run(capsys, "kb", "import", str(good), str(bad), "--project", str(project))
    assert code == 1 and "nothing was imported" in err and "bad.jsonl:1: malformed JSON" in err
    code, _, err = run(capsys, "kb", "show", "brand-new", "--project", str(project))
    assert code == 1


def test_bad_config_and_missing_project(capsys, tmp_path: Path):
    code, _, err = run(capsys, "kb", "list", "--project", str(tmp_path))
    assert code == 1 and "botkit init" in err
    (tmp_path / "bot.yaml").write_text("knowledge:\n  index:\n    type: annoy\n")
    code, _, err = run(capsys, "kb", "list", "--project", str(tmp_path))
    assert code == 1 and "knowledge.index.type: bad value 'annoy'" in err


def test_empty_query_is_a_clear_error(project: Path, capsys):
    code, _, err = run(capsys, "kb", "search", "  ", "--project", str(project))
    assert code == 1 and "empty query" in err
