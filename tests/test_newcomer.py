"""The newcomer's path (issue 12): a busy port is one clear line, `botkit init` writes every key
(generated from the config models) and `--sample` gives a project whose tests pass, rollback
says what there is instead, and `botkit ask` uses a running `botkit serve` of the project."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from botkit.app.cli import main
from botkit.app.running import SERVE_FILE, check_port, find_server
from botkit.config import BotConfig, _models_in, parse_config
from botkit.errors import BotkitError
from botkit.project import init_project
from connectors.webchat.config import WebChatConfig
from tests.conftest import wait_healthy

ROOT = Path(__file__).resolve().parent.parent
BOTKIT = str(Path(sys.executable).with_name("botkit"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a busy port -------------------------------------------------------------------------------------

def test_serve_on_a_busy_port_is_one_line_without_a_traceback(busy_port: int, tmp_path: Path):
    init_project(tmp_path / "bot", "port test")
    started = time.monotonic()
    out = subprocess.run([BOTKIT, "--project", str(tmp_path / "bot"), "serve", "--port", str(busy_port)],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and out.stdout == ""  # no URLs printed for a server that never ran
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {busy_port} on 127.0.0.1 is already in use" in lines[0]
    assert f"--port {busy_port + 1}" in lines[0] and "PORT=" in lines[0]
    assert time.monotonic() - started < 30  # refused before the model is loaded


def test_check_port(busy_port: int):
    with pytest.raises(BotkitError, match=f"port {busy_port} .* already in use"):
        check_port("127.0.0.1", busy_port)
    check_port("127.0.0.1", free_port())  # a free port passes
    check_port("127.0.0.1", 0)
    with pytest.raises(BotkitError, match="no such address"):
        check_port("192.0.2.1", free_port())  # TEST-NET-1: never this machine's


def test_demo_script_on_a_busy_port_says_how_to_choose_another(busy_port: int):
    started = time.monotonic()
    out = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, timeout=60,
                         env={**ENV, "PORT": str(busy_port)})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"port {busy_port} on 127.0.0.1 is already in use" in out.stderr
    assert f"PORT={busy_port + 1} bash scripts/demo.sh" in out.stderr
    assert time.monotonic() - started < 10  # before setup, import and the tour
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, timeout=60,
                         env={**ENV, "PORT": "80a"})
    assert bad.returncode == 1 and "PORT=80a is not a port number" in bad.stderr


# -- botkit init ---------------------------------------------------------------------------------

def _keys(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every key of ``model`` and of the models inside it (sections, rules, optional sections)."""
    seen = seen if seen is not None else set()
    seen.add(model)
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(field.alias or name)
        for inner in _models_in(field.annotation):
            if inner not in seen:
                keys |= _keys(inner, seen)
    return keys


def _uncomment_block(text: str, opener: str) -> Any:
    """The commented-out YAML block that starts with the line ``opener`` (e.g. '  # webchat:')."""
    lines = text.splitlines()
    start = lines.index(opener)
    prefix = opener[: opener.index("#") + 2]
    block = [lines[start][len(prefix):]]
    for row in lines[start + 1:]:
        if not row.startswith(prefix + " "):
            break
        block.append(row[len(prefix):])
    return yaml.safe_load("\n".join(block))


def test_generated_bot_yaml_is_the_defaults_and_shows_every_key(tmp_path: Path):
    project = init_project(tmp_path / "bot", "Tallow & Pine: help", channel_models={"webchat": WebChatConfig})
    text = (project.root / "bot.yaml").read_text(encoding="utf-8")
    assert project.config == BotConfig(name="Tallow & Pine: help")  # loading it gives exactly the defaults
    assert parse_config(yaml.safe_load(text)) == BotConfig(name="Tallow & Pine: help")
    for key in _keys(BotConfig) | _keys(WebChatConfig):  # every field of every section, rule and channel
        assert re.search(rf"^[ #-]*{re.escape(key)}:", text, flags=re.M), f"{key} is not in the generated bot.yaml"
    assert "# one of: auto | flat | hnsw | ivf" in text  # allowed values and descriptions come along
    assert "best-hit score the default confidence mapping is centred on" in text
    assert max(len(line) for line in text.splitlines() if line.lstrip().startswith("#")) <= 100
    # The commented-out blocks are valid sections with the defaults once uncommented.
    assert WebChatConfig.model_validate(_uncomment_block(text, "  # webchat:")["webchat"]) == WebChatConfig()
    local_lm = _uncomment_block(text, "  # local_lm:")["local_lm"]
    assert local_lm["model_path"] == "<required>" and local_lm["max_new_tokens"] == 200
    rules = [r["type"] for r in yaml.safe_load(text)["escalation"]["rules"]]
    assert rules == [r.type for r in BotConfig().escalation.rules]
    assert "    # - type: business_hours" in text and "    # - type: custom" in text


def test_init_refuses_a_bad_name(tmp_path: Path):
    with pytest.raises(BotkitError, match="name"):
        init_project(tmp_path / "bot", "x" * 201)
    assert not (tmp_path / "bot" / "bot.yaml").exists()


@pytest.mark.slow
def test_init_sample_makes_a_project_whose_conversation_tests_pass(tmp_path: Path, capsys):
    root = tmp_path / "sample bot"
    assert main(["init", str(root), "--sample"]) == 0
    out = capsys.readouterr().out
    assert "imported 7 entries" in out and "botkit test tests/conversations.yaml" in out and "cd '" in out
    assert sorted(p.name for p in (root / "kb").iterdir()) == [
        "faq.csv", "returns.md", "shipping.md", "subscriptions.md", "track-order.md"]
    assert main(["--project", str(root), "test", str(root / "tests" / "conversations.yaml")]) == 0
    report = capsys.readouterr().out
    assert "5 passed, 0 failed" in report
    assert main(["init", str(root), "--sample"]) == 1  # never over an existing project
    assert "already exists" in capsys.readouterr().err


# -- models rollback --------------------------------------------------------------------------------

def test_rollback_after_one_promotion_says_what_there_is(tmp_path: Path, capsys):
    from training.registry import ModelRegistry

    project = init_project(tmp_path / "bot", "registry test")
    registry = ModelRegistry.for_project(project)
    for name, gate in [("a", {"promote": True, "reasons": []}),
                       ("b", {"promote": False, "reasons": ["loss got worse: 2.1 -> 2.4"]})]:
        artefact = tmp_path / name
        artefact.mkdir()
        (artefact / "adapter_config.json").write_text("{}", encoding="utf-8")
        registry.register("lm", artefact, {"gate": gate})
    args = ["--project", str(project.root), "models"]
    assert main([*args, "rollback"]) == 1
    err = capsys.readouterr().err
    assert "nothing is promoted" in err and "v0001 (candidate), v0002 (candidate, the gate refused it)" in err
    assert "`botkit models promote VERSION --kind lm`" in err and "Traceback" not in err

    assert main([*args, "promote", "v0001", "--author", "t"]) == 0
    capsys.readouterr()
    assert main([*args, "rollback"]) == 1
    err = capsys.readouterr().err
    assert "v0001 is the first promoted version" in err and "v0002 (candidate, the gate refused it)" in err
    assert "returns to v0001" in err
    assert main([*args, "promote", "v0002", "--author", "t"]) == 1  # the gate refused it: not without --force
    err = capsys.readouterr().err
    assert "did not pass the evaluation gate" in err and "loss got worse" in err and "--force" in err
    assert registry.current("lm").version == 1  # type: ignore[union-attr]
    assert main([*args, "promote", "v0002", "--force", "--author", "t"]) == 0
    assert "forced past the evaluation gate" in capsys.readouterr().out
    assert main([*args, "rollback", "--author", "t"]) == 0 and registry.current("lm").version == 1  # type: ignore[union-attr]


# -- botkit ask beside botkit serve --------------------------------------------------------------------

def test_a_stale_serve_file_is_ignored(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / SERVE_FILE).write_text(json.dumps({"pid": dead.pid, "url": "http://127.0.0.1:1", "token": "x"}))
    assert find_server(tmp_path) is None
    (tmp_path / SERVE_FILE).write_text("{not json")
    assert find_server(tmp_path) is None
    (tmp_path / SERVE_FILE).write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:1", "token": "x"}))
    assert find_server(tmp_path) is not None


def test_ask_without_a_server_says_once_why_it_is_slow(tmp_path: Path, capsys):
    from tests.conftest import DEMO

    project = init_project(tmp_path / "bot", "ask test")
    (project.root / "kb" / "faq.csv").write_text((DEMO / "kb" / "faq.csv").read_text(encoding="utf-8"))
    assert main(["--project", str(project.root), "kb", "import"]) == 0
    capsys.readouterr()
    assert main(["--project", str(project.root), "ask", "can I pay with PayPal?"]) == 0
    first = capsys.readouterr()
    assert "PayPal" in first.out and "loading the embedding model" in first.err and "shown once" in first.err
    assert main(["--project", str(project.root), "ask", "--json", "can I pay with PayPal?"]) == 0
    second = capsys.readouterr()
    assert json.loads(second.out)["sources"][0]["id"] == "faq-paypal" and "loading" not in second.err


@pytest.mark.slow
async def test_ask_uses_the_running_server(tmp_path: Path):
    import aiohttp

    from tests.conftest import DEMO

    project = init_project(tmp_path / "bot", "serve test")
    (project.root / "kb" / "faq.csv").write_text((DEMO / "kb" / "faq.csv").read_text(encoding="utf-8"))
    port = free_port()
    server = subprocess.Popen([BOTKIT, "--project", str(project.root), "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    serve_file = project.state_dir / SERVE_FILE
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", server)
        announced = json.loads(serve_file.read_text())
        assert announced["pid"] == server.pid and announced["url"] == f"http://127.0.0.1:{port}"
        assert serve_file.stat().st_mode & 0o077 == 0  # the token is for this user only
        assert main(["--project", str(project.root), "kb", "import"]) == 0  # the server picks the edit up live

        started = time.monotonic()
        out = subprocess.run([BOTKIT, "--project", str(project.root), "ask", "--json", "--conversation", "c-1",
                              "do you accept paypal?"], capture_output=True, text=True, env=ENV, timeout=120)
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        assert reply["sources"][0]["id"] == "faq-paypal" and reply["conversation"] == "c-1"
        assert "loading the embedding model" not in out.stderr
        assert time.monotonic() - started < 8  # no model load in the CLI (a local answer needs 9-14 s)
        plain = subprocess.run([BOTKIT, "--project", str(project.root), "ask", "--conversation", "c-1", "thanks"],
                               capture_output=True, text=True, env=ENV, timeout=120)
        assert f"answered by the running `botkit serve`, pid {server.pid}" in plain.stderr

        async with aiohttp.ClientSession() as http:  # the endpoint wants the token from serve.json
            async with http.post(f"http://127.0.0.1:{port}/api/cli/ask",
                                 json={"text": "hi", "conversation": "x"}) as r:
                assert r.status == 401
            async with http.post(f"http://127.0.0.1:{port}/api/cli/ask", json={"text": 3},
                                 headers={"Authorization": f"Bearer {announced['token']}"}) as r:
                assert r.status == 400
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert not serve_file.exists()  # removed when the server stops


# -- the README's examples ---------------------------------------------------------------------------

PROJECT_COMMANDS = ("ask", "shell", "test", "handoffs", "agent", "serve", "kb", "eval", "models", "train", "users")


def test_readme_examples_name_their_project():
    """A README example that needs a project runs from the repository root: it says --project, or
    its block starts with `cd` into the project (a bare `botkit ask` there is 'not a botkit project')."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Talking to the bot"):text.index("### Confidence")]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    for line in block.group(1).splitlines():
        assert line.startswith("botkit --project demo "), line
    for body in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        in_project = False
        for line in (row.split("  #")[0].strip() for row in body.splitlines()):
            in_project = in_project or line.startswith("cd ")
            words = line.split()
            if len(words) > 1 and words[0] == "botkit" and words[1] in PROJECT_COMMANDS and "demo/" in line:
                assert in_project or "--project" in line, f"needs --project demo or cd demo: {line}"


# -- long output ---------------------------------------------------------------------------------------

def test_shell_wraps_replies_at_word_boundaries():
    from botkit.app.cli.dialogue import _wrap

    url = "https://help.example.com/articles/a-very-long-address-that-must-stay-whole"
    text = ("Refunds go back to your original payment method. Once issued, card refunds usually appear within "
            f"5-10 business days: {url}\nsources: When will I get my refund? (refund-timing)")
    out = _wrap(text, "bot> ", width=50).splitlines()
    assert out[0].startswith("bot> Refunds") and all(line.startswith("     ") for line in out[1:])
    assert url in [line.strip() for line in out]  # too long for a line: kept whole, never cut
    assert all(len(line) <= 49 for line in out if url not in line)
    assert " ".join(line.strip() for line in out).replace("bot> ", "") == " ".join(text.split())
    assert any(line.strip().startswith("sources:") for line in out)  # the reply's own line breaks stay


def test_models_list_shows_every_metric_whole(tmp_path: Path, capsys, monkeypatch):
    from botkit.app.cli.train import _metric_lines
    from training.registry import ModelRegistry

    lines = _metric_lines([f"metric_{i} {i}.125" for i in range(12)], 40, "    ")
    assert all(len(line) <= 40 for line in lines) and len(lines) > 3
    assert ", ".join(line.strip().rstrip(",") for line in lines) == ", ".join(f"metric_{i} {i}.125" for i in range(12))

    project = init_project(tmp_path / "bot", "list test")
    artefact = tmp_path / "a"
    artefact.mkdir()
    (artefact / "adapter_config.json").write_text("{}", encoding="utf-8")
    metrics = {"loss": 2.0812, "perplexity": 8.0131, "cosine": 0.4812, "rouge_l": 0.1723, "grounding_rate": 0.5385,
               "invented_rate": 0.0913, "escalation_agreement": 1.0, "tokens_per_s": 412.3, "runtime_s": 913.2}
    ModelRegistry.for_project(project).register("lm", artefact, {"metrics": metrics,
                                                                 "gate": {"promote": False, "reasons": ["x"]}})
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["--project", str(project.root), "models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("  v0001  candidate") and out[0].endswith("[gate: refused]")
    assert all(len(line) <= 60 for line in out)
    shown = ", ".join(line.strip().rstrip(",") for line in out[1:])
    assert shown == ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())  # every metric, none cut


def test_gate_png_titles_wrap_instead_of_overflowing():
    from training.evaluate import METRICS, PANEL_TITLE_CHARS, figure_title, panel_title

    for metric in METRICS:
        title = panel_title(metric)
        assert all(len(line) <= PANEL_TITLE_CHARS for line in title.splitlines()), title
        assert " ".join(title.split()).startswith("ROUGE-L" if metric == "rouge_l" else metric.replace("_", " "))
    assert panel_title("escalation_agreement") == "escalation agreement\n(higher is better)"
    long_reason = "loss (primary): 7.6498 vs 7.6500, improvement 0.0002 < required margin 0.02"
    title = figure_title(False, [long_reason], 2)
    assert title.startswith("do not promote: loss") and max(len(line) for line in title.splitlines()) <= 60
    assert figure_title(True, [], 7) == "promote"


def test_training_progress_on_a_terminal_is_lines_not_raw_dicts(capsys):
    from types import SimpleNamespace

    from training.lora import terminal_progress_callback

    callback = terminal_progress_callback()
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=10, epoch=0.0,
                            num_input_tokens_seen=0)
    callback.on_train_begin(None, state, None)
    state.global_step, state.epoch, state.num_input_tokens_seen = 2, 0.25, 800
    callback.on_log(None, state, None, logs={"loss": 1.23456, "learning_rate": 2e-4, "grad_norm": 0.5})
    callback.on_prediction_step(None, state, None, eval_dataloader=[1, 2, 3])
    callback.on_prediction_step(None, state, None, eval_dataloader=[1, 2, 3])  # one line per evaluation, no bar
    callback.on_log(None, state, None, logs={"eval_loss": 1.5})
    callback.on_evaluate(None, state, None)
    callback.on_train_end(None, state, None)
    err = capsys.readouterr().err
    assert "{'" not in err and "grad_norm" not in err  # no raw log dict
    assert "step 2/10 (20%)  epoch 0.25  loss 1.2346  lr 2.0e-04" in err
    assert err.count("evaluating on the held-out examples (3 batches)") == 1 and "eval loss 1.5000" in err
    assert callback.prediction_bar is None  # the nested evaluation bar is never made


def test_init_sample_never_overwrites_a_file(tmp_path: Path, capsys):
    root = tmp_path / "bot"
    (root / "kb").mkdir(parents=True)
    (root / "kb" / "faq.csv").write_text("id,questions,answer\nmine,a?,b\n", encoding="utf-8")
    assert main(["init", str(root), "--sample"]) == 1
    err = capsys.readouterr().err
    assert "kb/faq.csv" in err and "would overwrite it" in err
    assert (root / "kb" / "faq.csv").read_text(encoding="utf-8") == "id,questions,answer\nmine,a?,b\n"
    assert not (root / "bot.yaml").exists()  # nothing written
