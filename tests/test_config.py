from pathlib import Path

import pytest

from botkit.config import BotConfig, load_config, parse_config
from botkit.errors import ConfigError, ProjectError
from botkit.project import Project, init_project


def test_defaults_and_overrides():
    cfg = parse_config({"name": "Acme", "knowledge": {"retrieval": {"threshold": 0.6}, "index": {"type": "hnsw"}}})
    assert cfg.name == "Acme"
    assert cfg.knowledge.retrieval.threshold == 0.6
    assert cfg.knowledge.index.type == "hnsw"
    assert cfg.knowledge.embedding.backend == "torch-fp32"  # untouched default
    assert parse_config(None) == BotConfig()


def test_unknown_key_names_key_allowed_keys_and_suggestion():
    with pytest.raises(ConfigError) as err:
        parse_config({"knowledge": {"retreival": {}}})
    msg = str(err.value)
    assert "knowledge.retreival: unknown key" in msg
    assert "retrieval" in msg and "chunk_max_chars" in msg
    assert "did you mean 'retrieval'" in msg


def test_bad_value_names_key_value_and_allowed_values():
    with pytest.raises(ConfigError) as err:
        parse_config({"knowledge": {"index": {"type": "faiss"}}})
    msg = str(err.value)
    assert "knowledge.index.type" in msg and "'faiss'" in msg
    assert "'flat'" in msg and "'hnsw'" in msg and "'ivf'" in msg


def test_bad_number_and_several_errors_reported_together():
    with pytest.raises(ConfigError) as err:
        parse_config({"knowledge": {"retrieval": {"top_k": 0, "threshold": "high"}}})
    msg = str(err.value)
    assert "knowledge.retrieval.top_k: bad value 0" in msg
    assert "knowledge.retrieval.threshold: bad value 'high'" in msg


def test_top_level_must_be_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config(["a", "b"])


def test_malformed_yaml_names_line(tmp_path: Path):
    path = tmp_path / "bot.yaml"
    path.write_text("name: x\nknowledge:\n  retrieval: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bot.yaml:\d+: not valid YAML"):
        load_config(path)


def test_init_creates_loadable_project_and_refuses_overwrite(tmp_path: Path):
    project = init_project(tmp_path / "bot", name="Tallow & Pine")
    assert project.config.name == "Tallow & Pine"
    assert (project.root / "kb").is_dir()
    assert project.state_dir.is_dir()
    assert Project.load(project.root).config == project.config
    with pytest.raises(ProjectError, match="already exists"):
        init_project(tmp_path / "bot")


def test_load_non_project_says_what_to_do(tmp_path: Path):
    with pytest.raises(ProjectError, match="botkit init"):
        Project.load(tmp_path)
    with pytest.raises(ProjectError, match="no such directory"):
        Project.load(tmp_path / "missing")


def test_demo_bot_yaml_is_valid():
    cfg = load_config(Path(__file__).resolve().parent.parent / "demo" / "bot.yaml")
    assert cfg.knowledge.sources == ["kb"]
