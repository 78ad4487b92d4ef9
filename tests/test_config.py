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


def test_storage_backend_defaults_to_auto_and_an_unknown_one_lists_the_allowed():
    assert parse_config(None).storage.backend == "auto"  # sqlite unless BOTKIT_DATABASE_URL is set
    assert parse_config({"storage": {"backend": "sqlite"}}).storage.backend == "sqlite"
    assert parse_config({"storage": {"backend": "postgresql"}}).storage.backend == "postgresql"
    with pytest.raises(ConfigError) as err:
        parse_config({"storage": {"backend": "mysql"}})
    assert str(err.value) == "bot.yaml: storage.backend: bad value 'mysql' (allowed: 'auto', 'sqlite' or 'postgresql')"
    with pytest.raises(ConfigError, match=r"storage.backnd: unknown key \(allowed: backend, database_url_env, "
                       r"postgres_schema, redis_prefix, redis_url_env, sqlite_group_commit; did you mean 'backend'"):
        parse_config({"storage": {"backnd": "sqlite"}})


def test_the_conversation_store_is_built_from_storage_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import typing

    from botkit.app.compose import STORE_BACKENDS, build_store
    from botkit.config import StorageConfig
    from botkit.store import SQLiteConversationStore

    # every name bot.yaml accepts has a backend ('auto' picks one), and no backend is unreachable from bot.yaml
    assert set(typing.get_args(StorageConfig.model_fields["backend"].annotation)) == {*STORE_BACKENDS, "auto"}
    monkeypatch.delenv("BOTKIT_DATABASE_URL", raising=False)
    store = build_store(StorageConfig(), tmp_path / "conversations.sqlite3")
    assert isinstance(store, SQLiteConversationStore) and store.path == tmp_path / "conversations.sqlite3"
    unknown = StorageConfig.model_construct(backend="mongodb")  # a config that skipped validation
    with pytest.raises(ConfigError,
                       match=r"storage.backend: unknown backend 'mongodb' \(allowed: 'postgresql', 'sqlite'\)"):
        build_store(unknown, tmp_path / "x.sqlite3")


def test_build_engine_uses_the_configured_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from botkit.app import compose

    built: list[Path] = []
    monkeypatch.delenv("BOTKIT_DATABASE_URL", raising=False)

    def recording(storage, path: Path):
        built.append(path)
        return compose.SQLiteConversationStore(path)

    monkeypatch.setitem(compose.STORE_BACKENDS, "sqlite", recording)
    project = init_project(tmp_path / "bot", "Acme")
    engine = compose.build_engine(project, progress=False)
    assert built == [project.state_dir / compose.CONVERSATIONS_DB] and engine.store.path == built[0]
